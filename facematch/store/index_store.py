"""Keeps the FAISS indexes on disk in step with the catalogue.

One index per face kind ("custody" candidates, "scene" unidentified faces), stored as
``<index_dir>/<catalogue_id>/<kind>.faiss`` with a JSON sidecar recording the catalogue state it reflects.
An index that only lags behind the catalogue by *added* faces (an ingest still running, or one that was
killed) is brought up to date from the catalogue; anything else (another catalogue, other models,
deletions it has not seen) is refused with ``IndexStale`` until ``facematch index rebuild``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from facematch.errors import IndexMissing, IndexStale
from facematch.store.catalogue import Catalogue
from facematch.store.index import FaceIndex
from facematch.store.private_files import ensure_private_dir, warn_if_shared
from facematch.types import EMBEDDING_DIM, MODEL_NAME

__all__ = ["IndexStore"]

log = logging.getLogger(__name__)



class IndexStore:
    """The indexes of one catalogue, in ``index_dir``."""

    def __init__(self, catalogue: Catalogue, index_dir: str | Path):
        self.catalogue = catalogue
        self.folder = Path(index_dir) / catalogue.catalogue_id
        for folder in (Path(index_dir), self.folder):  # index files are 0600 (mkstemp); their folders 0700
            warn_if_shared(folder, what="index directory")

    def path(self, kind: str) -> Path:
        return self.folder / f"{kind}.faiss"

    def load(self, kind: str, *, catch_up: bool = True) -> FaceIndex:
        """The index of ``kind`` faces, consistent with the catalogue now.

        Raises ``IndexMissing`` when no index exists though the catalogue has such faces, and
        ``IndexStale`` when the index on disk cannot be made consistent by adding newer faces.
        """
        state = self.catalogue.face_state(kind)
        if not self.path(kind).exists():
            if state["count"] == 0:
                return FaceIndex(dim=EMBEDDING_DIM)
            raise IndexMissing(
                f"no {kind} index in {self.folder} for this catalogue ({state['count']} faces): "
                "run `facematch index rebuild`"
            )
        index, sidecar = FaceIndex.load(self.path(kind))
        problem = _mismatch(sidecar.get("catalogue_state", {}), state, index)
        if problem:
            raise IndexStale(f"the {kind} index at {self.path(kind)} {problem}: run `facematch index rebuild`")
        behind = state["max_face_id"] - sidecar["catalogue_state"]["max_face_id"]
        if behind > 0:
            if not catch_up:
                raise IndexStale(f"the {kind} index lags the catalogue: run `facematch index rebuild`")
            added = self._add_newer(index, kind, sidecar["catalogue_state"]["max_face_id"])
            log.info("%s index caught up with %d faces added since it was saved", kind, added)
        if index.ntotal != state["count"]:
            raise IndexStale(
                f"the {kind} index holds {index.ntotal} faces but the catalogue has {state['count']}: "
                "run `facematch index rebuild`"
            )
        return index

    def save(self, kind: str, index: FaceIndex) -> None:
        """Save atomically with the catalogue state the index now reflects."""
        ensure_private_dir(self.folder, what="index directory")
        state = self.catalogue.face_state(kind)
        index.save(self.path(kind), {"catalogue_state": state, "model": MODEL_NAME, "dim": EMBEDDING_DIM})

    def sync(self, kind: str) -> FaceIndex:
        """Load and catch up, or rebuild when the index is missing or stale; the result is saved."""
        try:
            index = self.load(kind)
        except (IndexMissing, IndexStale) as exc:
            log.warning("%s; rebuilding", exc)
            return self.rebuild(kind)
        self.save(kind, index)
        return index

    def rebuild(self, kind: str) -> FaceIndex:
        """Recreate the index of ``kind`` faces from the catalogue's embeddings and save it."""
        started = time.perf_counter()
        blocks = list(self.catalogue.iter_embeddings(kind))
        ids = np.concatenate([b[0] for b in blocks]) if blocks else np.zeros(0, dtype=np.int64)
        vectors = (np.concatenate([b[1] for b in blocks]) if blocks
                   else np.zeros((0, EMBEDDING_DIM), dtype=np.float32))
        index = FaceIndex.build(ids, vectors)
        self.save(kind, index)
        log.info("rebuilt %s index: %d faces in %.2f s", kind, len(ids), time.perf_counter() - started)
        return index

    def remove(self, kind: str, face_ids: list[int]) -> None:
        """Remove deleted faces (retention) and save; rebuilds if the index cannot be loaded."""
        try:
            index = FaceIndex.load(self.path(kind))[0] if self.path(kind).exists() else None
        except IndexStale:
            index = None
        if index is None:
            self.rebuild(kind)
            return
        index.remove(np.asarray(face_ids, dtype=np.int64))
        self.save(kind, index)
        self.load(kind)  # verifies the result against the catalogue

    def _add_newer(self, index: FaceIndex, kind: str, after_id: int) -> int:
        added = 0
        for ids, vectors in self.catalogue.iter_embeddings(kind, after_id=after_id):
            index.add(ids, vectors)
            added += len(ids)
        return added


def _mismatch(saved: dict, now: dict, index: FaceIndex) -> str | None:
    """Why a saved index cannot be caught up to the catalogue's state ``now``, or None."""
    if saved.get("catalogue_id") != now["catalogue_id"]:
        return "belongs to another catalogue"
    if saved.get("deletions") != now["deletions"]:
        return "predates deletions made in the catalogue"
    if saved.get("max_face_id", 0) > now["max_face_id"] or saved.get("count", 0) > now["count"]:
        return "holds faces the catalogue no longer has"
    if index.ntotal != saved.get("count"):
        return f"holds {index.ntotal} faces but its sidecar says {saved.get('count')}"
    if saved.get("count") and now["models"] and not set(saved.get("models", [])) <= set(now["models"]):
        return "was built with other embedding models"
    return None
