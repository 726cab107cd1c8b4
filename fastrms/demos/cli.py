"""``fastrms demo NAME [--out DIR] [options]``: rerun one experiment of the book's RMSProp chapter.

``add_arguments`` puts one subcommand per demo on the ``demo`` subparser of ``fastrms.cli``, each
with the options its module defines; ``run`` runs the chosen one. ``fastrms demo all --out DIR``
runs every demo and writes ``DIR/index.html``, which shows each figure next to the numbers the
demo printed.
"""

import argparse
import importlib
import sys

from . import DEMOS, DemoUnavailable
from .index import write_index

HELP = "rerun the book's RMSProp chapter on fastrms"
DESCRIPTION = ("Rerun one experiment of the book's RMSProp chapter (Dive into Deep Learning, "
               "section 11.8) on fastrms.")


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def _module(name):
    return importlib.import_module(f"{__package__}.{name}")


def _add_demo_arguments(parser, name):
    parser.add_argument("--out", metavar="DIR", help="write the figure NAME.png into DIR")
    _module(name).add_arguments(parser)


def add_arguments(parser):
    """On the ``demo`` subparser: one subcommand per demo, with its own options, and ``all``."""
    sub = parser.add_subparsers(dest="name", required=True, metavar="NAME")
    for name, text in DEMOS.items():
        p = sub.add_parser(name, help=text, description=text, formatter_class=_HelpWithDefaults)
        _add_demo_arguments(p, name)
    p = sub.add_parser("all", help="run every demo; with --out, also write DIR/index.html",
                       description="run every demo with its defaults")
    p.add_argument("--out", metavar="DIR", help="write every figure and index.html into DIR")
    p.add_argument("--quick", action="store_true",
                   help="fewer epochs, smaller sweeps: checks the plumbing, not the book's numbers")


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


def _defaults(name, out, quick):
    """The namespace ``fastrms demo NAME`` would get with no options (smaller with ``quick``)."""
    parser = argparse.ArgumentParser()
    _add_demo_arguments(parser, name)
    args = parser.parse_args(["--out", out] if out else [])
    if quick:
        for key, value in getattr(_module(name), "QUICK", {}).items():
            setattr(args, key, value)
    return args


def run(args):
    """``fastrms demo NAME``'s exit code: 1 where the demo cannot run here."""
    if args.name != "all":
        _, _, skipped = run_one(args.name, args)
        if skipped:
            print(f"fastrms demo {args.name}: cannot run: {skipped}", file=sys.stderr)
            return 1
        return 0
    results = {}
    for name in DEMOS:
        print(f"== {name}", flush=True)
        lines, figure, skipped = run_one(name, _defaults(name, args.out, args.quick))
        if skipped:
            print(f"skipped: {skipped}", flush=True)
        results[name] = (lines, figure, skipped)
    if args.out:
        print(f"wrote {write_index(args.out, results, quick=args.quick)}")
    return 0
