"""The files of a saved index: atomic writes, checksums, and the raw-vector file of ivf_pq indexes.

An ivf_pq index keeps product-quantised codes in RAM and the raw float32 vectors in a file beside it
(``<index>.vectors``: a 64-byte header of magic, count, dimension and SHA-256, then the ids sorted
ascending as int64, then the vectors as float32), memory-mapped once saved, for exact re-ranking.
Every file is written to a temporary name in its folder, fsynced and renamed, so a crash leaves the old
file or a torn one that loading refuses (``IndexStale``), never a silently wrong index.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import struct
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from facematch.errors import IndexStale

__all__ = ["VEC_MAGIC", "VEC_HEADER", "CHUNK", "FAULT_VARIABLE", "RawVectors", "temp_beside", "fsync_and_hash",
    "fsync_dir", "write_vectors", "open_vectors", "ids_digest", "content_digest", "fault_point"]

VEC_MAGIC = b"FMRAWVEC"
VEC_HEADER = 64  # magic(8) n(8) dim(8) sha256(32) padding(8)
CHUNK = 65536  # vectors per faiss add / file write, bounding temporary memory
#: Test hook naming a point of a save where this process dies: ``<point>`` (SIGKILL: nothing is cleaned
#: up, as in a power cut), ``<point>:raise`` (an OSError), optionally ``@N`` for the Nth time it is passed.
FAULT_VARIABLE = "FACEMATCH_FAULT"
_fault_passes: dict[str, int] = {}


class RawVectors:
    """Raw float32 vectors addressed by row: an optional read-only memmap base plus a growable RAM tail."""

    def __init__(self, dim: int, base: np.ndarray | None = None, source: tuple[Path, str] | None = None):
        self.dim = dim
        self.base_ = np.empty((0, dim), np.float32) if base is None else base
        self.source_ = source  # (file, sha256) the base is mapped from
        self.tail_ = np.empty((0, dim), np.float32)
        self.n_tail_ = 0

    def unchanged_copy_of(self, path: Path, n_live: int) -> bool:
        """True if `path` is the file the base maps and nothing was added or removed since."""
        return (self.source_ is not None and self.n_tail_ == 0 and len(self.base_) == n_live
                and path.exists() and path.resolve() == self.source_[0].resolve())

    @property
    def n_rows(self) -> int:
        return len(self.base_) + self.n_tail_

    def append(self, vectors: np.ndarray, reserve: int = 0) -> np.ndarray:
        """Store (n, dim) vectors; return their row numbers (n,) int64."""
        need = self.n_tail_ + len(vectors)
        if need > len(self.tail_):
            grown = np.empty((max(need, reserve, int(len(self.tail_) * 1.5)), self.dim), np.float32)
            grown[: self.n_tail_] = self.tail_[: self.n_tail_]
            self.tail_ = grown
        self.tail_[self.n_tail_ : need] = vectors
        rows = np.arange(self.n_rows, self.n_rows + len(vectors), dtype=np.int64)
        self.n_tail_ = need
        return rows

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Vectors (len(rows), dim) float32 of the given rows."""
        if self.n_tail_ == 0:
            return np.asarray(self.base_[rows])
        out = np.empty((len(rows), self.dim), np.float32)
        in_base = rows < len(self.base_)
        out[in_base] = self.base_[rows[in_base]]
        out[~in_base] = self.tail_[rows[~in_base] - len(self.base_)]
        return out


def temp_beside(path: Path, temps: list) -> Path:
    """A new temporary file in `path`'s folder (same filesystem, so os.replace is atomic), noted in `temps`."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temps.append(Path(name))
    return Path(name)


def fsync_and_hash(path: Path, sync: bool = True) -> str:
    """sha256 hex digest of a file, fsyncing it first when `sync`."""
    with open(path, "rb+" if sync else "rb") as f:
        if sync:
            os.fsync(f.fileno())
        return hashlib.file_digest(f, "sha256").hexdigest()


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_vectors(path: Path, ids: np.ndarray, rows: np.ndarray, raw: RawVectors) -> str:
    """Write header, ids (n,) int64 and their raw vectors (n, dim) float32 to `path`; return the sha256 of
    ids + vectors, which is also stored in the header so a file from another save is recognised."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        f.write(bytes(VEC_HEADER))
        blocks = (raw.take(rows[s : s + CHUNK]).astype("<f4").tobytes() for s in range(0, len(ids), CHUNK))
        for chunk in itertools.chain([ids.astype("<i8").tobytes()], blocks):
            digest.update(chunk)
            f.write(chunk)
        f.seek(0)
        f.write(VEC_MAGIC + struct.pack("<qq", len(ids), raw.dim) + digest.digest())
        f.flush()
        os.fsync(f.fileno())
    return digest.hexdigest()


def open_vectors(path: Path, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """Check a raw-vector file against the sidecar `info`; return its ids (n,) and a read-only memmap (n, dim)."""
    n, dim = int(info["ntotal"]), int(info["dim"])
    stale = f"raw vectors {path.name} do not match the index sidecar"
    if not path.exists():
        raise IndexStale(f"raw vectors {path.name} are missing; run `facematch index rebuild`")
    with open(path, "rb") as f:
        header = f.read(VEC_HEADER)
    size = VEC_HEADER + n * 8 + n * dim * 4
    if (len(header) < 56 or header[:8] != VEC_MAGIC or struct.unpack("<qq", header[8:24]) != (n, dim)
            or header[24:56].hex() != info.get("vectors_sha256") or path.stat().st_size != size):
        raise IndexStale(f"{stale} (torn or interrupted save); run `facematch index rebuild`")
    ids = np.fromfile(path, dtype="<i8", count=n, offset=VEC_HEADER).astype(np.int64)
    if n == 0:
        return ids, np.empty((0, dim), np.float32)
    return ids, np.memmap(path, dtype="<f4", mode="r", offset=VEC_HEADER + n * 8, shape=(n, dim))


def ids_digest(ids: np.ndarray) -> str:
    """sha256 hex digest of sorted face ids (n,) as little-endian int64: names an id set."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()


def content_digest(ids: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray]) -> str:
    """sha256 of sorted ids (n,) int64 then their vectors (n, dim) float32, read in chunks through
    ``vectors_of(ids_chunk)``: the same bytes `write_vectors` hashes, so one definition names what an
    index holds whatever its kind, and a catalogue's embeddings can be hashed the same way."""
    digest = hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    for start in range(0, len(ids), CHUNK):
        digest.update(np.ascontiguousarray(vectors_of(ids[start : start + CHUNK]), dtype="<f4").tobytes())
    return digest.hexdigest()


def fault_point(name: str) -> None:
    """Die here if ``$FACEMATCH_FAULT`` names this point (reliability tests of interrupted saves)."""
    wanted = os.environ.get(FAULT_VARIABLE, "")
    point, _, nth = wanted.partition("@")
    action = "kill"
    if ":" in point:
        point, action = point.split(":", 1)
    if point != name:
        return
    _fault_passes[name] = _fault_passes.get(name, 0) + 1
    if nth and _fault_passes[name] != int(nth):
        return
    if action == "raise":
        raise OSError(f"injected fault at {name}")
    os.kill(os.getpid(), signal.SIGKILL)
