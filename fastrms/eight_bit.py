"""The RMSProp step on 8-bit state (docs/design.md §9): the reference, and the checked route to a
backend's fused ``update8``.

A state buffer is a ``Codes``: uint8 codes of the param's shape and a float32 scale per block of
``quant8.BLOCK`` values (``fastrms.quant8``). The square average uses the unsigned map, the
momentum buffer and the grad average the signed one. Centered, the unsigned buffer holds the
variance v = s − a², and the step rebuilds s = v̂ + â² first. One step, per element:

    ŝ, b̂, â ← decoded codes × their block's scale;  ŝ ← ŝ + â·â when centered
    (x, s, b, a) ← the rule (``fastrms.rule``) on them, with v ← max(v, 0) when centered
    stored ← s, or max(s − a·a, 0) when centered (NaN stays NaN)

then each new buffer is coded by blocks: its scale is the block's largest magnitude, its codes
``quant8.code_*`` of the values times ``quant8.inverse_of(scale)``. Everything is float32
arithmetic, each operation rounded once, so the kernels equal this reference bit for bit.
"""

import functools
from typing import Any, NamedTuple

import numpy as np

from . import dispatch, quant8, reference, validate
from ._buffers import HOST, PLAIN, Buffers
from .native import native
from .overlaps import _check_disjoint_set
from .rule import CENTERED_MODE, CLAMP_VARIANCE, CENTERED_NONE, at_least_zero

KINDS = {"square_avg": quant8.UNSIGNED, "momentum_buffer": quant8.SIGNED,
         "grad_avg": quant8.SIGNED}
PARAM_DTYPES = ("float32", "float16", "bfloat16")  # float32 compute; float64 state stays float64


class Codes(NamedTuple):
    """One 8-bit state buffer: ``codes`` (uint8, the param's shape) and ``scales`` (float32,
    one per block of ``quant8.BLOCK`` values of the flattened codes)."""

    codes: Any
    scales: Any


