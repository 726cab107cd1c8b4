"""Precision modes of the benchmark: the param dtype and what the step does around the rule.

A mode is named by its param (and grad) dtype, then any of ``+master``, ``+stochastic`` and
``+clip``, e.g. ``bfloat16+master+clip``:

- ``float32``, ``float64``, ``float16``, ``bfloat16``: the step of that dtype (half params
  compute in float32 and keep float32 state);
- ``+master``: a float32 master copy of a half param; the rule runs on it and the param is only
  written (its rounded copy);
- ``+stochastic``: the half param is rounded stochastically (same memory traffic as nearest);
- ``+clip``: fastrms's own clipping and loss-scaling path, the whole ``RMSprop.step`` with
  ``max_grad_norm`` and ``grad_scale``: ``inspect_grads`` (one read of the grads), then the update
  with the clip factor and the grad scale inside;
- ``+state8``: 8-bit state (``RMSprop(state_bits=8)``, docs/eight-bit.md): codes and a scale
  per block of 256 instead of float32 state buffers.

``MIXED`` is the issue's set (the plain float32 step first, as the reference of the others).
This module imports nothing heavy: the command's parser uses it.
"""

from typing import NamedTuple

DTYPES = ("float32", "float64", "float16", "bfloat16")
HALF = ("float16", "bfloat16")
FLAGS = ("master", "stochastic", "clip", "state8")
MIXED = ("float32", "float32+clip", "bfloat16+master", "bfloat16+master+clip",
         "bfloat16+stochastic", "float16")
ALIASES = {"mixed": MIXED}  # what --modes expands


class Mode(NamedTuple):
    dtype: str  # the param's and grad's
    master: bool = False
    stochastic: bool = False
    clip: bool = False
    state8: bool = False

    @property
    def name(self):
        """The canonical name: the dtype, then the flags in ``FLAGS`` order."""
        return "+".join([self.dtype] + [f for f in FLAGS if getattr(self, f)])

    @property
    def rounding(self):
        """``rmsprop_update``'s ``rounding`` argument."""
        return "stochastic" if self.stochastic else "nearest"

    @property
    def half(self):
        return self.dtype in HALF

    @property
    def mixed(self):
        """Whether the step does more than the plain update of its dtype."""
        return self.master or self.stochastic or self.clip or self.state8

    def unclipped(self):
        """The same mode without ``+clip``: what a clipped row is compared with."""
        return self._replace(clip=False)


def parse(text):
    """A ``Mode`` from its name (or a ``Mode``, returned as is); ValueError naming what is wrong."""
    if isinstance(text, Mode):
        return text
    dtype, *flags = str(text).strip().split("+")
    if dtype not in DTYPES:
        raise ValueError(f"mode {text!r}: unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    unknown = [f for f in flags if f not in FLAGS]
    if unknown:
        raise ValueError(f"mode {text!r}: unknown {', '.join(unknown)} "
                         f"(add any of {', '.join('+' + f for f in FLAGS)})")
    mode = Mode(dtype, *(f in flags for f in FLAGS))
    if (mode.master or mode.stochastic) and not mode.half:
        raise ValueError(f"mode {text!r}: +master and +stochastic need a half dtype "
                         f"({' or '.join(HALF)})")
    if mode.state8 and mode.dtype == "float64":
        raise ValueError(f"mode {text!r}: +state8 is for float32 and half params")
    return mode


def expand(names):
    """Mode names (or ``Mode``s) with ``ALIASES`` expanded, parsed, without repeats, in order."""
    modes = []
    for name in names:
        for one in ALIASES.get(name.strip(), (name,)) if isinstance(name, str) else (name,):
            mode = parse(one)
            if mode not in modes:
                modes.append(mode)
    return tuple(modes)
