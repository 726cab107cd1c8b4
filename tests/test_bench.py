"""The benchmark's own logic, on tiny sizes; no test here asserts a speed."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest

import fastrms
from fastrms.bench import report, run, runners, timing
from fastrms.bench.traffic import bytes_per_element, gbps
from fastrms.cli import main
from fastrms.dispatch import backend_info

SCHEMA = {"backend", "device", "variant", "mode", "dtype", "n", "bytes_per_element", "median_s",
          "gbps", "roofline_gbps", "roofline_fraction", "roofline_skipped", "speedup_vs_torch",
          "speedup_vs_numpy", "unclipped_mode", "time_vs_unclipped", "bytes_vs_unclipped",
          "roofline_time_vs_unclipped", "skipped", "bytes_touched", "cache_bytes", "cache_resident"}


@pytest.mark.parametrize(
    "variant,dtype,expected",
    [("plain", "float32", 20), ("momentum", "float32", 28), ("centered", "float32", 28),
     ("momentum+centered", "float32", 36), ("plain", "float64", 40),
     ("plain", "float16", 3 * 2 + 2 * 4), ("momentum+centered", "float16", 3 * 2 + 6 * 4)],
)
def test_bytes_per_element(variant, dtype, expected):
    assert bytes_per_element(variant, dtype) == expected


def test_gbps():
    assert gbps("plain", "float32", 10**9, 20.0) == pytest.approx(1.0)


def test_median_seconds_loops_short_calls_and_takes_the_median():
    calls = []
    fake_times = iter([1e-4] + [5e-3, 1e-2, 2e-3])  # calibration, then three samples of 20 calls

    def clock(step, inner, sync):
        calls.append(inner)
        return next(fake_times) * (inner if inner > 1 else 1)

    result = timing.median_seconds(lambda: None, repeat=3, clock=clock)
    assert calls == [1, 20, 20, 20]  # 2 ms / 0.1 ms = 20 calls per sample
    assert result == pytest.approx(5e-3)


class FakeCuda:
    """``cupy.cuda`` for ``timing.event_clock``: events stamp a clock that each step moves 0.5 ms."""

    def __init__(self):
        self.now_ms, self.waited = 0.0, []
        cuda = self

        class Event:
            def record(self):
                self.ms = cuda.now_ms

            def synchronize(self):
                cuda.waited.append(self)

        self.Event = Event

    def step(self):
        self.now_ms += 0.5

    def get_elapsed_time(self, start, end):
        assert end in self.waited  # read only once the host has waited for the end event
        return end.ms - start.ms


def test_event_clock_times_on_the_device_in_seconds():
    cuda = FakeCuda()
    clock = timing.event_clock(cuda)
    assert clock(cuda.step, 4, sync=None) == pytest.approx(2e-3)
    # 0.5 ms per call: 4 calls per 2 ms sample; the median per call, in seconds
    cuda.now_ms = 0.0
    assert timing.median_seconds(cuda.step, repeat=3, clock=clock) == pytest.approx(5e-4)
    assert cuda.now_ms == 0.5 * (1 + 1 + 3 * 4)  # warm-up, calibration, three samples


def test_long_calls_reuse_the_calibration_as_a_sample():
    calls = []

    def clock(step, inner, sync):
        calls.append(inner)
        return 0.5

    assert timing.median_seconds(lambda: None, repeat=3, clock=clock) == 0.5
    assert calls == [1, 1, 1]


@pytest.fixture(scope="module")
def tiny_rows():
    return run.run(sizes=(64, 100), variants=("plain", "momentum+centered"),
                   backends=("numpy", "numba", "torch", "cupy"), repeat=2)


def test_rows_follow_the_schema(tiny_rows):
    assert len(tiny_rows) == 2 * 2 * 4
    for row in tiny_rows:
        assert SCHEMA <= set(row)
        if row["skipped"] is None:
            assert row["median_s"] > 0 and row["gbps"] > 0 and row["roofline_fraction"] > 0
            assert row["gbps"] == pytest.approx(gbps(row["variant"], row["dtype"], row["n"], row["median_s"]))


def test_speedups_divide_by_the_right_rows(tiny_rows):
    for n in (64, 100):
        group = {r["backend"]: r for r in tiny_rows if r["n"] == n and r["variant"] == "plain"}
        assert group["numpy"]["speedup_vs_numpy"] == pytest.approx(1.0)
        numba = group["numba"]
        assert numba["speedup_vs_numpy"] == pytest.approx(group["numpy"]["median_s"] / numba["median_s"])
        if group["torch"]["skipped"] is None:
            assert numba["speedup_vs_torch"] == pytest.approx(group["torch"]["median_s"] / numba["median_s"])


def test_unusable_backends_are_listed_as_skipped_with_the_reason(tiny_rows):
    cupy = backend_info("cupy")
    cupy_rows = [r for r in tiny_rows if r["backend"] == "cupy"]
    if cupy.usable:
        pytest.skip("a GPU is usable here")
    assert all(r["skipped"] == cupy.reason and r["median_s"] is None for r in cupy_rows)
    assert f"skipped cupy (4 rows): {cupy.reason}" in report.table(tiny_rows)


def test_table_has_one_line_per_measured_row(tiny_rows):
    lines = report.table(tiny_rows).splitlines()
    measured = [r for r in tiny_rows if r["skipped"] is None]
    assert lines[0].split()[:3] == ["backend", "device", "variant"]
    rows = [ln for ln in lines[2:] if not ln.startswith(("skipped ", "* ", "! "))]
    assert len(rows) == len(measured)
    legend = report.legend(tiny_rows)  # under the table, before the skipped backends
    assert lines[2 + len(rows):2 + len(rows) + len(legend)] == legend


def test_json_round_trip_and_compare(tiny_rows, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    report.save(a, tiny_rows, {"cpu": "test"})
    faster = [dict(r, gbps=r["gbps"] * 2) if r["gbps"] else r for r in tiny_rows]
    report.save(b, faster, {"cpu": "test"})
    data = report.load(a)
    assert data["machine"] == {"cpu": "test"} and data["results"] == json.loads(a.read_text())["results"]
    text = report.compare(report.load(a), report.load(b))
    measured = [r for r in tiny_rows if r["skipped"] is None]
    assert len(text.splitlines()) == 1 + len(measured)
    assert all(line.endswith("2.00") for line in text.splitlines()[1:])


def test_compare_with_nothing_in_common(tmp_path):
    path = tmp_path / "empty.json"
    report.save(path, [], {})
    assert "no row" in report.compare(report.load(path), report.load(path))


def test_load_refuses_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a fastrms bench JSON"):
        report.load(path)


def test_cli_writes_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    code = main(["bench", "--sizes", "2^6", "--variants", "plain", "--backends", "numpy,numba",
                 "--modes", "float32,bfloat16+master", "--repeat", "1", "--json", str(out),
                 "--plot", str(png)])
    assert code == 0
    results = report.load(out)["results"]
    assert [(r["backend"], r["mode"]) for r in results] == [
        ("numpy", "float32"), ("numba", "float32"), ("numpy", "bfloat16+master"),
        ("numba", "bfloat16+master")]
    assert png.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "numba" in printed and "2^6" in printed


def test_cli_rejects_unknown_names():
    with pytest.raises(SystemExit):
        main(["bench", "--backends", "fortran"])
    with pytest.raises(SystemExit):
        main(["bench", "--variants", "adam"])


def test_progress_bar_is_silent_off_a_terminal(tmp_path):
    with open(tmp_path / "log", "w") as f:
        assert run.progress_bar(f) is None


def test_progress_bar_on_a_terminal_counts_rows():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    show = run.progress_bar(stream)
    for done in (0, 2, 4):
        show(done, 4, f"plain n={done}")
    text = stream.getvalue()
    assert "0/4" in text and "4/4" in text and "plain n=4" in text and text.endswith("\n")


def test_top_level_help_and_errors(capsys):
    for argv in (["-h"], ["bench", "-h"], ["backends", "-h"]):
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 0
    assert "--sizes" in capsys.readouterr().out
    for argv in ([], ["no-such-command"]):
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 2
    assert main(["backends"]) == 0
    assert capsys.readouterr().out.startswith("numpy ")


def test_importing_the_command_loads_no_heavy_library():
    code = ("import sys, fastrms.cli; fastrms.cli.build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'numba', 'torch', 'cupy', 'matplotlib', 'sklearn'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_host_buffers_match_the_variant():
    x, g, s, b, a = runners.host_buffers("momentum", "float32", 10)
    assert b is not None and a is None and x.dtype == np.float32
    assert (s == 1).all()


def test_half_params_get_float32_state_as_every_backend_keeps_it():
    """float16 rows (the cupy backend) need float32 state, else the step refuses them."""
    x, g, s, b, a = runners.host_buffers("momentum+centered", "float16", 10)
    assert x.dtype == g.dtype == np.float16
    assert s.dtype == b.dtype == a.dtype == np.float32
    fastrms.rmsprop_update(x, g, s, momentum_buffer=b, grad_avg=a, momentum=0.9, centered=True,
                           backend="numpy")


def test_rows_without_a_roofline_on_their_device_are_still_measured(monkeypatch):
    """A roofline that cannot run there (e.g. a GPU one for a master): the row is still timed,
    with the reason in the JSON."""
    def no_roofline(*args):
        raise runners.Skip("no roofline here")

    monkeypatch.setattr(runners, "roofline_runner", no_roofline)
    rows = run.run([1024], ["plain"], ["numpy"], "float16", repeat=1)
    assert rows[0]["skipped"] is None and rows[0]["median_s"] > 0
    assert rows[0]["roofline_fraction"] is None and rows[0]["roofline_skipped"] == "no roofline here"
    assert "float16" in report.table(rows)
