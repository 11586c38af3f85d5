"""Files only the service account can read: folders 0700, files 0600, whatever the process umask.

The catalogue, the indexes and exports hold biometric data (special category data, DPA 2018 s.35(8)), so
facematch never relies on the umask: it creates folders and files with explicit modes and tightens
files it owns. A folder that already exists and is open to the group or others is not changed (an
administrator may have chosen it) but is warned about, once per process.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "ensure_private_dir", "warn_if_shared", "restrict_file", "create_private_file",
    "private_temp_beside", "write_private_file"]

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600

_warned: set[str] = set()


def ensure_private_dir(path: str | Path, *, what: str = "folder") -> Path:
    """Create ``path`` (and missing parents) with mode 0700; warn if it exists wider than 0700."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:  # created meanwhile by another process
            continue
        os.chmod(folder, DIR_MODE)  # the umask may have masked bits off, never on; be explicit anyway
    if not missing:
        warn_if_shared(path, what=what)
    return path


def warn_if_shared(path: Path, *, what: str = "folder") -> str | None:
    """Log (once per path and process) when an existing folder is open to group or others; return the text."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    text = (f"{what} {path} is open to other accounts (mode {mode:04o}); it holds biometric data: "
            f"run `chmod 700 {path}`")
    key = str(path.resolve())
    if key not in _warned:
        _warned.add(key)
        log.warning(text)
    return text


def restrict_file(path: str | Path) -> None:
    """Take group and other permissions off an existing file (catalogue, WAL, index, key); never adds any.

    A file this account cannot change (a key on a read-only secrets mount) is warned about, not fatal.
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
    except FileNotFoundError:
        pass
    except PermissionError as exc:
        log.warning("cannot make %s private: %s", path, exc)


def create_private_file(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (e.g. a new SQLite file before connecting)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def private_temp_beside(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a new 0600 temporary file in ``path``'s folder, fsynced; the caller renames it."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def write_private_file(path: str | Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename) with mode 0600.

    ``exclusive``: never replace an existing file (a hard link instead of a rename), so two processes
    creating the same file agree on one content. Returns False when it existed and was left alone.
    """
    tmp = private_temp_beside(path, data)
    try:
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)
