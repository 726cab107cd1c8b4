"""The backend contract (``fastrms.dispatch.Backend``) and how rules are built."""

import numpy as np
import pytest

from fastrms import dispatch
from fastrms._buffers import NAMES, Buffers
from fastrms._spec import RULE_FIELDS, Rule


@pytest.mark.parametrize("name", ["numpy", "numba", "cupy"])
def test_every_importable_backend_satisfies_the_contract(name):
    module, _ = dispatch._load(name)
    if module is None:
        pytest.skip(f"{name} cannot be imported here")
    assert isinstance(module, dispatch.Backend)
    assert module.NAME == name and module.PLACE in ("host", "cuda")
    assert all(isinstance(d, np.dtype) for d in module.DTYPES)
    if name != "numpy":  # the compiled backends take whole lists in one call
        assert isinstance(module, dispatch.MultiTensorBackend)


def test_a_module_without_update_does_not_satisfy_it():
    class Incomplete:
        NAME, PLACE, DTYPES = "x", "host", frozenset()

        def availability(self):
            return None

    assert not isinstance(Incomplete(), dispatch.Backend)


def test_backend_info_names_one_backend():
    info = dispatch.backend_info("numpy")
    assert (info.name, info.place, info.usable, info.reason) == ("numpy", "host", True, "")
    assert dispatch.backends()[0] == info
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        dispatch.backend_info("nope")


def test_rules_are_built_with_keywords_only():
    with pytest.raises(TypeError):
        Rule(0.01)  # noqa: the positional lr is refused
    assert Rule(lr=0.02, momentum=0.5).momentum == 0.5
    assert "lr" in RULE_FIELDS


def test_buffers_are_named_in_one_order():
    assert NAMES == ("param", "grad", "square_avg", "momentum_buffer", "grad_avg", "master_param")
    b = Buffers(1, 2, 3)
    assert (b.param, b.grad, b.square_avg, b.momentum_buffer, b.grad_avg, b.master_param) == (
        1, 2, 3, None, None, None)


def test_a_cupy_that_fails_to_import_is_not_reported_as_missing(monkeypatch):
    """A read-only home breaks CuPy's import (it creates ~/.cupy): installed, not usable."""
    import builtins

    from fastrms.cuda import backend

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "cupy":
            raise OSError("[Errno 30] Read-only file system: '/home/user/.cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    assert backend.availability() == ("CuPy cannot be imported (OSError: [Errno 30] Read-only "
                                      "file system: '/home/user/.cupy')")
