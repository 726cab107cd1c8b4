"""``fastrms bench``: its options (on the subparser ``fastrms.cli`` gives it) and one run."""

import argparse

from ..plotting import MatplotlibMissing
from . import report, run as grid, runners
from .traffic import VARIANTS

HELP = "benchmark the fused update against the memory roofline"
DESCRIPTION = ("Time the fused RMSProp step against a same-traffic kernel (the memory roofline), "
               "torch.optim.RMSprop and the NumPy reference, on CPU and GPU.")


def _sizes(text):
    sizes = []
    for part in text.split(","):
        part = part.strip()
        sizes.append(2 ** int(part[2:]) if part.startswith("2^") else int(part))
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive")
    return tuple(sizes)


def _names(choices):
    def parse(text):
        names = tuple(t.strip() for t in text.split(","))
        unknown = [n for n in names if n not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)} (choose from {', '.join(choices)})")
        return names

    return parse


def add_arguments(p):
    """The options of ``fastrms bench`` on its subparser ``p``."""
    p.add_argument("--quick", action="store_true",
                   help=f"sizes {', '.join(report._n(n) for n in grid.QUICK_SIZES)}, variants "
                        f"{', '.join(grid.QUICK_VARIANTS)}, 3 samples: under a minute")
    p.add_argument("--sizes", type=_sizes, help="comma-separated element counts, e.g. 2^20,1000")
    p.add_argument("--variants", type=_names(tuple(VARIANTS)), help="comma-separated, default all")
    p.add_argument("--backends", type=_names(runners.ALL_BACKENDS), help="comma-separated, default all")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "float16"))
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
    sizes = args.sizes or (grid.QUICK_SIZES if args.quick else grid.FULL_SIZES)
    variants = args.variants or (grid.QUICK_VARIANTS if args.quick else tuple(VARIANTS))
    backends = args.backends or runners.ALL_BACKENDS
    repeat = args.repeat or (3 if args.quick else 11)
    if repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    machine = report.machine()
    print(f"fastrms bench: {machine['cpu']} ({machine['cores']} cores), GPU: {machine['gpu'] or 'none'}; "
          f"import fastrms: {machine['import_fastrms_s'] * 1e3:.0f} ms")
    rows = grid.run(sizes, variants, backends, args.dtype, repeat, grid.progress_bar())
    print(report.table(rows))
    if args.json:
        report.save(args.json, rows, machine)
        print(f"wrote {args.json}")
    if args.plot:
        try:
            report.plot(rows, args.plot)
        except MatplotlibMissing as exc:  # the rows are printed (and saved) already
            raise SystemExit(f"fastrms bench: cannot plot: {exc}, or run without --plot") from None
        print(f"wrote {args.plot}")
    return 0
