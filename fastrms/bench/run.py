"""Run the benchmark grid: blocks of backends × variants × sizes × modes, each row next to its
roofline."""

import sys
from typing import NamedTuple

from . import cache, modes as M, runners, timing
from .traffic import VARIANTS, bytes_per_element, bytes_touched, gbps, ratio

FULL_SIZES = tuple(2**k for k in range(10, 27, 2))  # 2¹⁰ … 2²⁶
QUICK_SIZES = (2**10, 2**16, 2**22, 2**26)
QUICK_VARIANTS = ("plain", "momentum+centered")
# The mixed-precision block of a default run: the modes of ``modes.MIXED`` beyond the float32
# step (which the first block has), on the plain variant, the fastrms backends that run them.
MIXED_MODES = tuple(m for m in M.MIXED if m != "float32")
MIXED_VARIANTS = ("plain",)
MIXED_BACKENDS = ("numba", "cupy")
QUICK_MIXED_SIZES = (2**22, 2**26)


class Block(NamedTuple):
    """One part of a run: every backend × variant × size × mode of it."""
    sizes: tuple
    variants: tuple
    backends: tuple
    modes: tuple  # mode names or ``modes.Mode``


def plan(quick=False, sizes=None, variants=None, backends=None, modes=None, dtype=None):
    """The blocks of a ``fastrms bench`` run from its options (None: not given).

    With ``modes`` (or ``dtype``, a mode of one dtype): one block, those modes. Without either:
    the float32 block as before (``--quick``: ``QUICK_SIZES`` × ``QUICK_VARIANTS``; else
    ``FULL_SIZES`` × every variant; every backend), then the mixed-precision block
    (``MIXED_MODES`` × ``MIXED_VARIANTS`` on ``MIXED_BACKENDS``; ``--quick`` at
    ``QUICK_MIXED_SIZES``). Given sizes, variants and backends apply to both blocks.
    """
    first = Block(sizes or (QUICK_SIZES if quick else FULL_SIZES),
                  variants or (QUICK_VARIANTS if quick else tuple(VARIANTS)),
                  backends or runners.ALL_BACKENDS, tuple(modes or (dtype or "float32",)))
    if modes or dtype:
        return [first]
    mixed = Block(sizes or (QUICK_MIXED_SIZES if quick else FULL_SIZES),
                  variants or MIXED_VARIANTS, backends or MIXED_BACKENDS, MIXED_MODES)
    return [first, mixed]


def run_blocks(blocks, repeat=11, progress=None, caches=None):
    """The rows of every block, in order, under one progress bar; each ``+clip`` row then gets
    its ratios to the same mode's unclipped row (``add_clip_ratios``)."""
    total = sum(len(b.sizes) * len(b.variants) * len(b.backends) * len(b.modes) for b in blocks)
    if progress:
        progress(0, total, "")  # the bar shows, and its clock starts, before the first group
    done = []

    def step(count, _, what):
        if progress:
            progress(len(done) + count, total, what)

    for block in blocks:
        done += run(*block, repeat=repeat, progress=step, caches=caches, ratios=False)
    return add_clip_ratios(done)


def run(sizes, variants, backends, modes="float32", repeat=11, progress=None, caches=None,
        ratios=True):
    """All rows, as dicts of the JSON schema (``skipped`` is None or the reason).

    ``modes``: one mode name (a dtype: "float32") or several (``fastrms.bench.modes``). For each
    variant and size, the modes one after the other, each over every backend: a clipped mode
    right after its unclipped one where both are listed so. ``caches``: {device:
    ``cache.Cache``}, each device's last-level cache (read from the machine where None), which
    says whether a row is ``cache_resident``. ``ratios``: ``add_clip_ratios`` at the end.
    """
    modes = M.expand([modes] if isinstance(modes, (str, M.Mode)) else modes)
    if caches is None:
        caches = cache.last_level(runners.device_of(b) for b in backends)
    rows = []
    total = len(sizes) * len(variants) * len(backends) * len(modes)
    if progress:
        progress(0, total, "")
    for variant in variants:
        for n in sizes:
            values = runners.draws(n)
            for mode in modes:
                group = _group(backends, variant, mode, n, values, repeat)
                _add_speedups(group)
                for row in group:
                    _add_cache(row, caches)
                rows.extend(group)
                if progress:
                    progress(len(rows), total, f"{variant} {mode.name} n={n}")
            del values
    return add_clip_ratios(rows) if ratios else rows


def _group(backends, variant, mode, n, values, repeat):
    """One row per backend for ``mode``, over buffers made once for all of them."""
    try:
        host = runners.host_buffers(variant, mode, n, values=values)
    except runners.Skip as why:
        return [dict(_row(b, variant, mode, n), skipped=str(why), device=runners.device_of(b))
                for b in backends]
    return [_measure(b, variant, mode, n, host, repeat) for b in backends]


