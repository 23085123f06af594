"""One writer per store: a lock file beside the store, with its owner and age.

A second run that wants the store while another holds it is refused with a message naming
the holder. A lock whose process is gone (same host, pid not running) or that is older
than ``stale_after`` seconds is stale and broken. For object stores (s3://) the lock is an
object written after a check that none exists: advisory, since such stores have no atomic
create here.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from typing import Iterator

from storage.store import StoreError


class StoreLocked(StoreError):
    """Another run holds the store."""


def lock_path(url: str) -> str:
    return url.rstrip("/") + ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url)


@contextmanager
def store_lock(url: str, owner: str, stale_after: float = 24 * 3600) -> Iterator[dict]:
    """Hold the store at ``url`` for the duration of the block."""
    path = lock_path(url)
    fs, fpath = _fs(path)
    me = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    for _ in range(3):
        try:
            if "://" in url:
                if fs.exists(fpath):
                    raise FileExistsError(fpath)
                fs.pipe_file(fpath, json.dumps(me).encode())
            else:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "w") as fh:
                    json.dump(me, fh)
            break
        except FileExistsError:
            try:
                held = json.loads(fs.cat_file(fpath))
            except (FileNotFoundError, ValueError):
                held = {}
            age = time.time() - float(held.get("since", 0))
            dead = held.get("host") == me["host"] and not _pid_alive(int(held.get("pid", -1)))
            if not held or dead or age > stale_after:
                fs.rm_file(fpath)  # stale: its run is gone
                continue
            raise StoreLocked(
                f"store {url} is in use by {held.get('owner', '?')} (pid {held.get('pid')} on {held.get('host')}, "
                f"for {_age(age)}); wait for that run to finish, or delete {path} if it is gone"
            ) from None
        except OSError as exc:  # a folder that cannot be written: one line for the user, not a traceback
            raise StoreError(f"cannot write the lock file {path} of store {url}: {exc.strerror or exc}") from None
    else:
        raise StoreLocked(f"could not take the lock {path}")
    try:
        yield me
    finally:
        try:
            if json.loads(fs.cat_file(fpath)).get("pid") == me["pid"]:
                fs.rm_file(fpath)
        except (FileNotFoundError, ValueError):
            pass
