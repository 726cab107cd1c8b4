"""``fastrms bench`` output that must not mislead: cache-resident rows, skip reasons, an early
``--plot`` check and the ``--sizes`` forms. No test here measures a speed."""

import re
import sys
from types import SimpleNamespace

import pytest

from fastrms.bench import cache, cli, report, run, runners
from fastrms.cli import build_parser, main
from fastrms.dispatch import BackendInfo


def row(fraction, resident, n=2**20, device="cpu", cache_bytes=480 << 20):
    return dict(backend="numba", device=device, variant="plain", dtype="float32", n=n,
                median_s=1e-3, gbps=20.0, roofline_fraction=fraction, speedup_vs_torch=None,
                speedup_vs_numpy=None, skipped=None, bytes_touched=12 * n,
                cache_bytes=cache_bytes, cache_resident=resident)


def roofline_cells(text):
    """The roofline cell of every table row: the one number with two decimals (GB/s has one),
    its mark attached."""
    rows = [line for line in text.splitlines()[2:] if re.match(r"\w+\s+(cpu|cuda)\s", line)]
    return [re.search(r"\s(\d+\.\d\d[*!]?)(\s|$)", line)[1] for line in rows]


# ---------------------------------------------------------------- cache-resident rows


def test_rows_in_the_cache_are_marked_with_a_legend():
    rows = [row(1.30, True), row(1.83, True, n=2**22), row(0.97, False, n=2**26),
            row(0.62, True, n=2**10)]
    text = report.table(rows)
    assert roofline_cells(text) == ["1.30*", "1.83*", "0.97", "0.62*"]
    legend = [line for line in text.splitlines() if line.startswith("* ")]
    assert len(legend) == 1 and "last-level cache (cpu 480 MiB)" in legend[0]
    assert "not memory" in legend[0]
    assert not any(line.startswith("! ") for line in text.splitlines())


def test_no_fraction_above_1_is_shown_without_a_mark():
    rows = [row(1.02, False, n=2**26), row(1.004, False, n=2**26), row(1.30, None, cache_bytes=None)]
    text = report.table(rows)
    assert roofline_cells(text) == ["1.02!", "1.00", "1.30!"]
    legend = [line for line in text.splitlines() if line.startswith("! ")]
    assert len(legend) == 1 and "timing noise" in legend[0] and "not known to fit" in legend[0]
    for cell in roofline_cells(report.table([row(f / 100, r) for f in range(90, 200, 7)
                                             for r in (True, False, None)])):
        assert cell[-1] in "*!" or float(cell) <= 1


def test_rows_record_whether_they_fit_in_the_cache():
    fits = cache.Cache(64 * 12, "a test")  # plain float32 touches 12 bytes per element
    rows = run.run((64, 100), ("plain",), ("numba",), repeat=1, caches={"cpu": fits})
    assert [(r["n"], r["bytes_touched"], r["cache_bytes"], r["cache_resident"]) for r in rows] == [
        (64, 768, 768, True), (100, 1200, 768, False)]
    rows = run.run((64,), ("plain",), ("numba",), repeat=1, caches={"cpu": cache.Cache(None, "?")})
    assert rows[0]["cache_resident"] is None and rows[0]["median_s"] > 0


def _sysfs(root, cpus, sizes=(("1", "Data", "48K"), ("1", "Instruction", "32K"),
                                ("2", "Unified", "2048K"), ("3", "Unified", "307200K"))):
    """A fake /sys/devices/system/cpu: {cpu: shared_cpu_list of its last level}."""
    for cpu, shared in cpus.items():
        for i, (level, kind, size) in enumerate(sizes):
            index = root / f"cpu{cpu}" / "cache" / f"index{i}"
            index.mkdir(parents=True)
            for name, text in (("level", level), ("type", kind), ("size", size),
                               ("shared_cpu_list", shared if i == len(sizes) - 1 else str(cpu))):
                (index / name).write_text(text + "\n")
    return root


