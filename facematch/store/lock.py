"""One writer at a time per data directory; readers are never blocked.

Every write that touches the catalogue and an index together (an ingest batch and its index update, a
deletion, an index rebuild, a calibration written into the data directory) runs inside
:class:`WriterLock`: an ``fcntl.flock`` on ``<data_dir>/writer.lock``. The kernel releases it when the
holder's process dies, so a crashed writer never leaves the directory locked. A second writer waits,
logging who holds the lock, and gives up with ``WriterBusy`` after ``wait_s`` seconds. Searches take no
lock: they read the catalogue in WAL mode and an index file that is only ever replaced atomically.

Ingest runs also hold :func:`hold_run` (a lock on ``<data_dir>/runs/<run_id>.lock``) for as long as they
live, so that a run row left unfinished by a killed process can be told from one still running.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from facematch.errors import WriterBusy
from facematch.store.private_files import FILE_MODE, ensure_private_dir

__all__ = ["LOCK_FILENAME", "WriterLock", "hold_run", "run_alive"]

log = logging.getLogger(__name__)

LOCK_FILENAME = "writer.lock"
_RUNS_FOLDER = "runs"
_POLL_S = 0.1
_held = threading.local()  # {lock path: [fd, depth]} of the locks this thread holds (re-entrant)


class WriterLock:
    """The data directory's writer lock, re-entrant within a thread.

    ``operation`` names the write for whoever waits ("ingest", "delete", ...); ``wait_s`` is how long to
    wait for another writer (0: do not wait). Raises ``WriterBusy`` when the wait runs out.
    """

    def __init__(self, data_dir: str | Path, operation: str, *, wait_s: float):
        self.path = Path(data_dir) / LOCK_FILENAME
        self.operation = operation
        self.wait_s = float(wait_s)

    def __enter__(self) -> "WriterLock":
        if not self._reenter():
            self._acquire(blocking=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def try_acquire(self) -> bool:
        """Take the lock only if it is free now (or this thread holds it); True if taken."""
        return self._reenter() or self._acquire(blocking=False)

    def release(self) -> None:
        held = _held_locks()
        entry = held.get(str(self.path))
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del held[str(self.path)]
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])

    def _reenter(self) -> bool:
        entry = _held_locks().get(str(self.path))
        if entry is not None:
            entry[1] += 1
        return entry is not None

    def _acquire(self, *, blocking: bool) -> bool:
        ensure_private_dir(self.path.parent, what="data directory")
        fd = _open_private(self.path)
        deadline, announced = time.monotonic() + self.wait_s, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not blocking:
                    os.close(fd)
                    return False
                holder = _describe_holder(self.path)
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise WriterBusy(
                        f"another writer is using {self.path.parent} ({holder}); gave up waiting after "
                        f"{self.wait_s:g} s (wait longer with --wait SECONDS)") from None
                if not announced:
                    log.warning("waiting for another writer (%s) to finish before this %s (up to %g s)",
                                holder, self.operation, self.wait_s)
                    announced = True
                time.sleep(_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.operation} {_clock()}\n".encode(), 0)
        _held_locks()[str(self.path)] = [fd, 1]
        return True


def _held_locks() -> dict:
    if not hasattr(_held, "locks"):
        _held.locks = {}
    return _held.locks


def _clock() -> str:
    return dt.datetime.now().strftime("%H:%M:%S")


def _describe_holder(path: Path) -> str:
    """"pid N, ingest since HH:MM:SS" from what the holder wrote into the lock file."""
    try:
        pid, operation, since = path.read_text().split()[:3]
        return f"pid {pid}, {operation} since {since}"
    except (OSError, ValueError):
        return "holder unknown"


@contextlib.contextmanager
def hold_run(data_dir: str | Path, run_id: int) -> Iterator[None]:
    """Mark ingest run ``run_id`` as alive for as long as the context lasts (or the process lives)."""
    folder = Path(data_dir) / _RUNS_FOLDER
    ensure_private_dir(folder, what="ingest runs folder")
    path = folder / f"{run_id}.lock"
    fd = _open_private(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def run_alive(data_dir: str | Path, run_id: int) -> bool:
    """True while a process holds ``hold_run`` for ``run_id``."""
    path = Path(data_dir) / _RUNS_FOLDER / f"{run_id}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)
    return False


def _open_private(path: Path) -> int:
    """Open (creating) a lock file readable by the service account only, whatever the umask."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd
