"""The airfoil self-noise data, loaded and standardised exactly as the book does.

The file ships in ``fastrms/data`` (see the README there for its CC BY 4.0 attribution); its SHA-1
is checked on every load, so a truncated file or one whose line ends git rewrote fails loudly
instead of giving slightly different numbers.
"""

import hashlib
from pathlib import Path

import numpy as np

AIRFOIL = Path(__file__).resolve().parent.parent / "data" / "airfoil_self_noise.dat"
AIRFOIL_SHA1 = "76e5be1548fd8222e5074cf0faae75edff8cf93f"
ROWS_USED = 1500  # the book keeps the first 1500 of the 1503 rows


class DataError(RuntimeError):
    """The shipped data file is missing or not the expected one."""


def read_verified(path=AIRFOIL, sha1=AIRFOIL_SHA1):
    """The bytes of ``path``, after checking that their SHA-1 is ``sha1``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"data file {path} is missing: it ships with fastrms; reinstall the package "
            "(or restore the file from the repository)"
        ) from None
    digest = hashlib.sha1(raw).hexdigest()
    if digest != sha1:
        raise DataError(
            f"data file {path} is corrupt: SHA-1 {digest}, expected {sha1} ({len(raw)} bytes). "
            "If git rewrote its line ends, check that .gitattributes marks it -text; otherwise "
            "reinstall the package"
        )
    return raw


def load_airfoil(dtype=np.float32, path=AIRFOIL):
    """Features (1500, 5) and labels (1500,), standardised as in the book.

    Every column, label included, is standardised with its mean and population std over all
    1503 rows, and only then are the first 1500 rows kept.
    """
    raw = read_verified(path)
    table = np.loadtxt(raw.decode("ascii").splitlines(), delimiter="\t", dtype=np.float64)
    table = (table - table.mean(axis=0)) / table.std(axis=0)  # ddof=0: the population std
    table = table[:ROWS_USED].astype(dtype)
    return np.ascontiguousarray(table[:, :-1]), np.ascontiguousarray(table[:, -1])
