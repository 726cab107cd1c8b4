"""A read-only install without a writable home (a non-root container) works: Numba compiles
without its disk cache, with one warning, instead of failing."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastrms

SCRIPT = textwrap.dedent("""
    import warnings
    warnings.simplefilter("always")
    import numpy as np
    import fastrms
    from fastrms.cli import main
    assert fastrms.__file__.startswith(SITE), fastrms.__file__
    assert main(["backends"]) == 0
    rng = np.random.default_rng(0)
    for n in (1000, 1 << 16):  # the serial and the parallel loop
        p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
        s = np.zeros(n, np.float32)
        want_p, want_s = p.copy(), s.copy()
        fastrms.rmsprop_update(want_p, g, want_s, backend="numpy")
        fastrms.rmsprop_update(p, g, s)
        fastrms.rmsprop_update([p.copy()], [g], [s.copy()])
        assert np.array_equal(p, want_p) and np.array_equal(s, want_s)
    print("ok")
""")


def test_read_only_install_without_writable_home_compiles_without_disk_cache(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a private read-only mount")
    site, home = tmp_path / "site", tmp_path / "home"
    home.mkdir()
    shutil.copytree(Path(fastrms.__file__).parent, site / "fastrms",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
    env.update(HOME=str(home), PYTHONPATH=str(site))
    script = f"SITE = {str(site)!r}\n{SCRIPT}"
    # Root writes anywhere: only a read-only mount (in a private mount namespace) stops it.
    mount = (f"mount --bind {tmp_path} {tmp_path} && mount -o remount,bind,ro {tmp_path} && "
             f"cd {tmp_path} && exec {sys.executable} -c \"$0\"")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount --bind {tmp_path} {tmp_path}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private read-only mount here: {probe.stderr.decode()}")
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", mount,
                             script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
    assert "numba  host  usable" in result.stdout
    assert result.stderr.count("NUMBA_CACHE_DIR") == 1, result.stderr  # one warning, with the fix
    assert not list((site / "fastrms").rglob("*.nbi")), "nothing was written into the install"
