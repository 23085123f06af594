"""The Zarr data model of a corpus. Nothing outside this package touches zarr.

``layout`` (arrays, geometry, status codes, block tiling) and ``hashing`` are leaves;
``manifest`` builds on ``layout``; ``store`` on all three; ``lock`` on ``store``.
"""

from storage.hashing import HASH, file_hash, hasher
from storage.layout import (
    OK,
    PENDING,
    REJECTED,
    REMOVED,
    STATUS_NAMES,
    VACANT,
    FileEntry,
    Geometry,
    from_blocks,
    to_blocks,
)
from storage.store import Store, StoreError

__all__ = [
    "HASH",
    "OK",
    "PENDING",
    "REJECTED",
    "REMOVED",
    "STATUS_NAMES",
    "VACANT",
    "FileEntry",
    "Geometry",
    "Store",
    "StoreError",
    "file_hash",
    "from_blocks",
    "hasher",
    "to_blocks",
]
