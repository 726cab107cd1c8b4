"""The RMSProp chapter of *Dive into Deep Learning* (section 11.8), rerun on fastrms.

One module per demo; each has ``add_arguments(parser)`` and ``run(args, say)``, which reports its
numbers through ``say`` (one line per call) and, with ``args.out`` set, writes ``NAME.png`` there
and returns its path. ``fastrms demo NAME`` (``fastrms.demos.cli``) runs them.
"""


class DemoUnavailable(RuntimeError):
    """Something a demo needs is missing here; the message says what and how to get it."""
