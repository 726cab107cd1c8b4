"""Figures without pyplot, for the demos and ``fastrms bench --plot``.

matplotlib is optional and imported only when a figure is drawn. A ``Figure`` on an explicit Agg
canvas touches no global backend state, so figures are drawn headless and never switch the
backend of a caller's interactive session (``matplotlib.use`` would).
"""

DPI = 100


class MatplotlibMissing(RuntimeError):
    """matplotlib cannot be imported; the message says how to install it."""


def require():
    """matplotlib's ``Figure`` and ``FigureCanvasAgg``; ``MatplotlibMissing`` where they cannot be
    imported (call it before a long computation whose figure would otherwise fail at the end)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MatplotlibMissing(
            f"figures need matplotlib ({exc}); install it with: pip install 'fastrms[plots]'"
        ) from None
    return Figure, FigureCanvasAgg


def figure(size, dpi=DPI, layout="constrained"):
    """A new ``Figure`` of ``size`` inches at ``dpi``, on its own Agg canvas."""
    Figure, FigureCanvasAgg = require()
    fig = Figure(figsize=size, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path):
    """Write ``fig`` to ``path`` at its own dpi (a user's ``savefig.dpi`` setting would not)."""
    fig.savefig(path, dpi=fig.dpi)  # no bbox_inches="tight": that would change the pixel size
    return path
