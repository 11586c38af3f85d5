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

from facematch.errors import InvalidArgument, SourceNotFound
from facematch.faces.imaging import load_image
from facematch.faces.pipeline import FacePipeline
from facematch.ingest.bulk import IngestSummary, ProgressCallback, ingest, require_embedding_model
from facematch.ingest.sources import custody_items, scene_items
from facematch.search import review as _review
from facematch.search.bands import BandScheme
from facematch.search.calibration import load_band_scheme
from facematch.search.ranking import SearchResult
from facematch.search.run import search as _search
from facematch.settings import Settings
from facematch.store.catalogue import Catalogue
from facematch.store.index import FaceIndex
from facematch.store.index_store import IndexStore
from facematch.types import EMBEDDING_DIM, IMAGE_KINDS, FaceBox

__all__ = ["Facematch", "CANDIDATE_LISTS", "DECISIONS", "default_user"]

#: The candidate lists of a search (custody subjects, unidentified crime-scene faces) and reviewers' decisions.
CANDIDATE_LISTS = _review.LISTS
DECISIONS = _review.DECISIONS

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

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def catalogue(self) -> Catalogue:
        """This thread's connection to the catalogue."""
        if getattr(self._local, "catalogue", None) is None:
            self._local.catalogue = Catalogue(self.settings.data_dir)
        return self._local.catalogue

    @property
    def index_store(self) -> IndexStore:
        return IndexStore(self.catalogue, self.settings.index_dir, self.settings)

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
        return load_band_scheme(self.settings)

    def _index(self, kind: str) -> FaceIndex:
        """The index of ``kind``, reused while neither the catalogue's faces nor the index file changed."""
        store = self.index_store
        with self._lock:
            cached = self._indexes.get(kind)
            if cached and cached[0] == (self.catalogue.face_state(kind), store.token(kind)):
                return cached[1]
            index = store.load(kind)
            self._indexes[kind] = ((self.catalogue.face_state(kind), store.token(kind)), index)
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
        missing probe file, ``InvalidArgument`` for bad parameters, ``IndexStale`` for an index of another
        catalogue or models (any other difference from the catalogue is repaired when the index is opened).
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
        for kind in IMAGE_KINDS:
            require_embedding_model(self.catalogue, kind, self.settings)
        indexes = {kind: self._index(kind) for kind in IMAGE_KINDS}
        return _search(self.catalogue, indexes, self.pipeline, paths, settings=self.settings,
                       bands=self.band_scheme(), top=top, user=user or default_user(), case=case,
                       reason=reason, box=FaceBox.from_xywh(*box) if box else None)

    def review(self, search_id: int) -> tuple[SearchResult, list[_review.Decision]]:
        """A stored search and the decisions recorded on it. Raises ``NotFound``."""
        return (_review.load_search(self.catalogue, search_id),
                _review.decisions_for(self.catalogue, search_id))

    def decide(self, search_id: int, rank: int, *, decision: str, reviewer: str, note: str | None = None,
               probe: int | None = None, candidate_list: str = "custody") -> _review.Decision:
        """Record a reviewer's decision on candidate ``rank`` of ``candidate_list`` (custody|scene); audited."""
        return _review.decide(self.catalogue, search_id, rank, decision=decision, reviewer=reviewer,
                              note=note, probe=probe, candidate_list=candidate_list)

    # -- index and retention ------------------------------------------------------------------------

    def rebuild_index(self) -> dict[str, int]:
        """Recreate every index from the catalogue; returns faces per kind."""
        with self._lock:
            self._indexes.clear()
        store = self.index_store
        with store.writer("index rebuild"):
            self.catalogue.mark_interrupted_runs()
            return {kind: store.rebuild(kind).ntotal for kind in IMAGE_KINDS}

    def index_status(self) -> dict[str, str]:
        """For each kind: "ok (N faces)", or every difference from the catalogue the next open would
        repair (face ids lacking, held though deleted, vectors differing), or why it cannot be used."""
        status = {}
        for kind in IMAGE_KINDS:
            try:
                status[kind] = self.index_store.status(kind).describe()
            except Exception as exc:  # report, never raise: this is a diagnostic
                status[kind] = str(exc)
        return status

    def verify_index(self) -> dict[str, dict]:
        """Compare every vector of each saved index with the catalogue's stored embedding (nothing is
        changed); per kind: ``ok``, ``missing``/``extra``/``differing`` face ids, ``problem``."""
        return {kind: self.index_store.verify(kind).to_dict() for kind in IMAGE_KINDS}

    def delete_subject(self, subject: str, *, user: str | None = None, reason: str) -> int:
        """Delete a subject's images, faces and index entries (retention); returns faces removed.

        One operation under the writer lock; once the catalogue has committed it never fails: an index
        that cannot be updated is marked stale and repaired when next opened (logged)."""
        return self._delete("custody", lambda actor: self.catalogue.delete_subject(subject, actor=actor,
                                                                                   reason=reason), user)

    def delete_case(self, case: str, *, user: str | None = None, reason: str) -> int:
        """Delete a case's crime-scene images, faces and index entries; returns faces removed (as
        `delete_subject`)."""
        return self._delete("scene", lambda actor: self.catalogue.delete_case(case, actor=actor, reason=reason),
                            user)

    def _delete(self, kind: str, delete, user: str | None) -> int:
        store = self.index_store
        with store.writer("delete"):
            self.catalogue.mark_interrupted_runs()
            face_ids = delete(user or default_user())
            store.remove(kind, face_ids)
        with self._lock:
            self._indexes.pop(kind, None)
        return len(face_ids)

    def embed(self, image: str | Path, *, purpose: str = "probe") -> np.ndarray:
        """``(n, 128) float32`` embeddings of the faces in one image (largest first)."""
        loaded = load_image(image, max_pixels=self.settings.max_pixels)
        faces = self.pipeline.analyse(loaded.pixels, purpose=purpose)
        return np.array([f.embedding for f in faces], dtype=np.float32).reshape(len(faces), EMBEDDING_DIM)

    # -- audit -----------------------------------------------------------------------------------

    def audit(self, *, action: str | None = None, limit: int | None = None) -> list[dict]:
        """The newest audit-log entries (newest first), optionally of one ``action``."""
        limit = self.settings.audit_limit if limit is None else limit
        if limit < 1:
            raise InvalidArgument(f"limit must be at least 1, got {limit}")
        lock = self.index_store.writer("audit")
        if lock.try_acquire():  # show runs whose process died as interrupted; never wait for a writer
            try:
                self.catalogue.mark_interrupted_runs()
            finally:
                lock.release()
        return self.catalogue.audit_entries(action=action, limit=limit)

    # -- evaluation and calibration (no catalogue needed) -----------------------------------------

    def evaluate(self, source: str | Path, *, output: str | Path | None = None, baseline: bool = True,
                 fallback_box: tuple[int, int, int, int] | None = None, face: str | None = None,
                 n_boot: int | None = None, kind: str = "auto", data_root: str | Path | None = None,
                 gallery_per_subject: int | None = None, holdout_fraction: float | None = None,
                 seed: int | None = None, workers: int | None = None, num_jitters: int | None = None,
                 cache_dir: str | Path | None = None, no_cache: bool = False, progress=None):
        """Measure accuracy on a labelled ``source`` (folder, protocol JSON, LFW pairs) beside the baseline.

        Returns ``(evaluation, paths)``: the :class:`facematch.evaluation.runner.Evaluation` and the report
        files written to ``output`` (None when no output is given). See :mod:`facematch.evaluation.workflows`.
        """
        from facematch.evaluation import workflows

        sources = workflows.SourceOptions(kind, _path(data_root), gallery_per_subject, holdout_fraction, seed)
        settings = workflows.evaluation_settings(self.settings, workers=workers, num_jitters=num_jitters)
        return workflows.run_evaluation(settings, Path(source), output=_path(output), baseline=baseline,
                                        fallback_box=fallback_box, face=face, n_boot=n_boot, sources=sources,
                                        cache_dir=_path(cache_dir), no_cache=no_cache, progress=progress)

    def calibrate(self, sources: list[str | Path], *, output: str | Path | None = None,
                  strong_fmr: float | None = None, possible_fmr: float | None = None,
                  weak_fmr: float | None = None, strict: bool = False, listed_pairs_only: bool = False,
                  kind: str = "auto", data_root: str | Path | None = None, gallery_per_subject: int | None = None,
                  holdout_fraction: float | None = None, seed: int | None = None, workers: int | None = None,
                  num_jitters: int | None = None, cache_dir: str | Path | None = None, no_cache: bool = False,
                  progress=None) -> tuple[dict, Path]:
        """Set the band thresholds from labelled ``sources`` for target FMRs (None: the settings' targets);
        writes ``output`` or ``<data_dir>/calibration.json``. Returns the document and the path written."""
        from facematch.evaluation import workflows

        options = workflows.SourceOptions(kind, _path(data_root), gallery_per_subject, holdout_fraction, seed)
        settings = workflows.evaluation_settings(self.settings, workers=workers, num_jitters=num_jitters)
        targets = {"strong": strong_fmr, "possible": possible_fmr, "weak": weak_fmr}
        return workflows.run_calibration(settings, [Path(s) for s in sources], output=_path(output),
                                         fmr_targets=targets, strict=strict, listed_pairs_only=listed_pairs_only,
                                         sources=options, cache_dir=_path(cache_dir), no_cache=no_cache,
                                         progress=progress)

    def protocol(self, folder: str | Path, output: str | Path, *, gallery_per_subject: int | None = None,
                 holdout_fraction: float | None = None, seed: int | None = None, name: str | None = None):
        """Write an evaluation protocol (JSON) split from a labelled ``<identity>/<image>`` folder."""
        from facematch.evaluation import workflows

        return workflows.write_protocol(self.settings, Path(folder), Path(output),
                                        gallery_per_subject=gallery_per_subject,
                                        holdout_fraction=holdout_fraction, seed=seed, name=name)


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)
