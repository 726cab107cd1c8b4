"""The ``fastrms`` command: one argparse tree, ``fastrms {bench,demo,warmup,backends} ...``.

Each subcommand's options and work live in its own module (``fastrms.bench.cli``,
``fastrms.demos.cli``, ``fastrms.compile_ahead``: ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)``, ``run(args)``), imported
when the parser is built, not when this module is: ``import fastrms.cli`` stays as cheap as
``import fastrms``. Numba, torch, CuPy and matplotlib load only when a run needs them.
"""

import argparse
import importlib
import sys

from . import __version__

SUBCOMMANDS = {"bench": "fastrms.bench.cli", "demo": "fastrms.demos.cli", "warmup": "fastrms.compile_ahead"}


def backends_command(args):
    """``fastrms backends``: one line per backend."""
    from . import backends

    for b in backends():
        print(f"{b.name:6s} {b.place:5s} {'usable' if b.usable else 'not usable: ' + b.reason}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastrms", description="Fused RMSProp update kernels: benchmark, demos, backends.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP,
                           description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    text = "list the backends and whether they are usable here"
    sub.add_parser("backends", help=text, description=text).set_defaults(handler=backends_command)
    return parser


def main(argv=None):
    """Run ``fastrms ARGV``; returns the exit code (argparse exits 2 on a usage error)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
