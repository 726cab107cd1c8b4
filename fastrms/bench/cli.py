"""``fastrms bench``: its options (on the subparser ``fastrms.cli`` gives it) and one run."""

import argparse
import os
import re
from decimal import Decimal

from .. import plotting
from . import cache, modes, report, run as grid, runners
from .traffic import VARIANTS

HELP = "benchmark the fused update against the memory roofline"
DESCRIPTION = ("Time the fused RMSProp step against a same-traffic kernel (the memory roofline), "
               "torch.optim.RMSprop and the NumPy reference, on CPU and GPU.")


SIZE_FORMS = "a whole number of elements from 1 to 2^40, e.g. 1000000, 1_000_000, 1e6 or 2^20"
_SIZE = re.compile(r"[0-9]+(?:_[0-9]+)*"  # 1000000, 1_000_000
                   r"|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE]\+?[0-9]{1,3}"  # 1e6, 2.5e3
                   r"|2\^(?P<exp>[0-9]{1,3})")  # 2^20


def parse_size(text):
    """An element count written as 1000000, 1_000_000, 1e6 (whole values only) or 2^20."""
    match = _SIZE.fullmatch(text.strip())
    n = 0
    if match and match["exp"]:
        n = 2 ** int(match["exp"])
    elif match:
        value = Decimal(match[0])
        n = int(value) if value == value.to_integral_value() else 0
    if not 1 <= n <= 2**40:
        raise argparse.ArgumentTypeError(f"{text.strip()!r} is not {SIZE_FORMS}")
    return n


def _sizes(text):
    """``--sizes``: comma-separated ``parse_size`` forms, mixed as one likes."""
    return tuple(parse_size(part) for part in text.split(","))


def _names(choices):
    def parse(text):
        names = tuple(t.strip() for t in text.split(","))
        unknown = [n for n in names if n not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)} (choose from {', '.join(choices)})")
        return names

    return parse


def _modes(text):
    """``--modes``: comma-separated mode names (``fastrms.bench.modes``) or ``mixed``."""
    try:
        return modes.expand(text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


MODES_HELP = (f"comma-separated precision modes: a dtype ({', '.join(modes.DTYPES)}) with any of "
              "+master (a float32 master of a half param), +stochastic (stochastic rounding of a "
              "half param), +clip (RMSprop.step with max_grad_norm and grad_scale); "
              f"'mixed' = {', '.join(modes.MIXED)}. Default: float32, then the mixed modes on "
              f"{', '.join(grid.MIXED_BACKENDS)}")


def add_arguments(p):
    """The options of ``fastrms bench`` on its subparser ``p``."""
    p.add_argument("--quick", action="store_true",
                   help=f"sizes {', '.join(report._n(n) for n in grid.QUICK_SIZES)}, variants "
                        f"{', '.join(grid.QUICK_VARIANTS)}, then the mixed modes at "
                        f"{', '.join(report._n(n) for n in grid.QUICK_MIXED_SIZES)}; 3 samples")
    p.add_argument("--sizes", type=_sizes, help="comma-separated element counts, e.g. 2^20,1e6,1_000")
    p.add_argument("--variants", type=_names(tuple(VARIANTS)), help="comma-separated, default all")
    p.add_argument("--backends", type=_names(runners.ALL_BACKENDS), help="comma-separated, default all")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--dtype", choices=modes.DTYPES,
                           help="one dtype's step only (the same as --modes DTYPE)")
    precision.add_argument("--modes", type=_modes, help=MODES_HELP)
    p.add_argument("--repeat", type=int, help="samples per median (default 11, --quick 3)")
    p.add_argument("--json", metavar="PATH", help="write every figure and the machine to PATH")
    p.add_argument("--plot", metavar="PATH.png", help="draw GB/s against size (needs matplotlib)")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="compare two saved runs instead of measuring")


def run(args):
    """Measure (or ``--compare``), print the table, then write what was asked."""
    if args.compare:
        print(report.compare(report.load(args.compare[0]), report.load(args.compare[1])))
        return 0
    blocks = grid.plan(args.quick, args.sizes, args.variants, args.backends, args.modes,
                       args.dtype)
    backends = dict.fromkeys(b for block in blocks for b in block.backends)
    repeat = args.repeat or (3 if args.quick else 11)
    if repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    _check_outputs(args)  # before the measurement, not after it
    caches = cache.last_level(runners.device_of(b) for b in backends)
    machine = report.machine(caches)
    print(f"fastrms bench: {machine['cpu']} ({machine['cores']} cores), GPU: {machine['gpu'] or 'none'}; "
          f"import fastrms: {machine['import_fastrms_s'] * 1e3:.0f} ms")
    print("last-level cache: " + "; ".join(
        f"{device} {cache.mib(c.bytes) if c.bytes else 'unknown'} ({c.source})"
        for device, c in caches.items()))
    rows = grid.run_blocks(blocks, repeat, grid.progress_bar(), caches)
    print(report.table(rows))
    if args.json:
        report.save(args.json, rows, machine)
        print(f"wrote {args.json}")
    if args.plot:
        report.plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _check_outputs(args):
    """Exit with the reason where ``--plot`` or ``--json`` could not be written after the run."""
    if args.plot:
        try:
            plotting.require()
        except plotting.MatplotlibMissing as exc:
            raise SystemExit(f"fastrms bench: cannot plot: {exc}, or run without --plot") from None
    for path in (args.json, args.plot):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise SystemExit(f"fastrms bench: cannot write {path}: no folder {folder}")
