"""fastrms: fused RMSProp update kernels for NumPy, Numba, CuPy and torch arrays.

Importing this package is cheap: Numba and CuPy are imported on the first step that needs them.
"""

from .caches import clear_caches
from .dispatch import backends
from .flat import FlatBuffer
from .functional import rmsprop_update
from .grad_stats import inspect_grads
from .optimizer import RMSprop
from .state import RMSpropState
from .threads import get_num_threads, set_num_threads
from .compile_ahead import warmup

__all__ = [
    "FlatBuffer", "RMSprop", "RMSpropState", "backends", "clear_caches", "get_num_threads",
    "inspect_grads", "rmsprop_update", "set_num_threads", "warmup",
]
__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)
