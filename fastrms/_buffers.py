"""The buffers of a step, by name: what travels from the API to a backend.

A leaf module (it imports nothing of fastrms), so that everything else may import it.
"""

from typing import Any, NamedTuple

HOST = "host"  # where host buffers live; GPU buffers live on "cuda:N"


class Buffers(NamedTuple):
    """The buffers of one step, by name: what travels from the API to a backend.

    For a single step each field is an array (``None`` for an absent state buffer); for a
    multi-tensor step each field is a list of arrays, one per tensor (``None`` for an absent
    column). ``grad`` is the only buffer that is read and never written.
    """

    param: Any
    grad: Any
    square_avg: Any
    momentum_buffer: Any = None
    grad_avg: Any = None
    master_param: Any = None  # float32 master weights of half-precision params


NAMES = Buffers._fields


class Extras(NamedTuple):
    """What a step does around the rule, per call (docs/design.md §4): the loss scale the grads
    carry, the clip factor, and how half-precision params are rounded.

    ``grad_scale`` and ``clip`` are 1 (the rule's no-op) unless set; ``rounding`` is
    ``fastrms.rounding.NEAREST`` or ``STOCHASTIC``, with ``key`` (``rounding.step_key(seed,
    step)``, a uint64 as int) and ``offsets``, the generator's counter for element 0 of each
    buffer set (one int for a single set, a tuple for a list). ``device_amp``: on a GPU, the
    address of three float32 values read by the kernel instead (found_inf, grad scale, clip
    factor: a nonzero found_inf makes the step write nothing), 0 for none.
    """

    grad_scale: float = 1.0
    clip: float = 1.0
    rounding: int = 0
    key: int = 0
    offsets: Any = 0
    device_amp: int = 0


PLAIN = Extras()
