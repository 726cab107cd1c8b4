"""``fastrms bench``'s mixed-precision modes: names, bytes per element, the grid, the rooflines,
the clipped rows' ratios and the report. Tiny sizes; no test here asserts a speed."""

import json

import numpy as np
import pytest

from fastrms.bench import modes, report, run, runners
from fastrms.bench.traffic import bytes_per_element, bytes_touched
from fastrms.cli import build_parser, main

pytest.importorskip("ml_dtypes")  # bfloat16


@pytest.mark.parametrize("mode,variant,expected", [
    ("float32", "plain", 20),
    ("float32+clip", "plain", 24),  # one more read of the float32 grads
    ("bfloat16+master", "plain", 20),  # master r+w 8, param written 2, grad 2, square_avg 8
    ("bfloat16+master+clip", "plain", 22),
    ("bfloat16+stochastic", "plain", 14),  # param r+w 4, grad 2, square_avg 8
    ("bfloat16", "plain", 14),
    ("float16", "plain", 14),
    ("float16+master+stochastic", "plain", 20),
    ("bfloat16+master", "momentum+centered", 2 + 8 + 2 + 3 * 8),
    ("float64+clip", "plain", 40 + 8),
])
def test_bytes_per_element_per_mode(mode, variant, expected):
    assert bytes_per_element(variant, mode) == expected
    assert bytes_per_element(variant, modes.parse(mode)) == expected


def test_bytes_touched_counts_the_master_once():
    assert bytes_touched("plain", "bfloat16+master") == 2 + 2 + 4 + 4
    assert bytes_touched("plain", "bfloat16+master+clip") == 12  # the grads are the same buffer
    assert bytes_touched("plain", "float16") == 2 + 2 + 4


def test_mode_names():
    assert modes.parse("bfloat16+clip+master").name == "bfloat16+master+clip"
    assert modes.parse("float16+stochastic").rounding == "stochastic"
    assert not modes.parse("float16").mixed and modes.parse("float32+clip").mixed
    assert modes.parse("bfloat16+master+clip").unclipped().name == "bfloat16+master"
    assert [m.name for m in modes.expand(["float16", "mixed"])] == [
        "float16", "float32", "float32+clip", "bfloat16+master", "bfloat16+master+clip",
        "bfloat16+stochastic"]
    for bad, why in (("float32+master", "need a half dtype"), ("float64+stochastic", "half"),
                     ("int8", "unknown dtype"), ("float16+fast", "unknown fast")):
        with pytest.raises(ValueError, match=why):
            modes.parse(bad)


def test_the_cli_takes_modes_or_a_dtype(capsys):
    args = build_parser().parse_args(["bench", "--modes", "mixed,float16+stochastic"])
    assert [m.name for m in args.modes] == list(modes.MIXED) + ["float16+stochastic"]
    for argv, message in ((["--modes", "float32+master"], "need a half dtype"),
                          (["--dtype", "float16", "--modes", "float16"], "not allowed with")):
        with pytest.raises(SystemExit) as exit:
            main(["bench", *argv])
        assert exit.value.code == 2 and message in capsys.readouterr().err


def test_the_default_run_adds_the_mixed_block():
    quick = run.plan(quick=True)
    assert [b.modes for b in quick] == [("float32",), run.MIXED_MODES]
    mixed = quick[1]
    assert mixed.sizes == (2**22, 2**26) and mixed.variants == ("plain",)
    assert mixed.backends == ("numba", "cupy")
    assert set(modes.MIXED) == {"float32", *run.MIXED_MODES}
    assert run.plan()[1].sizes == run.FULL_SIZES
    given = run.plan(quick=True, sizes=(64,), backends=("numpy",))
    assert all(b.sizes == (64,) and b.backends == ("numpy",) for b in given)
    assert len(run.plan(modes=("float16",))) == len(run.plan(dtype="float16")) == 1


@pytest.fixture(scope="module")
def mixed_rows():
    return run.run((64, 100), ("plain",), ("numpy", "numba", "torch"), ("mixed",), repeat=1)


def test_every_mode_runs_with_its_roofline(mixed_rows):
    assert len(mixed_rows) == 2 * 3 * len(modes.MIXED)
    for row in mixed_rows:
        assert row["mode"] in modes.MIXED
        assert row["bytes_per_element"] == bytes_per_element("plain", row["mode"])
        if row["backend"] == "torch" and modes.parse(row["mode"]).mixed:
            assert "torch.optim.RMSprop keeps no float32 master" in row["skipped"]
            continue
        assert row["skipped"] is None, row
        assert row["median_s"] > 0 and row["roofline_gbps"] > 0 and row["roofline_fraction"] > 0


