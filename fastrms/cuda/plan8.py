"""The launch of ``rmsprop.cu``'s 8-bit kernel (``rmsprop8_kernel``): its instance, geometry and
arguments. Pure, like ``plan``: tested without a GPU, and the host emulation launches exactly this.
"""

import numpy as np

from .. import quant8
from ..eight_bit import modes8
from . import plan, rule_args

LANES = 32  # threads per block of codes on the GPU (rmsprop.cu builds 1 for the host emulation)
DTYPES = frozenset(d for d in plan.CXX_TYPES if d.itemsize <= 4)  # float32 compute


def kernel_name(param_dtype, has_momentum_buffer, has_grad_avg, lanes=LANES):
    """The C++ name of one instance, as RawModule's name_expressions want it."""
    flags = ", ".join("true" if f else "false" for f in (has_momentum_buffer, has_grad_avg))
    return f"fastrms::rmsprop8_kernel<{plan.CXX_TYPES[np.dtype(param_dtype)]}, {flags}, {lanes}>"


def all_kernel_names():
    """Every instance the GPU loads (``rmsprop.cu``'s FASTRMS_INSTANCES8)."""
    return [kernel_name(d, m, a) for d in sorted(DTYPES, key=str) for m in (False, True)
            for a in (False, True)]


def launch_config(n, multiprocessors):
    """``(grid, block)``: ``plan.BLOCK`` threads, ``BLOCK / LANES`` blocks of codes each, capped
    at ``plan.BLOCKS_PER_SM`` per multiprocessor (the loop strides over the rest)."""
    per_launch_block = plan.BLOCK // LANES
    grid = min(-(-quant8.blocks_of(n) // per_launch_block), plan.BLOCKS_PER_SM * multiprocessors)
    return max(grid, 1), plan.BLOCK


def plan8(param_dtype, addresses, n, rule, step, multiprocessors, extras):
    """A ``plan.Launch`` of one step over ``n`` values. ``addresses``: param, grad, then codes and
    scales of square_avg, momentum_buffer, grad_avg, then master_param (0 where absent);
    ``extras``: the step's ``Extras`` (``offsets``: one int; ``device_amp``: an address or 0)."""
    param_dtype = np.dtype(param_dtype)
    if len(addresses) != 9:
        raise ValueError(f"expected 9 addresses, got {len(addresses)}")
    effective = rule_args.effective(extras, param_dtype)
    scalars = rule.scalars(np.float32, step if rule.bias_correction else None,
                           effective.grad_scale, effective.clip)
    packed = rule_args.pack(scalars, modes8(rule), np.float32, effective.rounding, effective.key)
    grid, block = launch_config(n, multiprocessors)
    name = kernel_name(param_dtype, rule.momentum != 0, rule.centered)
    args = (*(np.uint64(a) for a in addresses), np.int64(n), np.uint64(effective.offsets), packed,
            np.uint64(extras.device_amp))
    return plan.Launch(name, grid, block, args)
