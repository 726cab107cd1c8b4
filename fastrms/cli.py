"""The ``fastrms`` command: ``fastrms bench ...`` and ``fastrms demo ...``.

Each subcommand lives in its own package and is imported only when it runs.
"""

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "bench": ("fastrms.bench.cli", "benchmark the fused update against the memory roofline"),
    "demo": ("fastrms.demos.cli", "rerun the book's RMSProp chapter on fastrms"),
    "backends": ("fastrms.cli", "list the backends and whether they are usable here"),
}


def backends_main(argv):
    """``fastrms backends``: one line per backend."""
    argparse.ArgumentParser(prog="fastrms backends").parse_args(argv)
    from . import backends

    for b in backends():
        print(f"{b.name:6s} {b.place:5s} {'usable' if b.usable else 'not usable: ' + b.reason}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        print("usage: fastrms {" + ",".join(SUBCOMMANDS) + "} [options]\n")
        for name, (_, text) in SUBCOMMANDS.items():
            print(f"  {name:9s} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    if name == "backends":
        return backends_main(rest)
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
