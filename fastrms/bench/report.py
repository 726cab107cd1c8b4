"""Presenting benchmark rows: the table, the JSON file, a comparison of two runs, the plot."""

import json
import os
import platform
import subprocess
import sys
from importlib import metadata

from .. import plotting
from ..dispatch import backend_info
from . import cache

COLUMNS = [
    # (header, key, format)
    ("backend", "backend", "{}"),
    ("device", "device", "{}"),
    ("variant", "variant", "{}"),
    ("mode", "mode", "{}"),
    ("n", "n", "{}"),
    ("B/el", "bytes_per_element", "{:.4g}"),
    ("median", "median_s", None),
    ("GB/s", "gbps", "{:.1f}"),
    ("roof GB/s", "roofline_gbps", "{:.1f}"),
    ("roofline", "roofline_fraction", "{:.2f}"),
    ("vs torch", "speedup_vs_torch", "{:.1f}x"),
    ("vs numpy", "speedup_vs_numpy", "{:.1f}x"),
]
# Shown where a row has them: a clipped step's time and bytes over its unclipped step's.
CLIP_COLUMNS = [
    ("clip time", "time_vs_unclipped", "{:.2f}x"),
    ("clip roof", "roofline_time_vs_unclipped", "{:.2f}x"),
    ("clip bytes", "bytes_vs_unclipped", "{:.2f}x"),
]
LEFT = 4  # the first LEFT columns are text, left-aligned


def _duration(seconds):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _n(n):
    exponent = n.bit_length() - 1
    return f"2^{exponent}" if n == 1 << exponent else str(n)


def _cell(row, key, fmt):
    value = row.get(key)
    if key == "mode" and value is None:  # a row saved before modes: its dtype
        value = row.get("dtype")
    if key == "roofline_fraction":  # with its mark, or a blank in the mark's place
        return ("-" if value is None else fmt.format(value)) + (mark(row) or " ")
    if value is None:
        return "-"
    if key == "median_s":
        return _duration(value)
    if key == "n":
        return _n(value)
    return fmt.format(value)


CACHED, UNEXPLAINED = "*", "!"


def mark(row):
    """``*`` where the row's buffers fit in its device's last-level cache; else ``!`` where its
    roofline fraction shows above 1.00; else ""."""
    if row.get("cache_resident"):
        return CACHED
    fraction = row.get("roofline_fraction")
    return UNEXPLAINED if fraction is not None and round(fraction, 2) > 1 else ""


def legend(rows):
    """One line per mark used in the table, saying what it means."""
    marked = {}
    for r in rows:
        if r["skipped"] is None and mark(r):
            marked.setdefault(mark(r), []).append(r)
    lines = []
    if CACHED in marked:
        sizes = dict.fromkeys(f"{r['device']} {cache.mib(r['cache_bytes'])}" for r in marked[CACHED])
        lines.append(f"{CACHED} the step's buffers fit in the last-level cache ({', '.join(sizes)}): "
                     "GB/s measures the cache, not memory, and the fraction may exceed 1")
    if UNEXPLAINED in marked:
        unknown = any(r.get("cache_resident") is None for r in marked[UNEXPLAINED])
        lines.append(f"{UNEXPLAINED} above 1 with buffers "
                     + ("not known to fit" if unknown else "too big for")
                     + " the cache: the step and the same-traffic kernel are timed one after the "
                     "other, and this is timing noise, not a step faster than memory")
    if any(r.get("time_vs_unclipped") is not None for r in rows):
        lines.append("clip time: the +clip step (RMSprop.step with max_grad_norm and grad_scale: "
                     "inspect_grads, then the update) over the same mode's step without it; clip "
                     "roof: the same ratio of their same-traffic loops (one more read of the "
                     "grads, as fast as this machine reads); clip bytes: of their bytes per element")
    return lines


def table(rows):
    """The measured rows as an aligned text table, the legend of its marks, then one line per
    skipped backend and reason."""
    measured = [r for r in rows if r["skipped"] is None]
    lines = []
    if measured:
        columns = COLUMNS + (CLIP_COLUMNS if any(r.get("time_vs_unclipped") is not None
                                                 for r in measured) else [])
        cells = [[h for h, _, _ in columns]] + [[_cell(r, k, f) for _, k, f in columns] for r in measured]
        widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
        for i, c in enumerate(cells):
            lines.append("  ".join(v.rjust(w) if j >= LEFT else v.ljust(w) for j, (v, w) in enumerate(zip(c, widths))))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
    lines += legend(rows)
    skipped = {}
    for r in rows:
        if r["skipped"] is not None:
            skipped.setdefault((r["backend"], r["skipped"]), 0)
            skipped[r["backend"], r["skipped"]] += 1
    for (backend, reason), count in skipped.items():
        lines.append(f"skipped {backend} ({count} row{'s' * (count != 1)}): {reason}")
    return "\n".join(lines)


