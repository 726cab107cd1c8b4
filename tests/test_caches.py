"""Every memo table is listed in ``fastrms.caches`` and emptied by ``clear_caches()``."""

import ast
import importlib
from pathlib import Path

import numpy as np

import fastrms
from fastrms import caches, functional

PACKAGE = Path(fastrms.__file__).parent


def _memo_tables():
    """(module, name) of every functools cache and module-level dict in the package's source."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("fastrms",) + path.relative_to(PACKAGE).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                for deco in node.decorator_list:
                    target = deco.func if isinstance(deco, ast.Call) else deco
                    if ast.unparse(target) in ("functools.lru_cache", "functools.cache",
                                               "lru_cache", "cache"):
                        found.add((module, node.name))
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                value = node.value
                empty_dict = isinstance(value, ast.Dict) and not value.keys
                empty_call = (isinstance(value, ast.Call) and not value.args and not value.keywords
                              and ast.unparse(value.func) in ("OrderedDict", "dict"))
                if empty_dict or empty_call:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    found.update((module, ast.unparse(t)) for t in targets)
    return found


def test_every_memo_table_is_listed():
    listed = {(c.module, c.name) for c in caches.CACHES} | set(caches.REGISTRIES)
    missing = _memo_tables() - listed
    assert not missing, f"memo tables missing from fastrms.caches.CACHES: {sorted(missing)}"


def test_every_listed_table_exists():
    for cache in caches.CACHES:
        module = importlib.import_module(cache.module)
        assert hasattr(module, cache.name), cache
        assert cache.keeps and cache.stale, cache


def test_scan_finds_a_new_cache(tmp_path, monkeypatch):
    """The completeness check is not vacuous: it sees the tables that exist."""
    tables = _memo_tables()
    assert ("fastrms.functional", "_rule") in tables
    assert ("fastrms.overlaps", "_disjoint_sets") in tables


def test_clear_caches_empties_them_and_steps_give_the_same_bits():
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    s = np.zeros(64, np.float32)
    p2, s2 = p.copy(), s.copy()
    fastrms.rmsprop_update(p, g, s, momentum=0.0)
    assert functional._rule.cache_info().currsize > 0
    fastrms.clear_caches()
    assert functional._rule.cache_info().currsize == 0
    from fastrms import overlaps

    assert overlaps._disjoint_sets == {} and overlaps._last_disjoint_table is None
    fastrms.rmsprop_update(p2, g, s2, momentum=0.0)
    np.testing.assert_array_equal(p, p2)
    np.testing.assert_array_equal(s, s2)
