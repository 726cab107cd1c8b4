"""Packaging: the sdist carries what its tests need and they run in the unpacked tree; the sdist and
the wheel carry the MIT licence as a PEP 639 expression and build without deprecation warnings;
the version is written once (``fastrms.__version__``); ``fastrms --version`` prints it.

The builds run offline: setuptools' PEP 517 backend in a subprocess of this interpreter, no
isolated build environment (the ``test`` extra installs a setuptools recent enough)."""

import ast
import email.parser
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import skip_or_fail
from fastrms.cli import main

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS_FLOOR = (77,)  # PEP 639: license = "MIT", license-files

# Files a source tree may hold that the sdist leaves out (MANIFEST.in's global-exclude).
LEFT_OUT_SUFFIXES = (".pyc", ".pyo", ".pyd", ".nbi", ".nbc")
# What the tests need besides the package: all of these, whole, in the sdist.
SHIPPED_DIRS = ("tests", "docs", "bench", "examples")
SHIPPED_FILES = ("CMakeLists.txt", "mkdocs.yml", "LICENSE", "README.md", "pyproject.toml")


def source_version():
    """The string assigned to ``__version__`` in fastrms/__init__.py, read without importing."""
    tree = ast.parse((ROOT / "fastrms" / "__init__.py").read_text(encoding="utf-8"))
    values = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
              and any(getattr(t, "id", None) == "__version__" for t in node.targets)
              and isinstance(node.value, ast.Constant)]
    assert len(values) == 1, "fastrms/__init__.py must assign __version__ one string literal"
    return values[0]


def require_setuptools():
    try:
        import setuptools
    except ImportError:
        skip_or_fail("setuptools is not installed (pip install -e '.[test]')")
    have = tuple(int(p) for p in setuptools.__version__.split(".")[:1] if p.isdigit())
    if have < SETUPTOOLS_FLOOR:
        skip_or_fail(f"setuptools {setuptools.__version__} predates PEP 639 (needs >= 77)")


def build(kind, source, out):
    """``build_sdist`` or ``build_wheel`` of setuptools' backend, run in ``source``; the built
    file and the build's output (stdout and stderr)."""
    out.mkdir(parents=True, exist_ok=True)
    code = f"import sys; from setuptools import build_meta; build_meta.build_{kind}(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", code, str(out)], cwd=source,
                            capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    (built,) = out.iterdir()
    return built, log


def unpack(sdist, into):
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python < 3.10.12 / 3.11.4
            tar.extractall(into)
    (tree,) = into.iterdir()
    return tree


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    require_setuptools()
    return build("sdist", ROOT, tmp_path_factory.mktemp("sdist"))


@pytest.fixture(scope="module")
def unpacked(sdist, tmp_path_factory):
    return unpack(sdist[0], tmp_path_factory.mktemp("unpacked"))


@pytest.fixture(scope="module")
def wheel(sdist, tmp_path_factory):
    """The wheel built from the sdist (as ``python -m build`` does), in a copy of its own."""
    tree = unpack(sdist[0], tmp_path_factory.mktemp("wheel-source"))
    return build("wheel", tree, tmp_path_factory.mktemp("wheel"))


def metadata(text):
    return email.parser.HeaderParser().parsestr(text)


def shipped_here():
    """The files of the source tree the sdist must carry, relative to the root."""
    paths = {name for name in SHIPPED_FILES}
    for top in SHIPPED_DIRS:
        for path in (ROOT / top).rglob("*"):
            relative = path.relative_to(ROOT)
            if (path.is_file() and not path.name.endswith(LEFT_OUT_SUFFIXES)
                    and not any(part.startswith(".") or part == "__pycache__"
                                for part in relative.parts)):
                paths.add(relative.as_posix())
    return paths


