"""The documentation: the MkDocs site builds strictly, every public object has a docstring, and no
tracked file points outside the repository."""

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastrms
from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]


def test_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: a broken link or anchor, a page missing from the nav, or an API
    entry that mkdocstrings cannot resolve fails it."""
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers"):
        if importlib.util.find_spec(module) is None:
            skip_or_fail(f"{module} is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in public_names():
        assert f'id="{name}"' in api, f"{name} is missing from the API reference (docs/api.md)"


def public_names():
    """The dotted names the API reference must document."""
    return [f"fastrms.{name}" for name in fastrms.__all__] + ["fastrms.torch.RMSprop"]


def undocumented(obj, name):
    """``name`` and its public methods and properties that have no docstring of their own
    (mkdocstrings leaves those out of the reference without a word)."""
    missing = [] if (obj.__doc__ or "").strip() else [name]
    if not inspect.isclass(obj):
        return missing
    for attr, value in vars(obj).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, property):
            doc = value.fget.__doc__ if value.fget is not None else value.__doc__
        elif isinstance(value, (staticmethod, classmethod)):
            doc = value.__func__.__doc__
        elif inspect.isfunction(value):
            doc = value.__doc__
        else:  # data: dataclass field defaults, constants
            continue
        if not (doc or "").strip():
            missing.append(f"{name}.{attr}")
    return missing


def test_every_public_object_has_a_docstring():
    missing = [m for name in fastrms.__all__
               for m in undocumented(getattr(fastrms, name), f"fastrms.{name}")]
    assert not missing, f"no docstring: {', '.join(missing)}"


def test_the_torch_adapter_has_docstrings():
    pytest.importorskip("torch")
    import fastrms.torch

    missing = undocumented(fastrms.torch.RMSprop, "fastrms.torch.RMSprop")
    assert not missing, f"no docstring: {', '.join(missing)}"


def test_the_docstring_check_can_fail():
    class Sample:
        """Documented."""

        def documented(self):
            """Yes."""

        def bare(self):
            pass

        @property
        def bare_property(self):
            return 1

        @bare_property.setter
        def bare_property(self, value):
            """A setter's docstring does not document the property."""

    assert undocumented(Sample, "Sample") == ["Sample.bare", "Sample.bare_property"]


# Text that refers to files a clone does not have: the design brief that preceded docs/design.md,
# and the shared folder outside the repository. Spelled in pieces, so that this file does not
# match itself.
BRIEF, SHARED = "DESIGN" + ".md", "../" + "shared"
OUTSIDE = re.compile("|".join(map(re.escape, (BRIEF, SHARED))))


def references_outside(paths, root=ROOT):
    """``path:line: text`` for every line of the text files ``paths`` (relative to ``root``)
    that matches ``OUTSIDE``."""
    hits = []
    for path in paths:
        data = (root / path).read_bytes()
        if b"\0" in data:  # binary
            continue
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path}:{number}: {line.strip()}")
    return hits


def test_no_tracked_file_refers_outside_the_repository():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.decode(errors='replace').strip()}")
    paths = [p for p in listed.stdout.decode().split("\0") if p and (ROOT / p).is_file()]
    assert paths, "git lists no files"
    hits = references_outside(paths)
    assert not hits, "references to files outside the repository:\n" + "\n".join(hits)


def test_the_outside_reference_check_can_fail(tmp_path):
    (tmp_path / "a.py").write_text(f"x = 1  # see {BRIEF} §4\n")
    (tmp_path / "b.md").write_text(f"ok: docs/design.md\n[brief]({SHARED}/notes.md)\n")
    (tmp_path / "c.bin").write_bytes(b"\0" + BRIEF.encode())
    assert references_outside(["a.py", "b.md", "c.bin"], tmp_path) == [
        f"a.py:1: x = 1  # see {BRIEF} §4", f"b.md:2: [brief]({SHARED}/notes.md)"]
