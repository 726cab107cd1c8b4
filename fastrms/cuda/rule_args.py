"""``RuleArgs``: the rule as the CUDA kernels take it, one struct passed by value.

``rmsprop.cu`` defines ``fastrms::RuleArgs<T>`` (``T``, the compute type: float or double); this
module defines the same struct once in Python, as a NumPy structured dtype built from ``FIELDS``
with C's alignment rules (``align=True``), and packs a rule into it. CuPy passes a NumPy array of
size one as a struct by value: the driver copies ``sizeof(RuleArgs<T>)`` bytes from the array's
data (CuPy's "custom user types" for ``RawKernel`` arguments). ``layout_check()`` writes the
layout of the NumPy dtype as C++ ``static_assert``s, which the loader appends to the kernel source,
so that wherever the source is compiled (CuPy's NVRTC, the nvcc build, the host emulation) a
struct that disagrees with ``FIELDS`` fails the compile. ``effective`` and ``counter_offsets``
say what a launch takes of a step's ``Extras`` besides what ``for_rule`` packs.
"""

import numpy as np

from .. import rule as R
from .._buffers import PLAIN
from ..dtypes import state_dtype
from ..rounding import NEAREST, STOCHASTIC, counters

COMPUTE = "compute"  # a field of the compute type T
# rmsprop.cu's RuleArgs<T>, field for field: (name, element type, count; None: not an array). The
# arrays are indexed by fastrms.rule's positions (rule.LR, ..., rule.MAXIMIZE, ...), so their
# lengths are its counts.
FIELDS = (
    ("k", COMPUTE, R.N_SCALARS),  # T k[N_SCALARS]: Rule.scalars, cast to T
    ("m", np.int32, R.N_MODES),  # int m[N_MODES]: Rule.modes
    ("rounding", np.int32, None),  # int rounding: fastrms.rounding.NEAREST or STOCHASTIC
    ("key", np.uint64, None),  # unsigned long long key: fastrms.rounding.step_key(seed, step)
)
CXX_NAME = "fastrms::RuleArgs"
COMPUTE_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}  # the kernels' T
CXX_ELEMENTS = {**COMPUTE_TYPES, np.dtype(np.int32): "int", np.dtype(np.int64): "long long",
                np.dtype(np.uint64): "unsigned long long"}


def struct_dtype(compute, fields=FIELDS):
    """The NumPy dtype of ``RuleArgs<T>`` for the compute dtype ``compute``, laid out as C lays
    out the struct ``fields`` describes."""
    compute = np.dtype(compute)
    return np.dtype([(name, compute if kind == COMPUTE else kind) + (() if count is None
                                                                     else ((count,),))
                     for name, kind, count in fields], align=True)


DTYPES = {compute: struct_dtype(compute) for compute in COMPUTE_TYPES}


def pack(scalars, modes, compute, rounding=0, key=0):
    """A read-only array of one ``RuleArgs<T>``, what the kernels' ``rule`` parameter receives:
    ``scalars`` (``Rule.scalars``, already of the compute dtype: cast here without change),
    ``modes`` (``Rule.modes()``), and how half params are rounded (``rounding``, with the step's
    ``key``, a uint64 as int)."""
    if len(scalars) != R.N_SCALARS or len(modes) != R.N_MODES:
        raise ValueError(f"expected {R.N_SCALARS} scalars and {R.N_MODES} modes, "
                         f"got {len(scalars)} and {len(modes)}")
    value = np.zeros(1, DTYPES[np.dtype(compute)])  # zeros: the padding bytes are defined too
    value["k"] = scalars
    value["m"] = modes
    value["rounding"] = rounding
    value["key"] = np.uint64(key)
    value.flags.writeable = False
    return value


def for_rule(rule, step, param_dtype, extras=PLAIN):
    """``pack`` for ``rule`` at ``step`` with ``extras`` (``fastrms._buffers.Extras``: grad scale,
    clip factor, rounding and key), as the instances for ``param_dtype`` take it (their compute
    type: ``fastrms.dtypes.state_dtype``)."""
    compute = state_dtype(param_dtype)
    return pack(rule.scalars(compute, step, extras.grad_scale, extras.clip), rule.modes(), compute,
                extras.rounding, extras.key)


def effective(extras, param_dtype):
    """``extras`` less what the launch ignores, so that launches that differ only there share a
    plan: the rounding, key and offsets unless half params round stochastically, and the host's
    grad scale and clip factor where the kernel reads them at ``device_amp``."""
    if extras.rounding != STOCHASTIC or state_dtype(param_dtype) == param_dtype:
        extras = extras._replace(rounding=NEAREST, key=0, offsets=0)
    return extras._replace(grad_scale=1.0, clip=1.0) if extras.device_amp else extras


def counter_offsets(offsets, n):
    """int64 ``[n]``: ``rounding.counters`` as the device tables hold them (their uint64 bits)."""
    return counters(offsets, n).view(np.int64)


def _cxx_type(dtype):
    """The C++ type of a field: ``int``, or ``int[6]`` for a subarray."""
    base, shape = dtype.subdtype if dtype.subdtype else (dtype, ())
    return CXX_ELEMENTS[base] + "".join(f"[{n}]" for n in shape)


def static_asserts(cxx_type, dtype):
    """C++ ``static_assert`` lines that ``cxx_type`` has the layout of the NumPy structured
    ``dtype``: its size and alignment, each field's type (element type and count) and offset."""
    lines = [f'static_assert(sizeof({cxx_type}) == {dtype.itemsize}, "{cxx_type}: size");',
             f'static_assert(alignof({cxx_type}) == {dtype.alignment}, "{cxx_type}: alignment");']
    for name in dtype.names:
        field, offset = dtype.fields[name][:2]
        lines += [f"static_assert(fastrms_layout::same<decltype({cxx_type}::{name}), "
                  f'{_cxx_type(field)}>::value, "{cxx_type}::{name}: type");',
                  f"static_assert(__builtin_offsetof({cxx_type}, {name}) == {offset}, "
                  f'"{cxx_type}::{name}: offset");']
    return lines


_SAME = """namespace fastrms_layout {
template <typename A, typename B> struct same { static constexpr bool value = false; };
template <typename A> struct same<A, A> { static constexpr bool value = true; };
}  // namespace fastrms_layout"""


def layout_check(dtypes=None):
    """The C++ text that checks ``RuleArgs<T>`` against ``dtypes`` ({compute dtype: NumPy struct
    dtype}, ``DTYPES`` by default) where it is compiled, after ``rmsprop.cu``."""
    dtypes = DTYPES if dtypes is None else dtypes
    lines = ["", "// RuleArgs laid out as fastrms/cuda/rule_args.py packs it (generated from its NumPy",
             "// dtypes by rule_args.layout_check): a struct that disagrees fails the compile.",
             _SAME]
    for compute, dtype in dtypes.items():
        lines += static_asserts(f"{CXX_NAME}<{COMPUTE_TYPES[np.dtype(compute)]}>", dtype)
    return "\n".join(lines) + "\n"
