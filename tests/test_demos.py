"""``fastrms demo``: the book's numbers, the figures, and the shipped data's checksum."""

import hashlib
import re
import shutil
import struct
import sys
import time

import numpy as np
import pytest

from fastrms.cli import main
from fastrms.demos import DEMOS, DemoUnavailable, _plot, airfoil, data, digits, gamma, trace, weights
from fastrms.dispatch import backend_info

BOOK_TRACE_LINE = "epoch 20, x1: -0.010599, x2: 0.000000"
BOOK_RANGE = (0.240, 0.250)  # ~98% of seeds end here; the least-squares floor is 0.2417
SEEDS = (airfoil.DEFAULT_SEED, 8, 15)


def _backend_params():
    params = []
    for name in ("numpy", "numba", "cupy"):
        marks = [pytest.mark.gpu] if name == "cupy" else []
        if not backend_info(name).usable:
            marks.append(pytest.mark.skip(reason=f"backend {name} is not usable here"))
        params.append(pytest.param(name, marks=marks))
    return params


def run_cli(argv, capsys):
    code = main(["demo", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- trace


def test_trace_prints_the_books_line(capsys):
    code, out, _ = run_cli(["trace"], capsys)
    assert code == 0
    assert out == BOOK_TRACE_LINE + "\n"


def test_trace_goes_through_fastrms_on_every_host_backend():
    lines = set()
    for backend in ("numpy", "numba"):
        x1, x2 = trace.rmsprop_path(backend=backend)[-1]
        lines.add(f"epoch 20, x1: {x1:f}, x2: {x2:f}")
    assert lines == {BOOK_TRACE_LINE}


def test_trace_options(capsys):
    assert trace.rmsprop_path(steps=0).tolist() == [[-5.0, -2.0]]
    # A smaller step size gets less far in the same number of steps.
    assert abs(trace.rmsprop_path(eta=0.1)[-1, 0]) > abs(trace.rmsprop_path()[-1, 0])
    code, out, _ = run_cli(["trace", "--rotated", "--steps", "5", "--eta", "0.2", "--gamma", "0.8"],
                           capsys)
    assert code == 0
    first = out.splitlines()[0]
    x1, x2 = trace.rmsprop_path(0.2, 0.8, 5, rotated=True)[-1]
    assert first == f"epoch 5, x1: {x1:f}, x2: {x2:f}"
    assert "diagonal" in out


# ---------------------------------------------------------------- airfoil


@pytest.mark.parametrize("backend", _backend_params())
@pytest.mark.parametrize("seed", SEEDS)
def test_airfoil_lands_in_the_books_range(seed, backend):
    run = airfoil.train(seed=seed, backend=backend)
    assert BOOK_RANGE[0] <= run.losses[-1] <= BOOK_RANGE[1]


@pytest.mark.parametrize("seed", SEEDS)
def test_airfoil_numpy_and_numba_agree_bit_for_bit(seed):
    a = airfoil.train(seed=seed, backend="numpy")
    b = airfoil.train(seed=seed, backend="numba")
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.params, b.params)


def test_airfoil_records_every_200_examples(capsys):
    run = airfoil.train(epochs=2)
    np.testing.assert_allclose(run.epochs, np.arange(1, 16) * 200 / 1500)
    assert run.losses[0] > run.losses[-1]
    code, out, _ = run_cli(["airfoil", "--backend", "numpy"], capsys)
    assert code == 0
    loss, rest = out.strip().removeprefix("loss: ").split(", ")
    assert float(loss) == round(run.losses[-1], 3) and rest.endswith(" sec/epoch")


def test_unusable_backend_is_a_clear_error(capsys):
    if backend_info("cupy").usable:
        pytest.skip("cupy is usable here")
    code, out, err = run_cli(["airfoil", "--backend", "cupy"], capsys)
    assert code == 1 and "--backend cupy is not usable here" in err and out == ""


# ---------------------------------------------------------------- data


def test_airfoil_data_is_standardised_like_the_book():
    X, y = data.load_airfoil()
    assert X.shape == (1500, 5) and y.shape == (1500,) and X.dtype == np.float32
    raw = np.loadtxt(data.AIRFOIL, delimiter="\t")
    assert raw.shape == (1503, 6)
    expected = ((raw - raw.mean(axis=0)) / raw.std(axis=0))[:1500]
    np.testing.assert_allclose(X, expected[:, :5], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y, expected[:, 5], rtol=1e-6, atol=1e-6)


def test_shipped_file_matches_its_checksum():
    raw = data.AIRFOIL.read_bytes()
    assert hashlib.sha1(raw).hexdigest() == data.AIRFOIL_SHA1
    assert raw.count(b"\r\n") == 1503  # git kept the CRLF line ends (.gitattributes: -text)


def test_missing_data_file_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="missing"):
        data.load_airfoil(path=tmp_path / "airfoil_self_noise.dat")


