"""``fastrms.warmup()`` and ``fastrms warmup``: compile the common kernel variants ahead of time
(in a Docker build step, say), so that no training process waits for Numba on its first step.

A variant is one mode set of the rule (``Rule.modes()``) × serial or parallel loop × one buffer
set or a list × dtype. Compiling one takes 1-2.5 s; the disk cache then serves it to every later
process. The defaults cover what ``fastrms.torch.RMSprop`` and ``RMSprop()`` run with torch's and
the book's options: momentum or not, centered or not, weight decay or not.
"""

import itertools
import time

import numpy as np

from ._spec import rule_for
from .functional import apply
from .threads import pool_size

CONVENTIONS = ("torch", "book")
DTYPES = ("float32",)
# A size each loop kind serves: the serial loop, and the parallel one (fastrms.cpu.backend).
SIZES = (64, 1 << 15)


def variants(conventions=CONVENTIONS):
    """The rules to compile, one per mode set: {momentum, centered, weight decay} on or off."""
    rules = {}
    for convention, momentum, centered, weight_decay in itertools.product(
            conventions, (0.0, 0.9), (False, True), (0.0, 0.01)):
        rule = rule_for(convention, momentum=momentum, centered=centered,
                        weight_decay=weight_decay)
        rules.setdefault(rule.modes(), rule)
    return list(rules.values())


def warmup(conventions=CONVENTIONS, dtypes=DTYPES, say=None):
    """Compile (or load from the disk cache) every variant of ``variants(conventions)`` for
    ``dtypes``: serial and parallel, single buffers and lists. Returns the seconds it took."""
    start = time.perf_counter()
    rules = variants(conventions)
    # Every loop kind, whatever this process's thread limit (a build step often runs with
    # OMP_NUM_THREADS=1): the parallel loops wherever Numba has more than one thread.
    threads = pool_size()
    for dtype, rule in itertools.product(dtypes, rules):
        began = time.perf_counter()
        for n in SIZES:
            buffers = _step_buffers(rule, n, np.dtype(dtype))
            apply(rule, *buffers, step=1, threads=threads)
            apply(rule, *([b] if b is not None else None for b in buffers), step=1,
                  threads=threads)
        if say:
            say(f"{dtype} {_describe(rule)}: {time.perf_counter() - began:.1f} s")
    return time.perf_counter() - start


def _step_buffers(rule, n, dtype):
    """param, grad, square_avg, momentum_buffer, grad_avg: small well-behaved values."""
    def ones():
        return np.ones(n, dtype)

    return (ones(), ones(), ones(), ones() if rule.momentum else None,
            ones() * 0 if rule.centered else None)


def _describe(rule):
    flags = [name for name, on in (("momentum", rule.momentum), ("centered", rule.centered),
                                   ("weight decay", rule.weight_decay)) if on]
    form = "eps outside the root" if not rule.eps_in_sqrt else "eps inside the root"
    return f"{', '.join(flags) or 'plain'} ({form})"


HELP = "compile the common kernel variants ahead (e.g. in a Docker build step)"


def add_arguments(parser):
    parser.add_argument("--conventions", default=",".join(CONVENTIONS),
                        help="comma-separated conventions whose option sets to compile")
    parser.add_argument("--dtypes", default=",".join(DTYPES),
                        help="comma-separated param dtypes (float32, float64)")


def run(args):
    conventions = [c for c in args.conventions.split(",") if c]
    dtypes = [d for d in args.dtypes.split(",") if d]
    seconds = warmup(conventions, dtypes, say=print)
    print(f"compiled or loaded {len(variants(conventions)) * len(dtypes)} option sets in "
          f"{seconds:.1f} s")
    return 0