def machine(caches=None):
    """What the figures were measured on; ``caches``: {device: ``cache.Cache``}."""
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": None,
        "versions": {},
        "import_fastrms_s": min(import_seconds() for _ in range(3)),
        "last_level_cache": {d: c._asdict() for d, c in (caches or {}).items()},
    }
    for package in ("fastrms", "numpy", "numba", "torch", "cupy-cuda12x", "cupy-cuda13x"):
        try:
            info["versions"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    if backend_info("cupy").usable:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return info


def import_seconds():
    """Wall time of ``import fastrms`` in a fresh interpreter (what a user's script pays)."""
    code = "import time; t = time.perf_counter(); import fastrms; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def save(path, rows, machine_info):
    with open(path, "w") as f:
        json.dump({"machine": machine_info, "results": rows}, f, indent=1)


def load(path):
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "results" not in data or "machine" not in data:
        raise ValueError(f"{path} is not a fastrms bench JSON file (no 'machine' and 'results')")
    return data


KEY = ("backend", "device", "variant", "mode", "n")


def _key(row):
    """A row's identity across runs (a row saved before modes has its dtype as its mode)."""
    return tuple(row.get(k, row.get("dtype")) for k in KEY)


def compare(a, b):
    """Rows measured in both runs: GB/s in each and the ratio b/a, as text."""
    index_a = {_key(r): r for r in a["results"] if r["skipped"] is None}
    lines = [f"{'backend':<20} {'variant':<18} {'mode':<22} {'n':>6} {'A GB/s':>8} {'B GB/s':>8} "
             f"{'B/A':>6}"]
    matched = 0
    for r in b["results"]:
        old = index_a.get(_key(r))
        if old is None or r["skipped"] is not None:
            continue
        matched += 1
        lines.append(f"{r['backend'] + ' ' + r['device']:<20} {r['variant']:<18} "
                     f"{_key(r)[3]:<22} {_n(r['n']):>6} "
                     f"{old['gbps']:>8.1f} {r['gbps']:>8.1f} {r['gbps'] / old['gbps']:>6.2f}")
    if not matched:
        lines.append("(no row was measured in both runs)")
    return "\n".join(lines)


def _cache_full(rows):
    """The element count at which ``rows``' buffers fill their cache, where within their sizes."""
    if not rows or not rows[0].get("cache_bytes"):
        return None
    full = rows[0]["cache_bytes"] * rows[0]["n"] / rows[0]["bytes_touched"]
    return full if min(r["n"] for r in rows) <= full <= max(r["n"] for r in rows) else None


def plot(rows, path):
    """GB/s against size, one line per backend, one panel per variant and mode (up to four panels
    a row), the roofline dashed, the size at which the buffers fill the cache dotted.

    Raises ``plotting.MatplotlibMissing`` where matplotlib is not installed.
    """
    measured = [dict(r, variant=f"{r['variant']} {_key(r)[3]}") for r in rows if r["skipped"] is None]
    variants = list(dict.fromkeys(r["variant"] for r in measured))
    panels = max(1, len(variants))
    across = min(panels, 4)
    down = -(-panels // across)
    fig = plotting.figure((5 * across, 4 * down), layout=None)  # laid out by tight_layout below
    axes = fig.subplots(down, across, squeeze=False, sharey=True)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    for ax, variant in zip(axes.flat, variants):
        for device in dict.fromkeys(r["device"] for r in measured):
            roof = [r for r in measured if r["variant"] == variant and r["device"] == device
                    and r["backend"] in ("numba", "cupy") and r["roofline_gbps"]]
            if roof:
                ax.plot([r["n"] for r in roof], [r["roofline_gbps"] for r in roof], "k--",
                        label=f"same-traffic kernel ({device})")
            here = [r for r in measured if r["variant"] == variant and r["device"] == device]
            full = _cache_full(here)
            if full is not None:  # where the buffers stop fitting in the cache
                ax.axvline(full, color="gray", ls=":",
                           label=f"{device} cache full ({cache.mib(here[0]['cache_bytes'])})")
        for backend in dict.fromkeys(r["backend"] for r in measured):
            mine = [r for r in measured if r["variant"] == variant and r["backend"] == backend]
            ax.plot([r["n"] for r in mine], [r["gbps"] for r in mine], "o-", label=backend)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(variant)
        ax.set_xlabel("elements")
        ax.grid(True, which="both", alpha=0.3)
    for row_axes in axes:
        row_axes[0].set_ylabel("GB/s (fused step's bytes)")
    axes[0][across - 1].legend(fontsize=7)
    fig.tight_layout()
    plotting.save(fig, path)
