"""First use: concurrent processes compile a kernel once; ``fastrms warmup`` compiles ahead."""

import os
import subprocess
import sys
import textwrap

import numpy as np

import fastrms
from fastrms import compile_ahead as warmup_module
from fastrms._spec import Rule
from fastrms.cli import main
from fastrms.cpu.kernels import rmsprop_kernel
from fastrms.cpu.multi import rmsprop_multi_kernel

# A rare option set, so that no other test has compiled it into the fresh cache directory.
RARE = dict(maximize=True, weight_decay=0.05, decoupled_weight_decay=True, eps_in_sqrt=False)

ONE_PROCESS = textwrap.dedent(f"""
    import numpy as np, fastrms
    from fastrms._spec import Rule
    from fastrms.cpu.kernels import rmsprop_kernel
    fastrms.rmsprop_update(np.ones(100, np.float64), np.ones(100, np.float64),
                           np.zeros(100, np.float64), threads=1, **{RARE!r})
    stats = rmsprop_kernel(Rule(**{RARE!r}).modes(), False).stats
    print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
""")


def test_concurrent_first_steps_compile_each_kernel_once(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    processes = [subprocess.Popen([sys.executable, "-c", ONE_PROCESS], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(3)]
    results = [p.communicate(timeout=600) for p in processes]
    for p, (out, err) in zip(processes, results):
        assert p.returncode == 0, err
    hits_misses = sorted(tuple(map(int, out.split())) for out, _ in results)
    # One process compiled (a cache miss) and saved; the two others waited and loaded it.
    assert hits_misses == [(0, 1), (1, 0), (1, 0)]


def test_warmup_compiles_every_kernel_kind_of_its_variants(monkeypatch):
    rule = Rule(momentum=0.5, centered=True, **RARE)
    monkeypatch.setattr(warmup_module, "variants", lambda conventions: [rule])
    fastrms.set_num_threads(1)  # a build step's limit: the parallel loops are compiled anyway
    try:
        lines = []
        fastrms.warmup(("book",), ("float64",), say=lines.append)
    finally:
        fastrms.set_num_threads(None)
    assert len(lines) == 1 and lines[0].startswith("float64 momentum, centered, weight decay")
    for kernel in (rmsprop_kernel, rmsprop_multi_kernel):
        for parallel in (False, True):
            signatures = kernel(rule.modes(), parallel).signatures
            assert any(str(s[0].dtype) == "float64" or "float64" in str(s) for s in signatures), \
                (kernel, parallel, signatures)


def test_default_variants_cover_torch_and_book_option_sets():
    modes = {r.modes() for r in warmup_module.variants(("torch", "book"))}
    assert len(modes) == 16  # {momentum, centered, weight decay} x {eps outside, inside} root
    rmsprop = __import__("fastrms.torch", fromlist=["RMSprop"])  # noqa: F841 (torch installed)
    from fastrms.torch import rule_of

    group = dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.9, centered=True,
                 maximize=False)
    assert rule_of(group).modes() in modes


def test_warmup_command(capsys, monkeypatch):
    monkeypatch.setattr(warmup_module, "warmup", lambda conventions, dtypes, say: 1.5)
    assert main(["warmup", "--conventions", "torch", "--dtypes", "float32,float64"]) == 0
    assert "compiled or loaded 16 option sets in 1.5 s" in capsys.readouterr().out
