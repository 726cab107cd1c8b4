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


NAMES = Buffers._fields
