"""Content hashes of input files, as recorded in a store's ``hash`` array."""

from __future__ import annotations

import hashlib

HASH = "sha256"  # what `sha256sum` prints; twice BLAKE2b's speed where the CPU has SHA instructions


def hasher(algorithm: str = HASH):
    """A hashlib object: ``sha256``, or ``blake2b-128`` (stores made before the ``hash`` attribute hold those)."""
    return hashlib.blake2b(digest_size=16) if algorithm == "blake2b-128" else hashlib.new(algorithm)


def file_hash(fh, algorithm: str = HASH, block: int = 1 << 20) -> str:
    """Hex digest of an open binary file, read in 1 MiB blocks (see :func:`hasher`)."""
    h = hasher(algorithm)
    while chunk := fh.read(block):
        h.update(chunk)
    return h.hexdigest()
