"""Figures without pyplot: matplotlib is optional and imported only when a figure is drawn.

A ``Figure`` drawn on an explicit Agg canvas touches no global backend state, so the demos work
headless and never switch the backend of a caller's interactive session.
"""

from pathlib import Path

from . import DemoUnavailable

DPI = 100
SIZE = (6.4, 4.2)  # inches: 640 x 420 pixels at DPI
WIDE = (10.0, 4.2)  # two panels side by side: 1000 x 420 pixels


def figure(size=SIZE):
    """A new Figure on an Agg canvas, of ``size`` inches at ``DPI``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise DemoUnavailable(
            f"figures need matplotlib ({exc}); install it with: pip install 'fastrms[plots]', "
            "or run without --out to print the numbers only"
        ) from None
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, out, name):
    """Write ``fig`` to ``out/name.png`` at its exact pixel size; returns the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=DPI)  # no bbox_inches="tight": that would change the pixel size
    return path


def pixel_size(size=SIZE):
    """The (width, height) in pixels of a figure of ``size`` inches."""
    return round(size[0] * DPI), round(size[1] * DPI)
