"""The Zarr data model of a corpus. Nothing outside this package touches zarr."""

from storage.store import Geometry, Store, StoreError

__all__ = ["Geometry", "Store", "StoreError"]