def check_state_bits(state_bits, threshold):
    """``(state_bits, threshold)`` checked: 32 (float state) or 8, and a count >= 0."""
    if isinstance(state_bits, bool) or state_bits not in (8, 32):
        raise ValueError(f"state_bits must be 8 or 32, got {state_bits!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) \
            or threshold < 0:
        raise ValueError(f"threshold must be an integer >= 0 (values per tensor), got "
                         f"{threshold!r}")
    return int(state_bits), int(threshold)


def takes_codes(param, threshold):
    """Whether ``param`` gets 8-bit state: at least ``threshold`` values, float32 or half."""
    return int(np.prod(param.shape)) >= threshold and \
        str(param.dtype).rsplit(".", 1)[-1] in PARAM_DTYPES


@functools.lru_cache(maxsize=256)
def modes8(rule):
    """``rule.modes()`` with the variance clamp that centered 8-bit state needs."""
    m = list(rule.modes())
    m[CLAMP_VARIANCE] = int(m[CENTERED_MODE] != CENTERED_NONE)
    return tuple(m)


def quantised(values, name, coders=quant8.CODERS):
    """``Codes`` of float32 NumPy ``values`` for state buffer ``name`` (its map), coded by
    ``coders`` (``quant8.STEP_CODERS``: as a step codes)."""
    codes, scales = quant8.quantise(values, KINDS[name], coders)
    return Codes(codes.reshape(np.shape(values)), scales)


def filled(shape, fill, name):
    """``Codes`` (NumPy) of a fresh state buffer ``name`` of ``shape`` holding ``fill``."""
    return quantised(np.full(shape, fill, np.float32), name)


def decoded(codes, name):
    """float32 NumPy values of ``Codes`` (of NumPy arrays) for state buffer ``name``."""
    return quant8.dequantise(codes.codes, codes.scales, KINDS[name]).reshape(
        np.shape(codes.codes))


def evaluate8(rule, param, grad, square_avg, momentum_buffer=None, grad_avg=None, step=None,
              master_param=None, extras=PLAIN):
    """New ``(param, square_avg, momentum_buffer, grad_avg, master_param)`` after one step from
    8-bit state (``Codes`` of NumPy arrays), as fresh arrays and ``Codes`` (None where absent)."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # non-finite values
        return _evaluate8(rule, param, grad, square_avg, momentum_buffer, grad_avg, step,
                          master_param, extras)


def _evaluate8(rule, param, grad, square_avg, momentum_buffer, grad_avg, step, master_param,
               extras):
    s = decoded(square_avg, "square_avg")
    b = None if momentum_buffer is None else decoded(momentum_buffer, "momentum_buffer")
    a = None if grad_avg is None else decoded(grad_avg, "grad_avg")
    if a is not None:
        s = s + a * a
    x, s, b, a, w = reference.evaluate(rule, param, grad, s, b, a, step=step,
                                       master_param=master_param, extras=extras,
                                       modes=modes8(rule))
    if a is not None:
        s = at_least_zero(s - a * a, np.float32(0))
    step = quant8.STEP_CODERS
    return (x, quantised(s, "square_avg", step),
            None if b is None else quantised(b, "momentum_buffer", step),
            None if a is None else quantised(a, "grad_avg", step), w)


def update8(buffers, rule, step, threads=None, extras=PLAIN):
    """The reference backend's in-place 8-bit step (``Buffers`` of NumPy arrays and ``Codes``)."""
    results = evaluate8(rule, *buffers[:5], step=step, master_param=buffers.master_param,
                        extras=extras)
    np.copyto(buffers.param, results[0], casting="same_kind")
    for old, new in zip(buffers[2:5], results[1:4]):
        if old is not None:
            np.copyto(old.codes, new.codes)
            np.copyto(old.scales, new.scales)
    if buffers.master_param is not None:
        np.copyto(buffers.master_param, results[4])


def apply8(rule, param, grad, square_avg, momentum_buffer=None, grad_avg=None, step=None,
           backend="auto", threads=None, master_param=None, extras=PLAIN, skip=False):
    """One in-place step of ``rule`` on 8-bit state (``Codes``), checked first like
    ``fastrms.functional.apply``: a call that raises leaves every buffer as it was."""
    validate.check_state_matches(rule, momentum_buffer, grad_avg)
    if rule.bias_correction:
        validate.check_step(rule, step)
    plain, place = [], None
    for name, a in (("param", param), ("grad", grad), ("master_param", master_param)):
        a, where = (None, place) if a is None else _native(a, name)
        place = _same_place(place, where, name)
        plain.append(a)
    param, grad, master_param = plain
    states = []
    for name, c in (("square_avg", square_avg), ("momentum_buffer", momentum_buffer),
                    ("grad_avg", grad_avg)):
        if c is None:
            states.append(None)
            continue
        if not isinstance(c, Codes):
            raise TypeError(f"{name} must be a fastrms.eight_bit.Codes (8-bit state), got "
                            f"{type(c).__name__}")
        pair = []
        for part, a in zip(Codes._fields, c):
            a, where = _native(a, f"{name}.{part}")
            place = _same_place(place, where, f"{name}.{part}")
            pair.append(a)
        states.append(Codes(*pair))
    module = dispatch.resolve(backend, place)
    # The reference backend's 8-bit step is this module's own (reference.py cannot import it).
    step8 = update8 if module is reference else getattr(module, "update8", None)
    if step8 is None:
        raise ValueError(f"backend {module.NAME!r} has no 8-bit step")
    if param.dtype.name not in PARAM_DTYPES:
        raise TypeError(f"param has dtype {param.dtype}: 8-bit state is for "
                        f"{', '.join(PARAM_DTYPES)} params (float32 compute)")
    validate.check_set(module, rule, Buffers(param, grad, None, None, None, master_param))
    for name, c in zip(KINDS, states):
        if c is not None:
            _check_codes(name, c, param)
    named = [("param", param), ("grad", grad), ("master_param", master_param)] + [
        (f"{n}.{part}", a) for n, c in zip(KINDS, states) if c is not None
        for part, a in zip(Codes._fields, c)]
    _check_disjoint_set([a for _, a in named], [n for n, _ in named])
    if param.size and not skip:
        step8(Buffers(param, grad, *states, master_param), rule, step, threads, extras=extras)


def _native(a, name):
    return (a, HOST) if type(a) is np.ndarray else native(a, name)


def _same_place(place, where, name):
    if place is not None and where != place:
        raise ValueError(f"{name} lives on {where} but param on {place}: all buffers of one call "
                         "must live in one place")
    return where


def _check_codes(name, c, param):
    """Codes that fit ``param``: uint8 of its shape, one float32 scale per block, in place."""
    want = ((f"{name}.codes", c.codes, np.uint8, param.shape),
            (f"{name}.scales", c.scales, np.float32, (quant8.blocks_of(param.size),)))
    for label, a, dtype, shape in want:
        if a.dtype != dtype:
            raise TypeError(f"{label} has dtype {a.dtype}, expected {np.dtype(dtype)}")
        if a.shape != shape:
            raise ValueError(f"{label} has shape {a.shape}, expected {shape} for a param of "
                             f"shape {param.shape}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{label} must be C-contiguous (fastrms updates buffers in place)")
        if not getattr(a.flags, "writeable", True):
            raise ValueError(f"{label} is read-only, but fastrms updates it in place")


# -- state dicts: 8-bit buffers under their own keys, and the conversions both ways ----------

def code_keys(name):
    """The state-dict keys of buffer ``name``'s codes and scales: keys torch.optim.RMSprop does
    not know, so that it refuses 8-bit state (KeyError at its step) instead of stepping on it."""
    return f"{name}_codes", f"{name}_scales"


CODE_KEYS = frozenset(key for name in KINDS for key in code_keys(name))
SCALE_KEYS = frozenset(code_keys(name)[1] for name in KINDS)
NAME_OF = {key: name for name in KINDS for key in code_keys(name)}  # a key's buffer name


def is_eight_bit(state):
    """Whether a per-param state dict holds 8-bit buffers."""
    return code_keys("square_avg")[0] in state


def float32_state(state):
    """A per-param state dict with its 8-bit buffers (NumPy arrays under ``code_keys``) decoded
    to float32 arrays under the buffers' own names; other entries as they are. Centered, the
    square average is rebuilt as v̂ + â² (the codes hold the variance)."""
    out = {k: v for k, v in state.items() if k not in CODE_KEYS}
    values = {name: decoded(Codes(*(np.asarray(state[key]) for key in code_keys(name))), name)
              for name in KINDS if code_keys(name)[0] in state}
    if "grad_avg" in values:
        values["square_avg"] = values["square_avg"] + values["grad_avg"] * values["grad_avg"]
    return {**out, **values}


def eight_bit_state(state):
    """The converse of ``float32_state``: float32 buffers (NumPy) coded under ``code_keys``; a
    centered square average is stored as its variance max(s − a², 0)."""
    out = {k: v for k, v in state.items() if k not in KINDS}
    values = {name: np.asarray(state[name], np.float32) for name in KINDS
              if state.get(name) is not None}
    if "grad_avg" in values:
        a = values["grad_avg"]
        values["square_avg"] = at_least_zero(values["square_avg"] - a * a, np.float32(0))
    for name, value in values.items():
        out.update(zip(code_keys(name), quantised(value, name)))
    return out


def check_codes_fit(state, shape, where):
    """Refuse 8-bit buffers in a per-param state dict that do not fit a param of ``shape``
    (codes uint8 of that shape, one float32 scale per block), naming ``where``."""
    size = int(np.prod(shape))
    for name in KINDS:
        codes_key, scales_key = code_keys(name)
        if (codes_key in state) != (scales_key in state):
            raise ValueError(f"{where}: {codes_key} and {scales_key} come together")
        if codes_key not in state:
            continue
        codes, scales = state[codes_key], state[scales_key]
        if str(codes.dtype).rsplit(".", 1)[-1] != "uint8" or tuple(codes.shape) != tuple(shape):
            raise ValueError(f"{where}: {codes_key} must be uint8 of the param's shape "
                             f"{tuple(shape)}, got {codes.dtype} {tuple(codes.shape)}")
        if str(scales.dtype).rsplit(".", 1)[-1] != "float32" or \
                tuple(scales.shape) != (quant8.blocks_of(size),):
            raise ValueError(f"{where}: {scales_key} must be float32 of shape "
                             f"({quant8.blocks_of(size)},) for {size} values, got "
                             f"{scales.dtype} {tuple(scales.shape)}")
