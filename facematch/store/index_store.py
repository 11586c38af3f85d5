"""Keeps the FAISS indexes on disk in step with the catalogue, and checks what they hold.

One index per face kind ("custody" candidates, "scene" unidentified faces), stored as
``<index_dir>/<catalogue_id>/<kind>.faiss`` with a JSON sidecar recording the catalogue state it was saved
against and the index's own content (its id set's digest and count, a digest of its vectors).

Every open compares the index's face ids with the catalogue's (ids only: cheap) and its vectors with the
catalogue's stored embeddings (all of them up to ``Settings.index_verify_full_max`` faces, else a
sample, and all after deletions or a failed update), then repairs in memory: faces added since the save
are caught up, faces the catalogue no longer has are removed, vectors that differ are replaced, a torn
or missing file is rebuilt; each repair is logged. When no other process is writing, the repaired index
is saved and leftovers of interrupted saves (``.tmp`` files) are removed. Only an index from another
catalogue or made with other models is refused (``IndexStale``).

Writers hold the data directory's :class:`~facematch.store.lock.WriterLock` and use
:meth:`IndexStore.load_for_write`, which reopens the file whenever another writer replaced it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facematch.errors import IndexMissing, IndexStale
from facematch.settings import Settings
from facematch.store.catalogue import Catalogue, utc_now
from facematch.store.index import FaceIndex
from facematch.store.lock import WriterLock
from facematch.store.private_files import ensure_private_dir, warn_if_shared
from facematch.types import EMBEDDING_DIM, MODEL_NAME

__all__ = ["IndexCheck", "IndexStore"]

log = logging.getLogger(__name__)

_TORN_RETRIES = 3  # a reader may see the pair mid-replacement: look again before calling it torn
_SHOWN_IDS = 10  # face ids named in a message


@dataclass
class IndexCheck:
    """How one index compares with the catalogue: ids it lacks (``missing``), ids the catalogue no longer
    has (``extra``), ids whose vector differs from the stored embedding (``differing``, of
    ``vectors_checked`` compared), and ``problem``: why the files could not be used as they are."""

    kind: str
    index_faces: int = 0
    catalogue_faces: int = 0
    missing: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    differing: list[int] = field(default_factory=list)
    vectors_checked: int = 0
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.differing or self.problem)

    def describe(self) -> str:
        """"ok (N faces)", or every difference found, with face ids."""
        if self.ok:
            return f"ok ({self.index_faces} faces)"
        parts = [self.problem] if self.problem else []
        if self.missing:
            parts.append(f"lacks {len(self.missing)} face(s) of the catalogue (ids {_ids(self.missing)})")
        if self.extra:
            parts.append(f"holds {len(self.extra)} face(s) the catalogue no longer has (ids {_ids(self.extra)})")
        if self.differing:
            parts.append(f"{len(self.differing)} vector(s) differ from the catalogue's embeddings "
                         f"(face ids {_ids(self.differing)})")
        return "; ".join(parts) + " -- repaired on next open, or run `facematch index rebuild`"

    def to_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}


def _ids(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:_SHOWN_IDS])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > _SHOWN_IDS else "")


class IndexStore:
    """The indexes of one catalogue, in ``index_dir``."""

    def __init__(self, catalogue: Catalogue, index_dir: str | Path, settings: Settings | None = None):
        self.catalogue = catalogue
        self.folder = Path(index_dir) / catalogue.catalogue_id
        self.settings = settings or Settings()
        self._seen: dict[str, tuple] = {}  # kind -> `_state` when this store last wrote or read the file
        for folder in (Path(index_dir), self.folder):  # index files are 0600 (mkstemp); their folders 0700
            warn_if_shared(folder, what="index directory")

    def path(self, kind: str) -> Path:
        return self.folder / f"{kind}.faiss"

    def writer(self, operation: str) -> WriterLock:
        """The data directory's writer lock for ``operation`` (waits ``settings.writer_wait_s``)."""
        return WriterLock(self.catalogue.data_dir, operation, wait_s=self.settings.writer_wait_s)

    def token(self, kind: str) -> str | None:
        """Names the saved file pair (a digest of its sidecar); None when there is none."""
        try:
            return hashlib.sha256(self.path(kind).with_suffix(".json").read_bytes()).hexdigest()
        except FileNotFoundError:
            return None

    def _state(self, kind: str) -> tuple:
        """What changes when another writer touched the index: its file, the catalogue's deletion count
        (a deletion whose index update failed leaves the file as it was), a stale mark."""
        return (self.token(kind), self.catalogue.face_state(kind)["deletions"], self._stale_mark(kind).exists())

    # -- opening ----------------------------------------------------------------------------------

    def load(self, kind: str) -> FaceIndex:
        """The index of ``kind`` faces, consistent with the catalogue now (never waits for a writer).

        Repairs are made in memory and saved when no other process is writing. Raises ``IndexStale`` for
        an index of another catalogue or made with other embedding models.
        """
        index, repaired = self._open(kind)
        if repaired or self._leftovers():
            lock = self.writer("index repair")
            if lock.try_acquire():
                try:
                    index = self.load_for_write(kind)
                finally:
                    lock.release()
        return index

    def load_for_write(self, kind: str, current: FaceIndex | None = None) -> FaceIndex:
        """For a holder of the writer lock: ``current`` if the file is still the one this store last
        saved or read, else the file reopened and checked (a repaired one is saved at once)."""
        self._remove_leftovers()
        if current is not None and self._seen.get(kind) == self._state(kind):
            return current
        index, repaired = self._open(kind)
        if repaired:
            self.save(kind, index)
            self._stale_mark(kind).unlink(missing_ok=True)
            self._seen[kind] = self._state(kind)
        return index

    def _open(self, kind: str) -> tuple[FaceIndex, bool]:
        """Read and check the index of ``kind``; returns it repaired in memory and whether it was."""
        mark = self._read_stale_mark(kind)
        try:
            index, sidecar = self._read(kind)
        except IndexMissing:
            if not len(self.catalogue.face_ids(kind)):
                return FaceIndex(dim=EMBEDDING_DIM), mark is not None
            log.warning("no %s index at %s: building it from the catalogue", kind, self.path(kind))
            return self._build(kind), True
        except IndexStale as exc:
            log.warning("%s: rebuilding the %s index from the catalogue", exc, kind)
            return self._build(kind), True
        self._refuse_foreign(kind, sidecar)
        check = self._compare(kind, index, full=self._needs_full_check(kind, sidecar))
        if mark is not None:
            log.warning("the %s index was marked stale (%s): checked in full against the catalogue",
                        kind, mark)
        self._repair(index, check)
        return index, mark is not None or not check.ok

    def _read(self, kind: str) -> tuple[FaceIndex, dict]:
        for attempt in range(_TORN_RETRIES):
            token = self.token(kind)
            try:
                index, sidecar = FaceIndex.load(self.path(kind))
                self._seen[kind] = (token, *self._state(kind)[1:])
                return index, sidecar
            except IndexStale:
                if attempt == _TORN_RETRIES - 1 or token == self.token(kind):
                    raise  # not being replaced right now: torn
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def _needs_full_check(self, kind: str, sidecar: dict) -> bool:
        """Every vector must be compared after a failed update or deletions made since the save: SQLite
        reuses the highest face id once it is deleted, so equal id sets can hide another person's vector."""
        saved = sidecar.get("catalogue_state", {})
        return (self._read_stale_mark(kind) is not None
                or saved.get("deletions") != self.catalogue.face_state(kind)["deletions"])

    def _refuse_foreign(self, kind: str, sidecar: dict) -> None:
        saved, now = sidecar.get("catalogue_state", {}), self.catalogue.face_state(kind)
        if saved.get("catalogue_id") != now["catalogue_id"]:
            problem = "belongs to another catalogue"
        elif saved.get("count") and now["models"] and not set(saved.get("models", [])) <= set(now["models"]):
            problem = "was built with other embedding models"
        else:
            return
        raise IndexStale(f"the {kind} index at {self.path(kind)} {problem}: run `facematch index rebuild`")

    # -- comparing with the catalogue ---------------------------------------------------------------

    def _compare(self, kind: str, index: FaceIndex, *, full: bool | None = None) -> IndexCheck:
        """Compare ids (always) and vectors (all when ``full``, or when the gallery is small; else a sample)."""
        with self.catalogue.snapshot():
            catalogue_ids, index_ids = self.catalogue.face_ids(kind), index.ids()
            common = np.intersect1d(catalogue_ids, index_ids, assume_unique=True)
            if not full and len(catalogue_ids) > self.settings.index_verify_full_max:
                rng = np.random.default_rng()
                common = np.sort(rng.choice(common, min(len(common), self.settings.index_verify_sample),
                                            replace=False))
            differing = self._differing(index, common)
        return IndexCheck(
            kind, index_faces=index.ntotal, catalogue_faces=len(catalogue_ids),
            missing=np.setdiff1d(catalogue_ids, index_ids, assume_unique=True).tolist(),
            extra=np.setdiff1d(index_ids, catalogue_ids, assume_unique=True).tolist(),
            differing=differing, vectors_checked=len(common))

    def _differing(self, index: FaceIndex, ids: np.ndarray) -> list[int]:
        """Of face ids (n,) held by both, those whose index vector is not bit-equal to the stored embedding."""
        differing = []
        for start in range(0, len(ids), 10_000):
            block = ids[start:start + 10_000].tolist()
            stored = self.catalogue.embeddings(block)
            expected = np.stack([stored[i] for i in block]) if block else np.empty((0, EMBEDDING_DIM), np.float32)
            unequal = (expected != index.vectors(np.asarray(block, dtype=np.int64))).any(axis=1)
            differing += [block[i] for i in np.flatnonzero(unequal)]
        return differing

    def _repair(self, index: FaceIndex, check: IndexCheck) -> None:
        if check.extra or check.differing:
            index.remove(np.asarray(check.extra + check.differing, dtype=np.int64))
        if check.extra:
            log.warning("%s index: removed %d face(s) the catalogue no longer has (ids %s)", check.kind,
                        len(check.extra), _ids(check.extra))
        if check.differing:
            log.warning("%s index: replaced %d vector(s) that differed from the catalogue's embeddings "
                        "(face ids %s)", check.kind, len(check.differing), _ids(check.differing))
        wanted = check.missing + check.differing
        stored = self.catalogue.embeddings(wanted)
        ids = np.asarray([i for i in wanted if i in stored], dtype=np.int64)
        if len(ids):
            index.add(ids, np.stack([stored[int(i)] for i in ids]))
        if check.missing:
            log.info("%s index caught up with %d face(s) added since it was saved", check.kind,
                     len(check.missing))

    def status(self, kind: str) -> IndexCheck:
        """How the saved index of ``kind`` compares with the catalogue, as the next open would check it
        (nothing is changed)."""
        return self.verify(kind, full=None)

    def verify(self, kind: str, *, full: bool | None = True) -> IndexCheck:
        """Compare the saved index with the catalogue: every face id, and every vector when ``full``
        (None: as an open does). Also checks that the sidecar's digests describe the index's content."""
        try:
            index, sidecar = self._read(kind)
            self._refuse_foreign(kind, sidecar)
        except IndexMissing as exc:
            catalogue_faces = len(self.catalogue.face_ids(kind))
            return IndexCheck(kind, catalogue_faces=catalogue_faces, problem=None if not catalogue_faces
                              else f"{exc}".replace(": run `facematch index rebuild`", ""))
        except IndexStale as exc:
            return IndexCheck(kind, problem=str(exc).replace("; run `facematch index rebuild`", ""))
        check = self._compare(kind, index, full=self._needs_full_check(kind, sidecar) if full is None else full)
        recorded = {k: sidecar["index"].get(k) for k in ("ids_sha256", "content_sha256")}
        if full and recorded != {k: v for k, v in index.content().items() if k in recorded}:
            check.problem = "its sidecar's digests do not describe its content"
        mark = self._read_stale_mark(kind)
        if mark and check.ok:
            check.problem = f"it was marked stale ({mark})"
        return check

    # -- writing ------------------------------------------------------------------------------------

    def save(self, kind: str, index: FaceIndex) -> None:
        """Save atomically, with the catalogue state it was saved against (the sidecar's ``index`` entry
        records what the index itself holds)."""
        ensure_private_dir(self.folder, what="index directory")
        state = self.catalogue.face_state(kind)
        index.save(self.path(kind), {"catalogue_state": state, "model": MODEL_NAME, "dim": EMBEDDING_DIM})
        self._seen[kind] = self._state(kind)

    def rebuild(self, kind: str) -> FaceIndex:
        """Recreate the index of ``kind`` faces from the catalogue's embeddings and save it."""
        with self.writer("index rebuild"):
            self._remove_leftovers()
            index = self._build(kind)
            self.save(kind, index)
            self._stale_mark(kind).unlink(missing_ok=True)
        return index

    def _build(self, kind: str) -> FaceIndex:
        started = time.perf_counter()
        with self.catalogue.snapshot():
            blocks = list(self.catalogue.iter_embeddings(kind))
        ids = np.concatenate([b[0] for b in blocks]) if blocks else np.zeros(0, dtype=np.int64)
        vectors = (np.concatenate([b[1] for b in blocks]) if blocks
                   else np.zeros((0, EMBEDDING_DIM), dtype=np.float32))
        index = FaceIndex.build(ids, vectors)
        log.info("built %s index from the catalogue: %d faces in %.2f s", kind, len(ids),
                 time.perf_counter() - started)
        return index

    def remove(self, kind: str, face_ids: list[int]) -> bool:
        """Remove deleted faces and save; the caller holds the writer lock and has committed the deletion.

        Never raises: the deletion is done. If the index cannot be updated it is marked stale (the next
        open checks it in full and repairs it) and False is returned.
        """
        try:
            index = self.load_for_write(kind)
            index.remove(np.asarray(face_ids, dtype=np.int64))
            self.save(kind, index)
            return True
        except Exception as exc:  # noqa: BLE001 -- the catalogue deletion is committed: report, repair later
            reason = f"removing {len(face_ids)} deleted face(s) failed: {type(exc).__name__}: {exc}"
            log.error("the %s index could not be updated (%s); it is marked stale and will be repaired "
                      "when next opened", kind, reason)
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._stale_mark(kind).write_text(json.dumps({"reason": reason, "at": utc_now()}))
            except OSError as mark_error:  # the open-time id check still finds the deleted faces
                log.error("could not mark the %s index stale: %s", kind, mark_error)
            return False

    # -- crash leftovers and stale marks -------------------------------------------------------------

    def _stale_mark(self, kind: str) -> Path:
        return self.folder / f"{kind}.stale"

    def _read_stale_mark(self, kind: str) -> str | None:
        try:
            return json.loads(self._stale_mark(kind).read_text()).get("reason", "no reason recorded")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return "unreadable stale mark"

    def _leftovers(self) -> list[Path]:
        return sorted(self.folder.glob(".*.tmp")) if self.folder.exists() else []

    def _remove_leftovers(self) -> None:
        """Temporary files of a save that never finished (only called under the writer lock)."""
        leftovers = self._leftovers()
        for path in leftovers:
            path.unlink(missing_ok=True)
        if leftovers:
            log.warning("removed %d temporary file(s) left by an interrupted index save: %s", len(leftovers),
                        ", ".join(p.name for p in leftovers))
