"""Every process-wide memo table of fastrms, in one place: what each keeps, what makes an entry
stale, and ``clear_caches()``, which empties them all.

The hot path is memoized because a training loop passes the same buffers and hyperparameters
every step: a rule's scalars, a launch plan, the disjointness of a buffer set cost microseconds to
recompute and nothing to look up. Each table is keyed so that a changed input is a miss, never a
wrong hit; ``stale`` below says how. Nothing here needs clearing in normal use:
``clear_caches()`` is for tests, and for a process that installs a backend (CuPy, a driver) after
fastrms looked for it. Compiled kernels also live in Numba's and CuPy's disk caches, which this
does not touch. Per-object caches (``fastrms.torch.RMSprop``'s views of its params) belong to
their object and are not listed.
"""

import sys
from typing import NamedTuple


class Cache(NamedTuple):
    module: str  # where it lives
    name: str  # a functools cache, a dict, or a variable reset to None
    keeps: str
    stale: str  # what invalidates an entry, and how the key sees it


CACHES = (
    Cache("fastrms.dispatch", "_LOADED", "each backend module and why it is unusable",
          "a backend installed after the first look: only clear_caches() sees it"),
    Cache("fastrms.dispatch", "_RESOLVED", "the backend module per (backend, place)",
          "as _LOADED, which it is derived from"),
    Cache("fastrms.native", "cuda_arrays", "the imported fastrms.cuda.arrays", "never"),
    Cache("fastrms._spec", "_scalars", "a rule's scalars cast to a dtype (per step with bias "
          "correction)", "never: rules are frozen and the key holds rule, dtype and step"),
    Cache("fastrms.functional", "_rule", "the Rule of rmsprop_update's arguments",
          "never: the key is every argument, typed"),
    Cache("fastrms.overlaps", "_disjoint_sets", "buffer sets found disjoint, by ids, held weakly",
          "an id reused by a new array: its dead weakref is a miss (16 sets kept)"),
    Cache("fastrms.overlaps", "_address_cache", "a NumPy array's data address, by id",
          "dropped by a weakref callback when the array dies; checked against nbytes"),
    Cache("fastrms.overlaps", "_last_disjoint_table", "the last multi-tensor table found "
          "disjoint", "any change of addresses, sizes or itemsizes: compared in full"),
    Cache("fastrms.cpu.backend", "scalar_array", "a rule's scalars as a read-only array",
          "never: keyed like _spec._scalars"),
    Cache("fastrms.cpu.backend", "_empty", "an empty array per dtype (the loop's dtype tag)",
          "never"),
    Cache("fastrms.cpu.kernels", "_kernel", "the jitted loop per (modes, parallel, storage)",
          "never in a process; Numba's disk cache checks the source file's timestamp"),
    Cache("fastrms.cpu.multi", "_multi_kernel", "the jitted multi-tensor loop per "
          "(modes, parallel, storage)", "as _kernel"),
    Cache("fastrms.cpu.kernels", "sweep_for", "the inlined serial sweep per storage (param "
          "format, rounding)", "never: Python functions of a constant key"),
    Cache("fastrms.eight_bit", "modes8", "a rule's modes with the 8-bit variance clamp",
          "never: a function of the frozen rule"),
    Cache("fastrms.cpu.eight_bit", "_kernel8", "the jitted 8-bit loop per (modes, parallel, "
          "storage)", "as _kernel"),
    Cache("fastrms.cpu.eight_bit", "block_for", "the inlined 8-bit block step per (storage, "
          "centered)", "never: Python functions of a constant key"),
    Cache("fastrms.cpu.halves", "storage_functions", "the conversion pair per (param format, "
          "rounding)", "never: a table lookup"),
    Cache("fastrms.cpu.grad_stats", "partials_kernel", "inspect_grads' jitted chunk loop per "
          "(read format, parallel)", "as _kernel"),
    Cache("fastrms.cpu.grad_stats", "_empty", "an empty array per dtype (the loop's dtype tag)",
          "never"),
    Cache("fastrms.cpu.multi", "_chunks_of", "the parallel chunk table per list of sizes",
          "never: keyed by the sizes' bytes"),
    Cache("fastrms.cuda.plan", "_plan", "a single-buffer launch (instance, grid, packed "
          "arguments) per addresses, size, rule, step, extras and device",
          "never: a moved buffer has a new address, a new key"),
    Cache("fastrms.cuda.plan", "_multi_plan", "a multi-tensor launch per tables, rule, step, extras",
          "never: keyed by the tables' bytes"),
    Cache("fastrms.cuda.plan", "_multi_tables", "the tensor and chunk tables per addresses, "
          "sizes and counter offsets", "never: keyed by their bytes"),
    Cache("fastrms.cuda.loader", "source", "rmsprop.cu's text with the struct layout check "
          "appended", "an edit of the installed file: clear_caches() (CuPy hashes the text, so a "
          "new text recompiles)"),
    Cache("fastrms.cuda.loader", "kernel", "a compiled kernel instance per device and compile "
          "options (the step's, or the roofline's)", "as source"),
    Cache("fastrms.cuda.loader", "multiprocessors", "a device's multiprocessor count", "never"),
    Cache("fastrms.cuda.grad_stats", "source", "grad_stats.cu's text with the GradTable layout "
          "check appended", "as fastrms.cuda.loader.source"),
    Cache("fastrms.cuda.grad_stats", "_module", "grad_stats.cu compiled (every kernel) per device",
          "as source"),
    Cache("fastrms.cuda.grad_stats", "kernel", "one grad_stats.cu kernel per device and name",
          "as source"),
    Cache("fastrms.cuda.backend", "_DEVICE_TABLES", "the device copy of a multi-tensor launch's "
          "tables per (device, stream, tables)", "never: keyed by the tables' bytes; the "
          "oldest of 64 is dropped, its memory returned to CuPy's pool on that stream"),
    Cache("fastrms.torch.groups", "_torch_rule", "the Rule of a torch param group's values",
          "never: the key is every value"),
    Cache("fastrms.torch.ops", "_rule", "the Rule of the torch operator's arguments",
          "never: the key is the convention and every field"),
    Cache("fastrms.torch.ops", "_PLANS", "the ListPlan of the operator's lists, by the tensors' "
          "ids (8 kept)", "a tensor that died or was replaced (weak references, identity "
          "checked), or moved memory (addresses checked); the least recently used of 8 dropped"),
    Cache("fastrms.threads", "pool_size", "Numba's thread pool size", "never: fixed when Numba "
          "starts"),
    Cache("fastrms.threads", "_from_environment", "OMP_NUM_THREADS / NUMBA_NUM_THREADS, read once",
          "a change of the environment after the first parallel step: clear_caches()"),
    Cache("fastrms.bench.gpu_roofline", "_rule", "the roofline's rule per set of buffers",
          "never"),
)


def clear_caches():
    """Empty every table of ``CACHES`` in the modules imported so far."""
    for cache in CACHES:
        module = sys.modules.get(cache.module)
        if module is None:
            continue
        table = getattr(module, cache.name)
        if hasattr(table, "cache_clear"):
            table.cache_clear()
        elif isinstance(table, dict):
            table.clear()
        else:
            setattr(module, cache.name, None)


# Module-level tables that are configuration, not memos: never cleared.
REGISTRIES = (("fastrms.dispatch", "_MODULES"), ("fastrms.dispatch", "_AUTO"))
