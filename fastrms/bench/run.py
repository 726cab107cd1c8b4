"""Run the benchmark grid: every backend × variant × size, each row next to its roofline."""

import sys

from . import cache, runners, timing
from .traffic import bytes_per_element, bytes_touched, gbps, ratio

FULL_SIZES = tuple(2**k for k in range(10, 27, 2))  # 2¹⁰ … 2²⁶
QUICK_SIZES = (2**10, 2**16, 2**22, 2**26)
QUICK_VARIANTS = ("plain", "momentum+centered")


def run(sizes, variants, backends, dtype="float32", repeat=11, progress=None, caches=None):
    """All rows, as dicts of the JSON schema (``skipped`` is None or the reason).

    ``caches``: {device: ``cache.Cache``}, each device's last-level cache (read from the machine
    where None), which says whether a row is ``cache_resident``.
    """
    if caches is None:
        caches = cache.last_level(runners.device_of(b) for b in backends)
    rows = []
    total = len(sizes) * len(variants) * len(backends)
    if progress:
        progress(0, total, "")  # the bar shows, and its clock starts, before the first group
    for variant in variants:
        for n in sizes:
            host = runners.host_buffers(variant, dtype, n)
            group = [_measure(b, variant, dtype, n, host, repeat) for b in backends]
            _add_speedups(group)
            for row in group:
                _add_cache(row, caches)
            rows.extend(group)
            if progress:
                progress(len(rows), total, f"{variant} n={n}")
            del host
    return rows


def _measure(backend, variant, dtype, n, host, repeat):
    row = dict(backend=backend, device=None, variant=variant, dtype=str(dtype), n=n,
               bytes_per_element=bytes_per_element(variant, dtype), median_s=None, gbps=None,
               roofline_gbps=None, roofline_fraction=None, speedup_vs_torch=None,
               speedup_vs_numpy=None, skipped=None)
    try:
        runner = runners.prepare(backend, variant, dtype, n, host)
        row["device"] = runner.device
        # The roofline on the same device, measured right before the row it judges (none where
        # it cannot run there, e.g. float16 on the CPU: the row is still measured).
        try:
            roof = runners.roofline_runner(runner.device, variant, dtype, n, host)
            roof_s = timing.median_seconds(roof.step, repeat, roof.sync, roof.clock)
        except runners.Skip:
            roof_s = None
        seconds = timing.median_seconds(runner.step, repeat, runner.sync, runner.clock)
    except runners.Skip as why:
        row["skipped"] = str(why)
        row["device"] = row["device"] or runners.device_of(backend)
        return row
    row.update(median_s=seconds, gbps=gbps(variant, dtype, n, seconds))
    if roof_s is not None:
        row.update(roofline_gbps=gbps(variant, dtype, n, roof_s), roofline_fraction=roof_s / seconds)
    return row


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
    touched = bytes_touched(row["variant"], row["dtype"]) * row["n"]
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