@pytest.mark.parametrize("damage", ["lf line ends", "one digit", "truncated"])
def test_corrupt_data_file_is_a_clear_error(tmp_path, damage):
    raw = data.AIRFOIL.read_bytes()
    bad = {
        "lf line ends": raw.replace(b"\r\n", b"\n"),
        "one digit": raw.replace(b"800", b"900", 1),
        "truncated": raw[:-100],
    }[damage]
    path = tmp_path / "airfoil_self_noise.dat"
    path.write_bytes(bad)
    with pytest.raises(data.DataError, match=f"corrupt: SHA-1 {hashlib.sha1(bad).hexdigest()}"):
        data.load_airfoil(path=path)
    shutil.copy(data.AIRFOIL, path)  # the intact file in the same place loads
    assert data.load_airfoil(path=path)[0].shape == (1500, 5)


# ---------------------------------------------------------------- weights, gamma


def test_leaky_weights():
    w = weights.leaky_weights(0.9)
    assert len(w) == 40 and w[0] == pytest.approx(0.1)
    assert w.sum() == pytest.approx(1 - 0.9**40)


def test_gamma_one_diverges_and_says_why(capsys):
    code, out, _ = run_cli(["gamma", "--gammas", "0.9", "--etas", "0.01", "0.1", "--epochs", "1"],
                           capsys)
    assert code == 0
    assert "final nan" in out or "final inf" in out
    assert "never leaves s = 0" in out and "learning rate 10" in out
    X, _ = data.load_airfoil()
    assert 0.01 / np.sqrt(gamma.EPS) > gamma.sgd_stability_limit(X)  # the stated reason holds
    grid = gamma.sweep([0.9], [0.01, 0.1], epochs=1)
    assert grid.shape == (1, 2) and np.isfinite(grid).all() and (grid > 0.2417).all()


# ---------------------------------------------------------------- torch demos


def test_concise_without_fastrms_torch_says_so(capsys, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setitem(sys.modules, "fastrms.torch", None)  # as if fastrms/torch/ were absent
    code, _, err = run_cli(["concise", "--epochs", "1"], capsys)
    assert code == 1 and "fastrms.torch.RMSprop is not available" in err


def stand_in_fastrms_torch(monkeypatch, first_step_s=0.0):
    """Install a ``fastrms.torch`` whose ``RMSprop`` is torch's under fastrms.torch.RMSprop's
    signature; its first step in the process sleeps ``first_step_s``, as a compilation would."""
    torch = pytest.importorskip("torch")

    class StandIn(torch.optim.RMSprop):
        compiled = False

        def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                     centered=False, maximize=False):
            super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                             momentum=momentum, centered=centered, maximize=maximize)

        def step(self, closure=None):
            if not StandIn.compiled:
                time.sleep(first_step_s)
                StandIn.compiled = True
            return super().step(closure)

    module = type(sys)("fastrms.torch")
    module.RMSprop = StandIn
    monkeypatch.setitem(sys.modules, "fastrms.torch", module)