def test_clipped_rows_carry_their_ratios(mixed_rows):
    by_key = {(r["backend"], r["n"], r["mode"]): r for r in mixed_rows}
    for (backend, n, mode), row in by_key.items():
        if backend == "torch" or "+clip" not in mode:
            assert row["time_vs_unclipped"] is None
            continue
        plain = by_key[backend, n, mode.replace("+clip", "")]
        assert row["unclipped_mode"] == plain["mode"]
        assert row["time_vs_unclipped"] == pytest.approx(row["median_s"] / plain["median_s"])
        assert row["bytes_vs_unclipped"] == pytest.approx(24 / 20 if mode == "float32+clip"
                                                          else 22 / 20)
        roof_s = [r["bytes_per_element"] * n / r["roofline_gbps"] for r in (row, plain)]
        assert row["roofline_time_vs_unclipped"] == pytest.approx(roof_s[0] / roof_s[1])


def test_clip_ratios_pair_with_the_nearest_unclipped_row():
    def row(mode, seconds, n=64):
        return dict(backend="numba", variant="plain", mode=mode, dtype=mode.split("+")[0], n=n,
                    median_s=seconds, bytes_per_element=bytes_per_element("plain", mode),
                    skipped=None)

    rows = run.add_clip_ratios([row("float32", 1.0), row("float32", 2.0), row("float32+clip", 3.0),
                                row("float16+clip", 1.0), row("float16", 4.0),
                                row("float32+clip", 1.0, n=100)])
    assert rows[2]["time_vs_unclipped"] == 1.5  # the last measured before it
    assert rows[3]["time_vs_unclipped"] == 0.25  # none before: the first after it
    assert rows[3]["bytes_vs_unclipped"] == pytest.approx(16 / 14)
    assert "time_vs_unclipped" not in rows[5]  # no unclipped row of that size


def test_report_shows_modes_bytes_rooflines_and_clip_ratios(mixed_rows):
    text = report.table(mixed_rows)
    header = text.splitlines()[0].split()
    assert header[:4] == ["backend", "device", "variant", "mode"]
    for column in ("B/el", "roofline", "clip", "roof", "bytes"):
        assert column in header
    line = next(ln for ln in text.splitlines() if "numba" in ln and "bfloat16+master+clip" in ln)
    assert " 22 " in line and line.rstrip().endswith("1.10x")
    assert any(ln.startswith("clip time: ") for ln in text.splitlines())
    plain = [r for r in mixed_rows if "+clip" not in r["mode"]]
    assert "clip time" not in report.table(plain)


def test_the_json_has_the_mode_fields(mixed_rows, tmp_path):
    path = tmp_path / "mixed.json"
    report.save(path, mixed_rows, {"cpu": "test"})
    rows = json.loads(path.read_text())["results"]
    clipped = next(r for r in rows if r["mode"] == "float32+clip" and r["backend"] == "numba")
    for field in ("mode", "dtype", "bytes_per_element", "gbps", "roofline_gbps",
                  "roofline_fraction", "time_vs_unclipped", "bytes_vs_unclipped",
                  "roofline_time_vs_unclipped"):
        assert clipped[field] is not None, field
    assert clipped["bytes_per_element"] == 24 and clipped["dtype"] == "float32"
    old = {k: v for k, v in clipped.items() if k != "mode"}  # saved before modes: its dtype
    assert report._key(old)[3] == "float32"


def test_same_traffic_loops_write_what_the_step_writes():
    x, g, s, b, a = runners.host_buffers("momentum+centered", "bfloat16+master", 100)
    w = x.astype(np.float32)
    s[:] = 3  # the loops' s·0.5 + 0.5 keeps 1
    before = [v.copy() for v in (x, g, s, b, a, w)]
    from fastrms.cpu import same_traffic

    same_traffic.step_pass(x, g, s, b, a, w)()
    after = (x, g, s, b, a, w)
    for name, old, new in zip("xgsbaw", before, after):
        changed = not np.array_equal(old.view(np.uint8), new.view(np.uint8))
        assert changed == (name != "g"), name
    # with a master the param is only written: its new bits do not depend on its old ones
    assert np.array_equal(x.view(np.uint16), (g.view(np.uint16) * 3 + 3).astype(np.uint16))
    x2, g2, s2, _, _ = runners.host_buffers("plain", "float16", 100)
    old = x2.copy()
    same_traffic.step_pass(x2, g2, s2)()
    assert np.array_equal(x2.view(np.uint16), (old.view(np.uint16) * 3 + g2.view(np.uint16))
                          .astype(np.uint16))


def test_the_clip_roofline_reads_the_grads_in_whole_rows():
    from fastrms.cpu import same_traffic

    for n, dtype in ((64, np.uint16), (100, np.uint16), (32, np.float32), (10, np.float32)):
        same_traffic.grad_read(np.ones(n, dtype))()  # a last partial row is left out
    runner = runners.roofline_runner("cpu", "plain", "bfloat16+master+clip", 100,
                                     runners.host_buffers("plain", "bfloat16+master+clip", 100))
    assert len(runner.step()) == 2  # the step's pass, then the read of the grads