def _row(backend, variant, mode, n):
    return dict(backend=backend, device=None, variant=variant, mode=mode.name, dtype=mode.dtype,
                n=n, bytes_per_element=bytes_per_element(variant, mode), median_s=None,
                gbps=None, roofline_gbps=None, roofline_fraction=None, roofline_skipped=None,
                speedup_vs_torch=None, speedup_vs_numpy=None, unclipped_mode=None,
                time_vs_unclipped=None, bytes_vs_unclipped=None,
                roofline_time_vs_unclipped=None, skipped=None)


def _measure(backend, variant, mode, n, host, repeat):
    row = _row(backend, variant, mode, n)
    try:
        runner = runners.prepare(backend, variant, mode, n, host)
        row["device"] = runner.device
        # The roofline on the same device, measured right before the row it judges (none where
        # it cannot run there: the row is still measured, with the reason).
        try:
            roof = runners.roofline_runner(runner.device, variant, mode, n, host)
            roof_s = timing.median_seconds(roof.step, repeat, roof.sync, roof.clock)
        except runners.Skip as why:
            roof_s, row["roofline_skipped"] = None, str(why)
        seconds = timing.median_seconds(runner.step, repeat, runner.sync, runner.clock)
    except runners.Skip as why:
        row["skipped"] = str(why)
        row["device"] = row["device"] or runners.device_of(backend)
        return row
    row.update(median_s=seconds, gbps=gbps(variant, mode, n, seconds))
    if roof_s is not None:
        row.update(roofline_gbps=gbps(variant, mode, n, roof_s), roofline_fraction=roof_s / seconds)
    return row


def add_clip_ratios(rows):
    """Each measured ``+clip`` row: its time and bytes per element over those of the row of the
    same backend, variant, size and mode without ``+clip`` measured last before it (or, where
    none was, first after it), in ``time_vs_unclipped`` and ``bytes_vs_unclipped``, and the time
    ratio of their same-traffic loops in ``roofline_time_vs_unclipped``: what one more read of
    the grads costs on this machine (a read-only pass need not move bytes as fast as the step's
    loop does). Clipping and scaling cost at most one extra read of the grads where the time
    ratio is at most that (and the bytes ratio, 24/20 for float32, where reads and writes move
    alike). Returns ``rows``."""
    def key(row, mode):
        return row["backend"], row["variant"], row["n"], mode

    for i, row in enumerate(rows):
        mode = M.parse(row.get("mode", row["dtype"]))
        if not mode.clip or row["skipped"] is not None:
            continue
        base = key(row, mode.unclipped().name)
        before = [r for r in rows[:i] if key(r, r.get("mode")) == base and r["median_s"]]
        after = [r for r in rows[i + 1:] if key(r, r.get("mode")) == base and r["median_s"]]
        plain = before[-1] if before else after[0] if after else None
        if plain is not None:
            row.update(unclipped_mode=plain["mode"],
                       time_vs_unclipped=ratio(row["median_s"], plain["median_s"]),
                       bytes_vs_unclipped=ratio(row["bytes_per_element"], plain["bytes_per_element"]),
                       roofline_time_vs_unclipped=ratio(_roofline_s(row), _roofline_s(plain)))
    return rows


def _roofline_s(row):
    """Seconds of a row's same-traffic loop(s), from its roofline GB/s (None where it has none)."""
    roof = row.get("roofline_gbps")
    return row["bytes_per_element"] * row["n"] / (roof * 1e9) if roof else None


def _add_speedups(group):
    by_backend = {r["backend"]: r for r in group}
    numpy_s = by_backend.get("numpy", {}).get("median_s")
    for row in group:
        torch_row = by_backend.get(runners.TORCH_DEFAULT[row["device"]], {})
        row["speedup_vs_torch"] = ratio(torch_row.get("median_s"), row["median_s"])
        row["speedup_vs_numpy"] = ratio(numpy_s, row["median_s"])


def _add_cache(row, caches):
    """The bytes a step touches against the device's last-level cache (None where unknown)."""
    size = caches.get(row["device"], cache.Cache(None, "not read")).bytes
    touched = bytes_touched(row["variant"], row["mode"]) * row["n"]
    row.update(bytes_touched=touched, cache_bytes=size,
               cache_resident=None if size is None else touched <= size)


def progress_bar(stream=sys.stderr):
    """A ``progress(done, total, what)`` callback drawing a tqdm bar on ``stream``; None when
    ``stream`` is not a terminal (a log file or a pipe gets no carriage-return noise)."""
    if not stream.isatty():
        return None
    from tqdm import tqdm  # only a terminal draws one

    bar = None

    def show(done, total, what):
        nonlocal bar
        if bar is None:  # run() calls first with done = 0 and the total
            bar = tqdm(total=total, file=stream, unit="row", dynamic_ncols=True)
        bar.set_postfix_str(what, refresh=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return show