def test_last_level_cache_from_sysfs(tmp_path):
    one = _sysfs(tmp_path / "one", {0: "0-1", 1: "0-1"})
    assert cache.from_sysfs(str(one)) == cache.Cache(300 << 20, f"L3 from {one}")
    two = _sysfs(tmp_path / "two", {0: "0-1", 1: "0-1", 2: "2-3", 3: "2-3"})  # two sockets
    assert cache.from_sysfs(str(two)).bytes == 600 << 20
    assert cache.from_sysfs(str(tmp_path / "none")) is None


def test_cache_size_fallbacks(monkeypatch):
    monkeypatch.setattr(cache, "from_sysfs", lambda: None)
    monkeypatch.setattr(cache, "COMMANDS", (("no-such-command-here",),
                                            (sys.executable, "-c", "print(0)"),
                                            (sys.executable, "-c", "print(1234)")))
    assert cache.cpu() == cache.Cache(1234, f"{sys.executable} -c print(1234)")
    monkeypatch.setattr(cache, "COMMANDS", (("no-such-command-here",),))
    assert cache.cpu().bytes is None


# ---------------------------------------------------------------- skip reasons


def fake_torch(cuda, device):
    return SimpleNamespace(__version__="9.9.9", version=SimpleNamespace(cuda=cuda, hip=None),
                           cuda=SimpleNamespace(is_available=lambda: device))


@pytest.mark.parametrize("torch,cupy,reason", [
    (None, True, "torch is not installed"),
    (fake_torch(None, False), True, "torch has no CUDA: this build (9.9.9) is CPU-only"),
    (fake_torch("12.8", False), True, "no CUDA device: torch 9.9.9 (CUDA 12.8) sees none"),
    (fake_torch("12.8", True), False, "CuPy not usable (it times these rows and runs their "
                                      "roofline): cannot import fastrms.cuda.backend: no cupy"),
], ids=["no torch", "cpu-only torch", "no device", "no cupy"])
def test_torch_cuda_rows_say_their_own_reason(torch, cupy, reason, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", torch)
    info = BackendInfo("cupy", "cuda", cupy, "" if cupy else "cannot import fastrms.cuda.backend: no cupy")
    monkeypatch.setattr(runners, "backend_info", lambda name: info)
    for backend in ("torch-cuda", "torch-cuda-foreach"):
        with pytest.raises(runners.Skip) as skip:
            runners.prepare(backend, "plain", "float32", 8, runners.host_buffers("plain", "float32", 8))
        assert str(skip.value).startswith(reason)


# ---------------------------------------------------------------- outputs checked first


@pytest.fixture
def no_measuring(monkeypatch):
    """Fail the test if the command gets as far as measuring anything."""
    def measured(*args, **kwargs):
        raise AssertionError("the command measured before refusing")

    for module, name in ((run, "run"), (runners, "prepare"), (report, "machine")):
        monkeypatch.setattr(module, name, measured)


def test_plot_without_matplotlib_is_refused_before_measuring(tmp_path, monkeypatch, capsys,
                                                             no_measuring):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(SystemExit, match=r"pip install 'fastrms\[plots\]', or run without --plot"):
        main(["bench", "--sizes", "2^6", "--backends", "numpy", "--plot", str(tmp_path / "r.png")])
    assert capsys.readouterr().out == ""


def test_output_into_a_missing_folder_is_refused_before_measuring(tmp_path, no_measuring):
    with pytest.raises(SystemExit, match="no folder"):
        main(["bench", "--sizes", "2^6", "--json", str(tmp_path / "nowhere" / "r.json")])


# ---------------------------------------------------------------- --sizes


def test_sizes_in_every_form():
    args = build_parser().parse_args(["bench", "--sizes", "1e6,1_000_000,2^20, 64 ,1.5e3,2.5E+3"])
    assert args.sizes == (10**6, 10**6, 2**20, 64, 1500, 2500)


@pytest.mark.parametrize("bad", ["1.5", "1.25e1", "1e-3", "0", "0e5", "-5", "2^-1", "2^1.5", "abc",
                                 "", "1__0", "_1", "inf", "nan", "2^41"])
def test_sizes_refuse_what_is_no_whole_positive_count(bad, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["bench", f"--sizes=2^10,{bad}"])
    assert exit.value.code == 2
    assert f"argument --sizes: {bad!r} is not a whole number of elements" in capsys.readouterr().err
    with pytest.raises(Exception, match="whole number"):
        cli.parse_size(bad)
