"""Backup, restore and health checks of a data directory.

A backup is a consistent copy of the catalogue made with SQLite's online backup API (one step, under a
read transaction: searches and ingests may run meanwhile; the copy is the catalogue as of one commit),
the calibration file when the data directory holds one, and ``backup.json`` (catalogue id, schema
version, time, SHA-256 of each file). Indexes are not copied: they are derived, and restore rebuilds
them from the restored catalogue. Backups hold biometric data, so folders are created 0700, files 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
from pathlib import Path

from facematch.errors import CatalogueError, InvalidArgument, SourceNotFound
from facematch.store.catalogue import CATALOGUE_FILENAME, Catalogue, utc_now

__all__ = ["BACKUP_MANIFEST", "CALIBRATION_FILENAME", "AUDIT_KEY_FILENAME", "backup", "restore", "integrity_problems",
           "permission_problems"]

BACKUP_MANIFEST = "backup.json"
CALIBRATION_FILENAME = "calibration.json"
#: The audit key's name inside a backup folder.
AUDIT_KEY_FILENAME = "audit.key"


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def backup(catalogue: Catalogue, dest: str | Path, *, audit_key: Path | None = None) -> dict:
    """Copy the catalogue (online backup), calibration and the audit key (``audit_key``: without it the
    restored audit log can be neither written nor verified) to ``dest`` (new or empty); returns the manifest.

    The backup holds the key beside the catalogue: keep backups where only the service account can read.
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise InvalidArgument(f"backup destination {str(dest)!r} is not empty")
    _private_dir(dest)
    copy = sqlite3.connect(dest / CATALOGUE_FILENAME)
    try:
        catalogue.conn.backup(copy)  # pages=-1: one step, a consistent snapshot
        copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
    finally:
        copy.close()
    calibration = catalogue.data_dir / CALIBRATION_FILENAME
    if calibration.exists():
        shutil.copy2(calibration, dest / CALIBRATION_FILENAME)
    if audit_key is not None and Path(audit_key).exists():
        shutil.copy2(audit_key, dest / AUDIT_KEY_FILENAME)
    files = sorted(p.name for p in dest.iterdir())
    for name in files:
        (dest / name).chmod(0o600)
    manifest = {"catalogue_id": catalogue.catalogue_id, "created_at": utc_now(),
                "schema_version": catalogue.conn.execute("PRAGMA user_version").fetchone()[0],
                "files": {name: _sha256(dest / name) for name in files}}
    (dest / BACKUP_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    (dest / BACKUP_MANIFEST).chmod(0o600)
    return manifest


def restore(src: str | Path, data_dir: str | Path, *, force: bool = False, audit_key: Path | None = None) -> dict:
    """Put the backup in ``src`` into ``data_dir``; returns its manifest.

    Refuses a data directory that holds anything unless ``force`` (then the catalogue and calibration
    there are replaced). Raises ``SourceNotFound``, ``CatalogueError`` (checksum or integrity failure) or
    ``InvalidArgument``.
    """
    src, data_dir = Path(src), Path(data_dir)
    try:
        manifest = json.loads((src / BACKUP_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SourceNotFound(f"{str(src)!r} is not a facematch backup ({BACKUP_MANIFEST}: {exc})") from None
    for name, digest in manifest["files"].items():
        if not (src / name).exists() or _sha256(src / name) != digest:
            raise CatalogueError(f"backup file {name} is missing or does not match its checksum")
    if data_dir.exists() and any(data_dir.iterdir()) and not force:
        raise InvalidArgument(f"data directory {str(data_dir)!r} is not empty: restore with --force to replace it")
    _private_dir(data_dir)
    for name in (CATALOGUE_FILENAME + "-wal", CATALOGUE_FILENAME + "-shm", CALIBRATION_FILENAME):
        (data_dir / name).unlink(missing_ok=True)
    for name in manifest["files"]:
        if name == AUDIT_KEY_FILENAME:
            continue
        temp = data_dir / f".{name}.restore.tmp"
        shutil.copy2(src / name, temp)
        temp.chmod(0o600)
        os.replace(temp, data_dir / name)
    if AUDIT_KEY_FILENAME in manifest["files"] and audit_key is not None:
        _restore_key(src / AUDIT_KEY_FILENAME, Path(audit_key), force=force)
    return manifest


def _restore_key(backup_key: Path, target: Path, *, force: bool) -> None:
    """Put the backed-up audit key at ``target``; a different key already there is kept unless ``force``."""
    if target.exists() and target.read_bytes() == backup_key.read_bytes():
        return
    if target.exists() and not force:
        raise InvalidArgument(f"a different audit key exists at {str(target)!r}: restore with --force to replace it")
    _private_dir(target.parent)
    temp = target.parent / f".{target.name}.restore.tmp"
    shutil.copy2(backup_key, temp)
    temp.chmod(0o600)
    os.replace(temp, target)


def integrity_problems(catalogue: Catalogue) -> list[str]:
    """``PRAGMA integrity_check`` and ``foreign_key_check`` findings (empty: sound)."""
    problems = [r[0] for r in catalogue.conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
    problems += [f"row {r[1]} of {r[0]} refers to a missing {r[2]} row"
                 for r in catalogue.conn.execute("PRAGMA foreign_key_check")]
    return problems


def permission_problems(*folders: str | Path) -> list[str]:
    """Folders and files under ``folders`` that other users may read, write or enter (biometric data)."""
    problems = []
    for folder in (Path(f) for f in folders):
        if not folder.exists():
            continue
        for path in [folder, *sorted(folder.rglob("*"))]:
            mode = path.stat().st_mode
            if mode & stat.S_IRWXO:
                problems.append(f"{path} is accessible to other users (mode {stat.filemode(mode)})")
    return problems
