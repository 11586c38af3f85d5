"""The Python API: one ``Facematch`` object per data directory, mirroring the CLI command for command.

Designed to sit under a long-running service too: nothing loads at import, models load on first use,
each thread gets its own catalogue connection, and searches read a consistent index while an ingest
writes (the catalogue is in WAL mode; the index is caught up from the catalogue, never half-written).
"""

from __future__ import annotations

import getpass
import logging
import threading
from pathlib import Path

import numpy as np

from facematch.search import review as _review
from facematch.search.bands import BandScheme
from facematch.store.catalogue import Catalogue, utc_now
from facematch.errors import InvalidArgument, SourceNotFound
from facematch.store.index import FaceIndex
from facematch.store.index_store import KINDS, IndexStore
from facematch.ingest.bulk import IngestSummary, ProgressCallback, ingest, require_embedding_model
from facematch.faces.pipeline import FacePipeline
from facematch.search.ranking import SearchResult, analyse_probes, rank_scene_faces, rank_subjects
from facematch.settings import Settings
from facematch.ingest.sources import custody_items, scene_items
from facematch.types import FaceBox

log = logging.getLogger(__name__)


def default_user() -> str:
    """The OS user, recorded when no ``user`` is given."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


class Facematch:
    """A facematch catalogue and its indexes.

    Parameters: ``data_dir`` (catalogue home), ``index_dir`` (FAISS files), ``settings`` (everything
    else); each defaults to ``Settings.from_env()``.
    """

    def __init__(self, data_dir: str | Path | None = None, *, index_dir: str | Path | None = None,
                 settings: Settings | None = None):
        base = settings or Settings.from_env()
        self.settings = base.replace(data_dir=Path(data_dir) if data_dir else None,
                                     index_dir=Path(index_dir) if index_dir else None)
        self._local = threading.local()
        self._pipeline: FacePipeline | None = None
        self._lock = threading.Lock()
        self._indexes: dict[str, tuple[dict, FaceIndex]] = {}
        self.catalogue  # open (and create or migrate) now, so errors surface at once

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def catalogue(self) -> Catalogue:
        """This thread's connection to the catalogue."""
        if getattr(self._local, "catalogue", None) is None:
            self._local.catalogue = Catalogue(self.settings.data_dir)
        return self._local.catalogue

    @property
    def index_store(self) -> IndexStore:
        return IndexStore(self.catalogue, self.settings.index_dir)

    @property
    def pipeline(self) -> FacePipeline:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = FacePipeline(self.settings)
            return self._pipeline

    def close(self) -> None:
        if getattr(self._local, "catalogue", None) is not None:
            self._local.catalogue.close()
            self._local.catalogue = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def band_scheme(self) -> BandScheme:
        """The calibration in use, or the uncalibrated defaults when none is configured."""
        from facematch.search.calibration import load_band_scheme

        return load_band_scheme(self.settings)

    def _index(self, kind: str) -> FaceIndex:
        state = self.catalogue.face_state(kind)
        with self._lock:
            cached = self._indexes.get(kind)
            if cached and cached[0] == state:
                return cached[1]
            index = IndexStore(self.catalogue, self.settings.index_dir).load(kind)
            self._indexes[kind] = (state, index)
            return index

    # -- ingestion -------------------------------------------------------------------------------

    def ingest_custody(self, source: str | Path, *, workers: int | None = None, batch_size: int | None = None,
                       user: str | None = None, progress: ProgressCallback | None = None) -> IngestSummary:
        """Ingest custody images from a ``<subject_id>/<image>`` folder or a CSV manifest."""
        return self._ingest(custody_items(source), "custody", source, workers, batch_size, user, progress)

    def ingest_scene(self, source: str | Path, *, case: str | None = None, workers: int | None = None,
                     batch_size: int | None = None, user: str | None = None,
                     progress: ProgressCallback | None = None) -> IngestSummary:
        """Ingest crime-scene images (folder with ``case``, or a manifest with a case_ref column)."""
        return self._ingest(scene_items(source, case), "scene", source, workers, batch_size, user, progress)

    def _ingest(self, items, kind, source, workers, batch_size, user, progress) -> IngestSummary:
        settings = self.settings.replace(workers=workers, batch_size=batch_size)
        return ingest(self.catalogue, self.index_store, items, kind=kind, settings=settings,
                      user=user or default_user(), source=str(source), progress=progress)

    # -- search and review ------------------------------------------------------------------------

    def search(self, images: list[str | Path], *, case: str | None = None, top: int | None = None,
               box: tuple[int, int, int, int] | None = None, user: str | None = None,
               reason: str | None = None) -> SearchResult:
        """Search every face of each probe image; the result is stored and audited.

        ``box`` (x, y, w, h) marks the face to search in each image. Raises ``SourceNotFound`` for a
        missing probe file, ``InvalidArgument`` for bad parameters, ``IndexStale``/``IndexMissing``.
        """
        top = self.settings.top if top is None else top
        if top < 1:
            raise InvalidArgument(f"top must be at least 1, got {top}")
        if not images:
            raise InvalidArgument("give at least one probe image")
        paths = [Path(p) for p in images]
        for path in paths:
            if not path.exists():
                raise SourceNotFound(f"probe image {str(path)!r} does not exist")
        face_box = FaceBox.from_xywh(*box) if box else None
        for kind in KINDS:
            require_embedding_model(self.catalogue, kind, self.settings)
        custody, scene = self._index("custody"), self._index("scene")
        bands = self.band_scheme()
        probes = analyse_probes(self.pipeline, paths, max_pixels=self.settings.max_pixels, box=face_box)
        for probe, embedding in probes:
            if embedding is None:
                continue
            probe.subjects = rank_subjects(self.catalogue, custody, embedding, top, bands,
                                           nonfrontal_offset=self.settings.nonfrontal_offset)
            probe.scene_faces = rank_scene_faces(self.catalogue, scene, embedding, top, bands,
                                                 exclude_sha256=probe.sha256)
        subjects, faces = self.catalogue.gallery_size()
        result = SearchResult(
            search_id=0, created_at=utc_now(), user=user or default_user(), case_ref=case, reason=reason,
            top=top, bands=bands.describe(), gallery_subjects=subjects, gallery_faces=faces,
            expected_false_candidates=bands.expected_false_candidates(subjects),
            probes=[p for p, _ in probes])
        params = {"top": top, "box": list(box) if box else None,
                  "expected_false_candidates": result.expected_false_candidates,
                  "pipeline": self.settings.describe_pipeline()}
        _review.store_search(self.catalogue, result, params)
        return result

    def review(self, search_id: int) -> tuple[SearchResult, list[_review.Decision]]:
        """A stored search and the decisions recorded on it. Raises ``NotFound``."""
        return (_review.load_search(self.catalogue, search_id),
                _review.decisions_for(self.catalogue, search_id))

    def decide(self, search_id: int, rank: int, *, decision: str, reviewer: str, note: str | None = None,
               probe: int | None = None, list: str = "custody") -> _review.Decision:
        """Record a reviewer's decision on one candidate (audited)."""
        return _review.decide(self.catalogue, search_id, rank, decision=decision, reviewer=reviewer,
                              note=note, probe=probe, list=list)

    # -- index and retention ------------------------------------------------------------------------

    def rebuild_index(self) -> dict[str, int]:
        """Recreate every index from the catalogue; returns faces per kind."""
        with self._lock:
            self._indexes.clear()
        return {kind: self.index_store.rebuild(kind).ntotal for kind in KINDS}

    def index_status(self) -> dict[str, str]:
        """For each kind: "ok (N faces)" or why the index cannot be used."""
        status = {}
        for kind in KINDS:
            try:
                status[kind] = f"ok ({self.index_store.load(kind, catch_up=False).ntotal} faces)"
            except Exception as exc:  # report, never raise: this is a diagnostic
                status[kind] = str(exc)
        return status

    def delete_subject(self, subject: str, *, user: str | None = None, reason: str) -> int:
        """Delete a subject's images, faces and index entries (retention); returns faces removed."""
        face_ids = self.catalogue.delete_subject(subject, actor=user or default_user(), reason=reason)
        self.index_store.remove("custody", face_ids)
        return len(face_ids)

    def delete_case(self, case: str, *, user: str | None = None, reason: str) -> int:
        """Delete a case's crime-scene images, faces and index entries; returns faces removed."""
        face_ids = self.catalogue.delete_case(case, actor=user or default_user(), reason=reason)
        self.index_store.remove("scene", face_ids)
        return len(face_ids)

    def embed(self, image: str | Path, *, purpose: str = "probe") -> np.ndarray:
        """``(n, 128) float32`` embeddings of the faces in one image (largest first)."""
        from facematch.faces.imaging import load_image

        loaded = load_image(image, max_pixels=self.settings.max_pixels)
        faces = self.pipeline.analyse(loaded.pixels, purpose=purpose)
        return np.array([f.embedding for f in faces], dtype=np.float32).reshape(len(faces), 128)
