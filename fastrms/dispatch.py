"""The backend registry, the backend contract, and the one place that routes a step to a backend.

A backend is a module that satisfies ``Backend`` below: it receives validated, flat-compatible
native arrays (NumPy on the host, CuPy on a GPU) in a ``Buffers`` named tuple. Backends are
imported on first use only, so that ``import fastrms`` stays fast and never imports Numba or CuPy.
"""

import importlib
import os
from typing import Any, NamedTuple, Optional, Protocol, runtime_checkable


@runtime_checkable
class Backend(Protocol):
    """What a backend module provides (``fastrms.reference``, ``fastrms.cpu.backend``,
    ``fastrms.cuda.backend``)."""

    NAME: str
    PLACE: str  # where its arrays live: "host" or "cuda"
    DTYPES: frozenset  # the param dtypes it takes (NumPy dtypes)

    def availability(self) -> Optional[str]:
        """None when usable here, else the reason it is not."""

    def update(self, buffers: Any, rule: Any, step: Optional[int],
               threads: Optional[int] = None, extras: Any = None) -> None:
        """One in-place step over a validated ``fastrms._buffers.Buffers`` of native arrays.
        ``threads``: the caller's CPU thread count (``fastrms.threads``), or None; backends that
        use no CPU threads ignore it. ``extras``: a ``fastrms._buffers.Extras`` (loss scale,
        clip factor, rounding of half params; ``PLAIN`` by default)."""


@runtime_checkable
class MultiTensorBackend(Backend, Protocol):
    """A backend that also updates a list of buffer sets in one call (optional: without it,
    ``fastrms.functional.apply`` calls ``update`` per set)."""

    def update_many(self, columns: Any, rule: Any, step: Optional[int], table: Any,
                    sizes: Any, threads: Optional[int] = None, extras: Any = None) -> None:
        """One step for every set of ``columns`` (a ``Buffers`` of lists of one dtype);
        ``table``: int64 ``[n, 6]`` data addresses (0 where absent), ``sizes``: element counts;
        ``extras.offsets``: one stochastic-rounding counter per set."""


@runtime_checkable
class EightBitBackend(Backend, Protocol):
    """A backend that also steps 8-bit state (optional: ``fastrms.eight_bit.apply8`` refuses a
    backend without it; the numpy backend's is ``eight_bit.update8``)."""

    def update8(self, buffers: Any, rule: Any, step: Optional[int],
                threads: Optional[int] = None, extras: Any = None) -> None:
        """One in-place step over a validated ``Buffers`` whose state buffers are
        ``fastrms.eight_bit.Codes`` (uint8 codes, float32 scales per block of 256)."""


_MODULES = {}  # name -> module path, in registration order
_AUTO = {}  # place -> the backend ``backend="auto"`` picks there
_LOADED = {}  # name -> (module or None, reason it is unusable or None)
_PINNED = os.environ.get("FASTRMS_BACKEND")  # overrides "auto" for arrays where it can run


class BackendInfo(NamedTuple):
    name: str
    place: str
    usable: bool
    reason: str  # why not usable here; "" when usable


def register(name, module, auto_for=None):
    """Declare backend ``name``, implemented by ``module`` (imported lazily)."""
    _MODULES[name] = module
    if auto_for is not None:
        _AUTO[auto_for] = name


register("numpy", "fastrms.reference")
register("numba", "fastrms.cpu.backend", auto_for="host")
register("cupy", "fastrms.cuda.backend", auto_for="cuda")


def _load(name):
    try:
        return _LOADED[name]
    except KeyError:
        pass
    try:
        module = importlib.import_module(_MODULES[name])
        entry = (module, module.availability())
    except ImportError as exc:  # an optional dependency is missing
        entry = (None, f"cannot import {_MODULES[name]}: {exc}")
    _LOADED[name] = entry
    return entry


def backends():
    """Every registered backend, with whether it is usable here and, if not, why."""
    return [backend_info(name) for name in _MODULES]


def backend_info(name):
    """The ``BackendInfo`` of backend ``name`` (usable here or not, and why)."""
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(_MODULES)}")
    module, reason = _load(name)
    place = module.PLACE if module is not None else "?"
    return BackendInfo(name, place, reason is None, reason or "")


def resolve(backend, place):
    """The backend module for arrays living at ``place`` ("host" or "cuda:N")."""
    try:
        return _RESOLVED[backend, place]
    except (KeyError, TypeError):
        pass
    module = _resolve(backend, place)
    _RESOLVED[backend, place] = module
    return module


_RESOLVED = {}  # (backend, place) -> module: resolving runs once, not every step


def _resolve(backend, place):
    kind = place.split(":")[0]
    if backend == "auto":
        backend = _AUTO.get(kind)
        if _PINNED in _MODULES and _load(_PINNED)[0] is not None and _load(_PINNED)[0].PLACE == kind:
            backend = _PINNED
        if backend is None:
            raise ValueError(f"no backend handles arrays on {place}")
    elif backend not in _MODULES:
        raise ValueError(f"unknown backend {backend!r}; choose 'auto' or one of {', '.join(_MODULES)}")
    module, reason = _load(backend)
    if reason is not None:
        raise RuntimeError(f"backend {backend!r} is not usable here: {reason}")
    if module.PLACE != kind:
        raise ValueError(f"backend {backend!r} runs on {module.PLACE} arrays, but these live on {place}")
    return module
