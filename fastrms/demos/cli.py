"""``fastrms demo NAME [--out DIR] [options]``: rerun one experiment of the book's RMSProp chapter.

``fastrms demo all --out DIR`` runs every demo and writes ``DIR/index.html``, which shows each
figure next to the numbers the demo printed.
"""

import argparse
import importlib
import sys

from . import DemoUnavailable

# name -> one-line description; each is the module fastrms.demos.<name>
DEMOS = {
    "weights": "leaky-average weights (1-gamma) gamma^t for four values of gamma",
    "trace": "RMSProp on f(x) = 0.1 x1^2 + 2 x2^2: the book's 2-D trajectory",
    "airfoil": "from-scratch linear regression on the airfoil data (the book's loss: 0.245)",
    "concise": "the same with torch.nn.Linear: torch.optim.RMSprop vs fastrms.torch.RMSprop",
    "gamma": "exercises on gamma: gamma = 1, and a gamma x eta grid of final losses",
    "digits": "a small MLP on scikit-learn's digits: fastrms vs torch RMSprop and SGD",
}


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def _module(name):
    return importlib.import_module(f"{__package__}.{name}")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastrms demo", description="Rerun one experiment of the book's RMSProp chapter "
        "(Dive into Deep Learning, section 11.8) on fastrms.")
    sub = parser.add_subparsers(dest="name", required=True, metavar="NAME")
    for name, text in DEMOS.items():
        p = sub.add_parser(name, help=text, description=text,
                           formatter_class=_HelpWithDefaults)
        p.add_argument("--out", metavar="DIR", help="write the figure NAME.png into DIR")
        _module(name).add_arguments(p)
    p = sub.add_parser("all", help="run every demo; with --out, also write DIR/index.html",
                       description="run every demo with its defaults")
    p.add_argument("--out", metavar="DIR", help="write every figure and index.html into DIR")
    p.add_argument("--quick", action="store_true",
                   help="fewer epochs, smaller sweeps: checks the plumbing, not the book's numbers")
    return parser, sub


def run_one(name, args):
    """Run demo ``name``: its printed lines, its figure (or None), why it was skipped (or None)."""
    lines = []

    def say(line):
        print(line, flush=True)
        lines.append(line)

    try:
        figure = _module(name).run(args, say)
    except DemoUnavailable as exc:
        return lines, None, str(exc)
    return lines, figure, None


def _defaults(sub, name, out, quick):
    """The namespace ``fastrms demo NAME`` would get with no options (smaller with ``quick``)."""
    argv = ["--out", out] if out else []
    args = sub.choices[name].parse_args(argv)
    if quick:
        for key, value in getattr(_module(name), "QUICK", {}).items():
            setattr(args, key, value)
    return args


def main(argv=None):
    parser, sub = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.name != "all":
        _, _, skipped = run_one(args.name, args)
        if skipped:
            print(f"fastrms demo {args.name}: cannot run: {skipped}", file=sys.stderr)
            return 1
        return 0
    results = {}
    for name in DEMOS:
        print(f"== {name}", flush=True)
        lines, figure, skipped = run_one(name, _defaults(sub, name, args.out, args.quick))
        if skipped:
            print(f"skipped: {skipped}", flush=True)
        results[name] = (lines, figure, skipped)
    if args.out:
        from .index import write_index

        print(f"wrote {write_index(args.out, results, quick=args.quick)}")
    return 0
