"""No written buffer of a step (param, state, master) may overlap another buffer; grads may share
memory with each other. The checks ``fastrms.validate`` runs on every buffer set and list, with
the memo tables that make a training loop's repeated sets cost nothing after the first step.
"""

import weakref

import numpy as np

from ._buffers import NAMES

GRAD = NAMES.index("grad")


# Sets of buffers found disjoint, keyed by their ids and held weakly: a training loop passes the
# same few sets every step (a benchmark alternating two grads, two sets), and an ndarray's byte
# range cannot change while the object lives, so the pairwise test (a third of a small call's
# cost) runs once per set. A dead weakref (an id reused by a new array) is a miss.
_disjoint_sets = {}
_DISJOINT_KEPT = 16


def _check_disjoint_set(arrays, names=NAMES):
    """Refuse overlapping buffers of one set (``names``: each array's name in the message; an
    8-bit step's set names codes and scales, ``fastrms.eight_bit``)."""
    key = tuple(map(id, arrays))
    refs = _disjoint_sets.get(key)
    if refs is not None and all(r is None or r() is not None for r in refs):
        return
    # C-contiguous buffers overlap exactly when their byte ranges do, so the cheap bounds test of
    # may_share_memory is exact here. grad is only read, but must not overlap a written buffer.
    present = [(n, a) for n, a in zip(names, arrays) if a is not None]
    host = isinstance(arrays[0], np.ndarray)
    may_share = np.may_share_memory if host else _byte_ranges_overlap
    for i, (name_i, a_i) in enumerate(present):
        for name_j, a_j in present[i + 1:]:
            if a_i is a_j or may_share(a_i, a_j):
                raise ValueError(f"{name_i} and {name_j} overlap in memory; each must be its own buffer")
    if host:
        if len(_disjoint_sets) >= _DISJOINT_KEPT:
            _disjoint_sets.clear()
        _disjoint_sets[key] = tuple(None if a is None else weakref.ref(a) for a in arrays)


def _byte_ranges_overlap(a, b):
    """Whether two CuPy arrays' byte ranges overlap: exact for C-contiguous ones."""
    a_start, b_start = a.data.ptr, b.data.ptr
    return a_start < b_start + b.nbytes and b_start < a_start + a.nbytes


_address_cache = {}  # id(array) -> (weakref, address, nbytes): reading an address costs ~1 µs


def _address(a):
    """The address of ``a``'s first element (NumPy: cached per live array object)."""
    if type(a) is not np.ndarray:
        return a.data.ptr  # CuPy
    key = id(a)
    entry = _address_cache.get(key)
    if entry is not None and entry[0]() is a and entry[2] == a.nbytes:
        return entry[1]
    address = a.__array_interface__["data"][0]
    _address_cache[key] = (weakref.ref(a, lambda _, key=key: _address_cache.pop(key, None)),
                           address, a.nbytes)
    return address


# The last (table, sizes, itemsizes) found disjoint: loops pass the same each step. The byte
# extents depend on all three (float64 views at float32 buffers' addresses can overlap).
_last_disjoint_table = None


def _check_disjoint_table(table, sizes, itemsizes):
    """The multi-tensor overlap test: sorted byte intervals, one pass."""
    global _last_disjoint_table
    last = _last_disjoint_table
    if last is not None and all(np.array_equal(a, b) for a, b in zip(last, (table, sizes, itemsizes))):
        return
    nbytes = sizes[:, None] * itemsizes
    check_grads_clear(written_spans(table, nbytes), table, nbytes)
    _last_disjoint_table = (table.copy(), sizes.copy(), itemsizes.copy())


def written_spans(table, nbytes):
    """The byte spans ``(starts, ends)``, sorted, of the buffers a step writes (every column of
    ``table`` but the grads'; ``nbytes`` is ``table``'s shape), refused if any two overlap."""
    written = nbytes > 0
    written[:, GRAD] = False
    starts, ends = table[written], table[written] + nbytes[written]
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    if starts.size > 1 and (starts[1:] < np.maximum.accumulate(ends)[:-1]).any():
        raise ValueError(_overlap_message(table, nbytes))
    return starts, ends


def check_grads_clear(spans, table, nbytes):
    """Refuse grads (``table``'s grad column) that overlap a written span (``written_spans``);
    grads may overlap each other. ``fastrms.torch``'s step plan runs this alone when only the
    grads moved."""
    starts, ends = spans
    grads = nbytes[:, GRAD] > 0
    g_starts = table[grads, GRAD]
    g_ends = g_starts + nbytes[grads, GRAD]
    # The written spans are sorted and disjoint: the one starting last before a grad's end is
    # the only one that can overlap it.
    before = np.searchsorted(starts, g_ends, side="left") - 1
    if ((before >= 0) & (ends[np.maximum(before, 0)] > g_starts)).any():
        raise ValueError(_overlap_message(table, nbytes))


def _overlap_message(table, nbytes):
    """Name one overlapping pair (the slow pairwise search runs only to report an error)."""
    present = nbytes > 0
    spans = [(f"{NAMES[i]}[{j}]", table[j, i], table[j, i] + nbytes[j, i], i == GRAD)
             for j, i in zip(*np.nonzero(present))]
    for p, (name_p, start_p, end_p, read_p) in enumerate(spans):
        for name_q, start_q, end_q, read_q in spans[p + 1:]:
            if start_p < end_q and start_q < end_p and not (read_p and read_q):
                return f"{name_p} and {name_q} overlap in memory; each must be its own buffer"
    return "buffers overlap in memory; each must be its own buffer"
