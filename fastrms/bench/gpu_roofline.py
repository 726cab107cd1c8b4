"""The GPU roofline: rmsprop.cu built with -DFASTRMS_SAME_TRAFFIC, launched exactly as a step is.

Same loads and stores (128-bit where the step's are), same grid and block, same instance; only
the math per element is one multiply-add per buffer (docs/design.md §6: the same parallel
scaffolding). The launch is the step's own (``fastrms.cuda.backend.launch``), given these options.
"""

import functools

from .._buffers import Buffers
from .._spec import Rule
from ..cuda import backend, loader

# The step's compile options and the define that swaps the rule for the roofline's multiply-add
# (rmsprop.cu: step_element).
OPTIONS = loader.OPTIONS + ("-DFASTRMS_SAME_TRAFFIC",)


@functools.lru_cache(maxsize=None)
def _rule(momentum, centered):
    """A rule whose instance has these buffers (its numbers are not used), and c = alpha = 0.5."""
    return Rule(alpha=0.5, momentum=0.5 if momentum else 0.0, centered=centered)


def same_traffic(x, g, s, b, a):
    """Reads and writes x, s (and b, a), reads g, in place, on CuPy's current stream."""
    backend.launch(Buffers(x, g, s, b, a), _rule(b is not None, a is not None), None, OPTIONS)