def test_concise_plumbing_with_a_stand_in(capsys, monkeypatch, tmp_path):
    """The demo's own code, run now with a stand-in that has fastrms.torch.RMSprop's signature."""
    pytest.importorskip("matplotlib")
    stand_in_fastrms_torch(monkeypatch)
    code, out, _ = run_cli(["concise", "--epochs", "1", "--out", str(tmp_path)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("torch.optim.RMSprop    loss: 0.2")
    assert lines[1].startswith("fastrms.torch.RMSprop  loss: 0.2")
    assert lines[2].startswith("warm-up: a first step on a scratch model, not in sec/epoch")
    assert lines[3] == "largest difference between the two loss curves: 0.0e+00"
    assert "eps outside the root" in out
    assert png_size(tmp_path / "concise.png") == _plot.pixel_size()


def test_concise_times_the_first_step_apart(capsys, monkeypatch):
    """A first step that compiles for 1.5 s shows on the warm-up line, in no epoch's time."""
    stand_in_fastrms_torch(monkeypatch, first_step_s=1.5)
    code, out, _ = run_cli(["concise", "--epochs", "1"], capsys)
    assert code == 0
    seconds = {name: float(sec) for name, sec in
               re.findall(r"^(\S+) +loss: [0-9.]+, ([0-9.]+) sec/epoch$", out, re.M)}
    warm_up = dict(re.findall(r"(\S+RMSprop) ([0-9.]+) s", out.splitlines()[2]))
    assert set(seconds) == set(warm_up) == {"torch.optim.RMSprop", "fastrms.torch.RMSprop"}
    assert float(warm_up["fastrms.torch.RMSprop"]) >= 1.5
    assert seconds["fastrms.torch.RMSprop"] < 1.5  # 150 steps of a 6-parameter model


def test_concise_curves_coincide():
    torch = pytest.importorskip("torch")
    fastrms_torch = pytest.importorskip("fastrms.torch", reason="fastrms.torch is not built yet")
    from fastrms.demos import concise

    theirs = concise.train(lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9), epochs=4)
    ours = concise.train(lambda p: fastrms_torch.RMSprop(p, lr=0.01, alpha=0.9), epochs=4)
    np.testing.assert_allclose(ours.losses, theirs.losses, rtol=1e-4)  # docs/design.md §4 bound
    assert BOOK_RANGE[0] <= ours.losses[-1] <= BOOK_RANGE[1]


def test_digits_fastrms_learns():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn", reason="the digits demo needs scikit-learn")
    train_set, test_set = digits.load_digits(seed=0)
    losses, accuracies, _ = digits.train(lambda p: digits.FastrmsStepper(p, lr=0.003, alpha=0.9),
                                         train_set, test_set, seed=0, epochs=3, hidden=32,
                                         batch_size=32)
    assert losses[-1] < losses[0] / 2
    assert accuracies[-1] > 0.85  # chance is 0.1


def test_digits_without_sklearn_says_so(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DemoUnavailable, match="pip install scikit-learn"):
        digits.load_digits(seed=0)


# ---------------------------------------------------------------- figures and the CLI


def png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


QUICK_ARGV = {
    "weights": [],
    "trace": [],
    "airfoil": ["--epochs", "1"],
    "concise": ["--epochs", "1"],
    "gamma": ["--gammas", "0.9", "0.99", "--etas", "0.01", "--epochs", "1"],
    "digits": ["--epochs", "2", "--hidden", "16"],
}
NEEDS = {"concise": ["torch", "fastrms.torch"], "digits": ["torch", "sklearn"]}


@pytest.mark.parametrize("name", list(DEMOS))
def test_each_demo_writes_its_figure(name, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for module in NEEDS.get(name, []):
        pytest.importorskip(module, reason=f"the {name} demo needs {module}")
    code, out, _ = run_cli([name, "--out", str(tmp_path), *QUICK_ARGV[name]], capsys)
    assert code == 0 and out
    path = tmp_path / f"{name}.png"
    assert path.stat().st_size > 10_000  # axes, lines and text, not an empty canvas
    expected = _plot.pixel_size(_plot.WIDE if name == "digits" else _plot.SIZE)
    assert png_size(path) == expected


def test_all_writes_an_index_of_figures_and_numbers(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, _, _ = run_cli(["all", "--out", str(tmp_path), "--quick"], capsys)
    assert code == 0
    page = (tmp_path / "index.html").read_text()
    for name in DEMOS:
        assert f"<h2>{name}</h2>" in page
        if (tmp_path / f"{name}.png").exists():
            assert f'<img src="{name}.png"' in page
        else:
            assert "skipped:" in page
    assert BOOK_TRACE_LINE in page and "quick run" in page
    for name in ("weights", "trace", "airfoil", "gamma"):  # need nothing optional
        assert (tmp_path / f"{name}.png").exists()


def test_figures_without_matplotlib_are_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = run_cli(["weights", "--out", str(tmp_path)], capsys)
    assert code == 1 and "pip install 'fastrms[plots]'" in err
    code, out, _ = run_cli(["weights"], capsys)  # numbers only: no matplotlib needed
    assert code == 0 and "gamma=0.90" in out


def test_top_level_command_routes_to_demos(capsys):
    assert main(["demo", "trace"]) == 0
    assert capsys.readouterr().out == BOOK_TRACE_LINE + "\n"
    with pytest.raises(SystemExit):
        main(["demo", "no-such-demo"])


def test_each_demo_has_its_own_help(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["demo", "trace", "-h"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fastrms demo trace") and "--eta" in out and "(default: 0.4)" in out
