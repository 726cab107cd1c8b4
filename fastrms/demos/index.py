"""``index.html`` for ``fastrms demo all --out DIR``: every figure beside the lines it printed."""

import html
from pathlib import Path

from . import DEMOS

STYLE = ("<style>body{font-family:sans-serif;max-width:1060px;margin:2em auto}"
         "pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}img{max-width:100%}</style>")


def write_index(out, results, quick=False):
    """Write ``out/index.html`` from {name: (lines, figure path or None, skip reason or None)}."""
    out = Path(out)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>fastrms demos</title>',
        STYLE,
        "</head><body>",
        "<h1>The RMSProp chapter of <i>Dive into Deep Learning</i>, on fastrms</h1>",
    ]
    if quick:
        parts.append("<p><b>--quick run:</b> fewer epochs and smaller sweeps; "
                     "these are not the book's numbers.</p>")
    for name, (lines, figure, skipped) in results.items():
        parts.append(f"<h2>{html.escape(name)}</h2><p>{html.escape(DEMOS[name])}</p>")
        parts.append(f"<p><code>fastrms demo {html.escape(name)}</code></p>")
        if lines:
            parts.append("<pre>" + html.escape("\n".join(lines)) + "</pre>")
        if skipped:
            parts.append(f"<p><b>skipped:</b> {html.escape(skipped)}</p>")
        if figure is not None:
            src = html.escape(Path(figure).name)
            parts.append(f'<img src="{src}" alt="{html.escape(name)} figure">')
    parts.append("</body></html>")
    path = out / "index.html"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
