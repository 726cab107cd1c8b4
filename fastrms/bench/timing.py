"""Timing: warm up, then the median of many samples; small calls are looped inside a sample.

A ``clock(step, inner, sync)`` times one sample of ``inner`` calls: ``_host_clock`` with
``time.perf_counter``, ``event_clock`` with CUDA events for GPU runners.
"""

import statistics
import time

MIN_SAMPLE_S = 2e-3  # a sample shorter than this is dominated by the clock's own overhead


def median_seconds(step, repeat, sync=None, clock=None):
    """Median seconds per call of ``step()`` over ``repeat`` samples.

    ``sync`` (a GPU synchronisation) runs before the clock is read at either end of a sample;
    ``clock`` replaces ``time.perf_counter`` (``event_clock`` on a GPU).
    """
    sync = sync or (lambda: None)
    clock = clock or _host_clock
    step()  # warm-up: compile, allocate, fault the pages in
    sync()
    once = clock(step, 1, sync)
    inner = max(1, int(MIN_SAMPLE_S / max(once, 1e-9)))
    # A long call's calibration run is already a sample: big sizes cost one call less.
    samples = [once] if inner == 1 else []
    samples += [clock(step, inner, sync) / inner for _ in range(repeat - len(samples))]
    return statistics.median(samples)


def _host_clock(step, inner, sync):
    sync()
    start = time.perf_counter()
    for _ in range(inner):
        step()
    sync()
    return time.perf_counter() - start


def event_clock(cuda):
    """A clock for GPU steps: two CUDA events on the current stream around the ``inner`` calls.

    ``cuda`` is ``cupy.cuda`` (or a stand-in with ``Event`` and ``get_elapsed_time``). The time is
    the device's, from the start event to the end of the last kernel: the host's launch overhead
    counts only where launches cannot keep the device busy (small sizes). The host waits on the
    end event alone, which drains the stream, so ``sync`` is not called.
    """

    def clock(step, inner, sync):
        start, end = cuda.Event(), cuda.Event()
        start.record()
        for _ in range(inner):
            step()
        end.record()
        end.synchronize()
        return cuda.get_elapsed_time(start, end) / 1e3  # milliseconds -> seconds

    return clock
