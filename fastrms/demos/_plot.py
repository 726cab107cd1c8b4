"""The demos' figure sizes and files, on ``fastrms.plotting`` (Agg canvas, no pyplot).

A missing matplotlib becomes ``DemoUnavailable``: the demo says so and exits 1, and its numbers
need no matplotlib (run without ``--out``).
"""

from pathlib import Path

from .. import plotting
from . import DemoUnavailable

DPI = plotting.DPI
SIZE = (6.4, 4.2)  # inches: 640 x 420 pixels at DPI
WIDE = (10.0, 4.2)  # two panels side by side: 1000 x 420 pixels


def figure(size=SIZE):
    """A new Figure on an Agg canvas, of ``size`` inches at ``DPI``."""
    try:
        return plotting.figure(size, DPI)
    except plotting.MatplotlibMissing as exc:
        raise DemoUnavailable(f"{exc}, or run without --out to print the numbers only") from None


def save(fig, out, name):
    """Write ``fig`` to ``out/name.png`` at its exact pixel size; returns the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return plotting.save(fig, out / f"{name}.png")


def pixel_size(size=SIZE):
    """The (width, height) in pixels of a figure of ``size`` inches."""
    return round(size[0] * DPI), round(size[1] * DPI)