def test_the_sdist_ships_the_tests_and_what_they_need(sdist):
    with tarfile.open(sdist[0]) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    missing = sorted(shipped_here() - names)
    assert not missing, f"not in the sdist: {', '.join(missing)}"
    assert not [n for n in names if n.endswith(LEFT_OUT_SUFFIXES) or "__pycache__" in n]
    for needed in ("tests/conftest.py", "tests/cases.py", "tests/native/__init__.py"):
        assert needed in names


def test_pytest_collects_and_runs_in_the_unpacked_sdist(unpacked):
    env = dict(os.environ, PYTHONPATH=str(unpacked))

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=unpacked, env=env,
                              capture_output=True, text=True, timeout=300)

    where = run("-c", "import fastrms; print(fastrms.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(unpacked.resolve()), where.stdout

    pytest_ = ("-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "0")  # no xdist workers
    collected = run(*pytest_, "--collect-only")
    log = collected.stdout + collected.stderr
    assert collected.returncode == 0, log  # 2 (interrupted) on any collection error
    assert re.search(r"^\d+ tests collected", log, re.M), log
    assert not re.search(r"^ERROR|\d+ errors?\b", log, re.M), log

    smoke = run(*pytest_, "tests/test_contract.py",
                "tests/test_docs.py::test_the_outside_reference_check_can_fail",
                "tests/test_flat.py::test_example_trains")  # examples/ shipped
    log = smoke.stdout + smoke.stderr
    assert smoke.returncode == 0, log
    assert re.search(r"\d+ passed", log) and not re.search(r"\d+ (failed|errors?)\b", log), log


def test_the_licence_is_an_spdx_expression_with_its_file(sdist, unpacked, wheel):
    sdist_meta = metadata((unpacked / "PKG-INFO").read_text(encoding="utf-8"))
    with zipfile.ZipFile(wheel[0]) as whl:
        names = whl.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        wheel_meta = metadata(whl.read(meta_name).decode("utf-8"))
        (licence,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        licence_text = whl.read(licence).decode("utf-8")
    for meta in (sdist_meta, wheel_meta):
        assert tuple(map(int, meta["Metadata-Version"].split("."))) >= (2, 4)
        assert meta["License-Expression"] == "MIT"
        assert meta.get_all("License-File") == ["LICENSE"]
        assert meta["License"] is None  # the deprecated free-text field
        assert not [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
        assert meta["Author"] == "the fastrms authors"
    assert licence_text == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence_text.startswith("MIT License") and "the fastrms authors" in licence_text
    assert (unpacked / "LICENSE").read_text(encoding="utf-8") == licence_text
    assert not [n for n in names if n.startswith("tests/")]  # tests ship in the sdist only
    assert "fastrms/cuda/rmsprop.cu" in names


def test_the_builds_warn_of_nothing_deprecated(sdist, wheel):
    for kind, (_, log) in (("sdist", sdist), ("wheel", wheel)):
        lines = [line for line in log.splitlines() if "DeprecationWarning" in line
                 or ("license" in line.lower() and "warn" in line.lower())]
        assert not lines, f"{kind} build:\n" + "\n".join(lines)


def test_the_version_is_written_once(sdist, unpacked, wheel):
    try:
        import tomllib
    except ImportError:  # Python 3.10: pytest depends on tomli there
        tomllib = pytest.importorskip("tomli")
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    config = tomllib.loads(text)
    assert "version" not in config["project"]
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fastrms.__version__"}
    version = source_version()
    assert f'"{version}"' not in text and f"'{version}'" not in text  # no literal copy
    assert metadata((unpacked / "PKG-INFO").read_text(encoding="utf-8"))["Version"] == version
    assert wheel[0].name.startswith(f"fastrms-{version}-")
    assert sdist[0].name == f"fastrms-{version}.tar.gz"
    import fastrms

    if Path(fastrms.__file__).resolve().is_relative_to(ROOT):
        assert fastrms.__version__ == version


def test_fastrms_version_prints_it_and_exits_0(capsys):
    import fastrms

    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"fastrms {fastrms.__version__}\n"

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    result = subprocess.run([sys.executable, "-m", "fastrms", "--version"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"fastrms {source_version()}\n"
