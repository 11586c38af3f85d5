"""The Python API: one ``Facematch`` object per data directory, mirroring the CLI command for command.

Designed to sit under a long-running service too: nothing loads at import, models load on first use,
each thread gets its own catalogue connection, and searches read a consistent index while an ingest
writes (the catalogue is in WAL mode; the index is caught up from the catalogue, never half-written).
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facematch.errors import CatalogueError, FacematchError, InvalidArgument, SourceNotFound
from facematch.evaluation import embed_cache
from facematch.faces.imaging import load_image, sha256_file
from facematch.faces.models import embedding_model
from facematch.faces.pipeline import FacePipeline
from facematch.ingest.bulk import IngestSummary, ProgressCallback, ingest, require_embedding_model
from facematch.ingest.sources import custody_items, scene_items
from facematch.search import review as _review
from facematch.search import two_person as _two_person
from facematch.search.bands import BandScheme
from facematch.search.calibration import load_band_scheme
from facematch.search.person import read_boxes_csv
from facematch.search.ranking import SearchResult
from facematch.search.run import search as _search
from facematch.settings import Settings
from facematch.store import deletion as _deletion
from facematch.store import maintenance, retention, verification
from facematch.store.accounts import Accounts, SearchScope
from facematch.store.audit_chain import AuditVerification, parse_head
from facematch.store.catalogue import Catalogue
from facematch.store.index import FaceIndex
from facematch.store.index_store import IndexStore
from facematch.types import EMBEDDING_DIM, IMAGE_KINDS, FaceBox
from facematch.validation import check_int, check_optional_text, check_text

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
            self._local.catalogue = Catalogue(self.settings.data_dir, audit_key_file=self.settings.audit_key_path)
        return self._local.catalogue

    @property
    def accounts(self) -> Accounts:
        """Users, agencies, collections, sharing and visibility (facematch/store/accounts.py)."""
        return Accounts(self.catalogue)

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

    def _text(self, field: str, value, kind: str = "id") -> str:
        return check_text(field, value, kind, self.settings.text_limits)

    def _optional(self, field: str, value, kind: str = "id") -> str | None:
        return check_optional_text(field, value, kind, self.settings.text_limits)

    def _user(self, user: str | None, field: str = "user") -> str:
        return default_user() if user is None else self._text(field, user, "name")

    # -- ingestion -------------------------------------------------------------------------------

    def ingest_custody(self, source: str | Path, *, workers: int | None = None, batch_size: int | None = None,
                       user: str | None = None, progress: ProgressCallback | None = None,
                       collection: str | None = None, allow_relabel: bool = False) -> IngestSummary:
        """Ingest custody images from a ``<subject_id>/<image>`` folder or a CSV manifest.

        ``collection`` (an existing collection's name) is the agency collection the new images join;
        without it they belong to none and the service shows them to nobody. An image already stored
        under another subject id is refused unless ``allow_relabel`` (``facematch.ingest.labels``); rows
        with invalid fields are recorded as failures.
        """
        target = self.accounts.collection(collection)["id"] if collection else None
        items = custody_items(source, self.settings.text_limits)
        summary = self._ingest(items, "custody", source, workers, batch_size, user, progress, allow_relabel)
        if target is not None:
            self.accounts.assign_run(summary.run_id, collection_id=target)
        return summary

    def ingest_scene(self, source: str | Path, *, case: str | None = None, workers: int | None = None,
                     batch_size: int | None = None, user: str | None = None,
                     progress: ProgressCallback | None = None, agency: str | None = None) -> IngestSummary:
        """Ingest crime-scene images (folder with ``case``, or a manifest with a case_ref column).

        With ``agency`` the images' cases become that agency's cases (created when new).
        """
        agency_id = self.accounts.agency_id(agency) if agency else None
        items = scene_items(source, self._optional("case ref", case), self.settings.text_limits)
        summary = self._ingest(items, "scene", source, workers, batch_size, user, progress, False)
        if agency_id is not None:
            self.accounts.assign_scene_run(summary.run_id, agency_id)
        return summary

    def _ingest(self, items, kind, source, workers, batch_size, user, progress, allow_relabel) -> IngestSummary:
        for name, value in (("workers", workers), ("batch size", batch_size)):
            if value is not None:
                check_int(name, value)
        settings = self.settings.replace(workers=workers, batch_size=batch_size)
        return ingest(self.catalogue, self.index_store, items, kind=kind, settings=settings,
                      user=self._user(user), source=os.path.abspath(source), progress=progress,
                      allow_relabel=allow_relabel)

    # -- search and review ------------------------------------------------------------------------

    def search(self, images: list[str | Path], *, case: str | None = None, top: int | None = None,
               box: tuple[int, int, int, int] | None = None,
               boxes: Sequence[tuple[int, int, int, int] | None] | str | Path | None = None,
               one_person: bool = False, user: str | None = None, reason: str | None = None,
               scope: SearchScope | None = None) -> SearchResult:
        """Search every face of each probe image; the result is stored and audited.

        ``box`` (x, y, w, h) marks the face to search in every image; ``boxes`` gives one box (or None)
        per image, or is a CSV file with header ``path,box`` (box "x,y,w,h"). With ``one_person`` the
        images (stills, or video clips: these imply it) show one unknown person and ``result.person``
        holds one fused candidate list (``facematch.search.person``). ``reason`` (the justification, DPA
        2018 s.62) is required. ``scope`` (``Accounts.search_scope``) limits the search to what its user
        may see, before ranking. Raises ``SourceNotFound`` for a missing probe file, ``InvalidArgument`` for
        bad parameters or a missing reason, ``NoFaceFound`` when no still of a person-level search is
        searchable, ``IndexStale``/``IndexMissing``. A result whose probes all failed
        (``searched_faces == 0``) is stored and returned all the same.
        Any difference between an index and the catalogue other than another catalogue or models
        (``IndexStale``) is repaired when the index is opened.
        """
        reason = _review.require_text(reason, "a reason for the search")
        top = check_int("top", self.settings.top if top is None else top)
        case, reason, user = self._optional("case ref", case), self._optional("reason", reason, "note"), self._user(user)
        if box is not None:
            box = tuple(check_int("box value", v, minimum=0) for v in box)
        if not images:
            raise InvalidArgument("give at least one probe image")
        paths = [Path(p) for p in images]
        for path in paths:
            if not path.exists():
                raise SourceNotFound(f"probe image {str(path)!r} does not exist")
        per_image = self._probe_boxes(paths, box, boxes)
        for kind in IMAGE_KINDS:
            require_embedding_model(self.catalogue, kind, self.settings)
        indexes = {kind: self._index(kind) for kind in IMAGE_KINDS}
        scoped = {} if scope is None else {
            "allowed": {"custody": scope.custody_face_ids, "scene": scope.scene_face_ids},
            "gallery": (scope.gallery_subjects, scope.gallery_faces)}
        return _search(self.catalogue, indexes, self.pipeline, paths, settings=self.settings,
                       bands=self.band_scheme(), top=top, user=user, case=case,
                       reason=reason, boxes=per_image, one_person=one_person, **scoped)

    @staticmethod
    def _probe_boxes(paths: list[Path], box, boxes) -> list[FaceBox | None] | None:
        """One FaceBox (or None) per probe path from ``box`` or ``boxes`` (a sequence or a CSV file)."""
        if box is not None and boxes is not None:
            raise InvalidArgument("give either box (one for every image) or boxes (one per image), not both")
        if box is not None:
            return [FaceBox.from_xywh(*box)] * len(paths)
        if boxes is None:
            return None
        if isinstance(boxes, (str, Path)):
            if not Path(boxes).is_file():
                raise SourceNotFound(f"boxes file {str(boxes)!r} does not exist")
            boxes = read_boxes_csv(boxes, paths)
        if len(boxes) != len(paths):
            raise InvalidArgument(f"boxes: {len(boxes)} given for {len(paths)} images (one per image, None for none)")
        return [FaceBox.from_xywh(*b) if b is not None else None for b in boxes]

    def review(self, search_id: int, *, reason: str | None = None, user: str | None = None
               ) -> tuple[SearchResult, list[_review.Decision]]:
        """A stored search and the decisions recorded on it; the viewing is audited with ``reason``
        (required) and ``user`` (default: the OS user). Raises ``NotFound``, ``InvalidArgument``."""
        check_int("search id", search_id)
        reason = self._optional("reason", reason, "note")
        return _review.review_search(self.catalogue, search_id, user=self._user(user), reason=reason)

    def export(self, search_id: int, *, output: str | Path, recipient: str | None = None,
               reason: str | None = None, user: str | None = None) -> dict:
        """Disclose a stored search: write it with its decisions as JSON to ``output`` (mode 0600), audited
        with ``recipient`` and ``reason`` (both required); returns the audit details (file, sha256...)."""
        check_int("search id", search_id)
        return _review.export_search(self.catalogue, search_id, output, user=self._user(user),
                                     recipient=self._optional("recipient", recipient, "name"),
                                     reason=self._optional("reason", reason, "note"))

    def decide(self, search_id: int, rank: int, *, decision: str, reviewer: str, note: str | None = None,
               probe: int | None = None, candidate_list: str = "custody") -> _review.Decision:
        """Record a reviewer's decision on candidate ``rank`` of ``candidate_list`` (custody|scene); audited.

        Raises ``DataDeleted`` for a candidate whose data was deleted under retention.
        """
        check_int("search id", search_id)
        check_int("rank", rank)
        if probe is not None:
            check_int("probe", probe)
        return _review.decide(self.catalogue, search_id, rank, decision=decision,
                              reviewer=self._text("reviewer", reviewer, "name"),
                              note=self._optional("note", note, "note"), probe=probe, candidate_list=candidate_list)

    def review_candidate(self, search_id: int, probe: int, rank: int, *, reviewer: str, decision: str,
                         note: str, candidate_list: str = "custody") -> _two_person.Review:
        """Record the first or second independent review of one candidate (two-person rule); audited."""
        cand = _two_person.candidate_id(self.catalogue, search_id, probe, candidate_list, rank)
        return _two_person.record_review(self.catalogue, cand, reviewer=self._text("reviewer", reviewer, "name"),
                                         decision=decision, note=self._text("note", note, "note"))

    def candidate_reviews(self, search_id: int, *, viewer: str) -> dict:
        """Reviews and outcome per candidate of a search, as ``viewer`` may see them (blind first review)."""
        return _two_person.reviews_by_candidate(self.catalogue, search_id, viewer)

    def review_queue(self, agency_id: int, *, reviewer: str) -> list[dict]:
        """Candidates of an agency's searches awaiting a first or a second review by ``reviewer``."""
        return _two_person.review_queue(self.catalogue, agency_id, reviewer)

    # -- index ---------------------------------------------------------------------------------------

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

    # -- deletion and retention (facematch.store.deletion, .verification, .retention) --------------------

    def delete_subject(self, subject: str, *, user: str | None = None, reason: str,
                       cache_dir: str | Path | None = None) -> int:
        """Delete a subject's images (with or without a face), faces, index entries and evaluation-cache
        entries (retention); past searches keep a marked candidate. Returns faces removed."""
        subject, actor, reason = self._text("subject id", subject), self._user(user), self._text("reason", reason, "note")
        return self._delete(lambda: _deletion.delete_subject(self.catalogue, subject, actor=actor, reason=reason),
                            cache_dir)

    def delete_case(self, case: str, *, user: str | None = None, reason: str,
                    cache_dir: str | Path | None = None) -> int:
        """Delete a case's crime-scene images, faces, index and cache entries; returns faces removed."""
        case, actor, reason = self._text("case ref", case), self._user(user), self._text("reason", reason, "note")
        return self._delete(lambda: _deletion.delete_case(self.catalogue, case, actor=actor, reason=reason), cache_dir)

    def delete_image(self, image: str, *, user: str | None = None, reason: str,
                     cache_dir: str | Path | None = None) -> int:
        """Delete one stored image named by its SHA-256 or its path (a readable file is matched by content
        too), with its faces, index and cache entries; returns faces removed."""
        sha256, path = self._image_target(self._text("image", image, "note"))
        actor, reason = self._user(user), self._text("reason", reason, "note")
        return self._delete(lambda: _deletion.delete_image(
            self.catalogue, sha256[0] if sha256 and not path else path, sha256=sha256, path=path,
            actor=actor, reason=reason), cache_dir)

    def _image_target(self, image: str) -> tuple[list[str], str | None]:
        if _deletion.is_sha256(image):
            return [image.lower()], None
        path = os.path.abspath(image)
        try:
            return ([sha256_file(path)] if os.path.isfile(path) else []), path
        except FacematchError:
            return [], path

    def _delete(self, delete, cache_dir: str | Path | None) -> int:
        """One deletion under the writer lock: catalogue, then index entries, then evaluation-cache entries.

        Once the catalogue has committed it never fails: an index that cannot be updated is marked stale
        and repaired when next opened (logged). Returns faces removed.
        """
        with self.index_store.writer("delete"):
            self.catalogue.mark_interrupted_runs()
            return self._finish_deletion(delete(), cache_dir)

    def _finish_deletion(self, done: _deletion.Deletion, cache_dir: str | Path | None) -> int:
        """The catalogue has committed (the caller holds the writer lock): remove the index entries and the
        evaluation-cache entries."""
        for kind, face_ids in done.face_ids.items():
            self.index_store.remove(kind, face_ids)
        with self._lock:
            self._indexes.clear()
        embed_cache.purge_hashes(self._cache_dir(cache_dir), done.image_sha256)
        return done.n_faces

    def _cache_dir(self, cache_dir: str | Path | None) -> Path:
        return Path(cache_dir) if cache_dir is not None else self.settings.evaluation.cache_dir

    def verify_deletion(self, scope: str, target: str, *, cache_dir: str | Path | None = None) -> dict:
        """Prove that a recorded deletion of ``scope`` ("subject", "image", "case") ``target`` left no trace.

        Returns ``{"scope", "target", "faces", "images", "checks": {name: [problems]}, "ok"}``: the
        catalogue's tables, the index files and sidecars, leftover temporary files, the evaluation cache
        (``facematch.store.verification``). Raises ``NotFound`` when no such deletion is recorded.
        """
        target = self._text(scope, target, "note")
        if scope == "image" and not _deletion.is_sha256(target):
            target = os.path.abspath(target)
        faces, digests = verification.recorded_deletions(self.catalogue, scope, target)
        cached = {_deletion.salted_digest(self.catalogue.catalogue_id, s)
                  for s in embed_cache.cached_hashes(self._cache_dir(cache_dir))}
        checks = {
            "catalogue": verification.catalogue_check(self.catalogue, scope, target, faces, digests),
            "index": verification.index_check(self.catalogue, self.settings.index_dir, faces),
            "files": verification.leftovers_check(self.settings.data_dir, self.index_store.folder),
            "evaluation cache": ([f"{len(cached & digests)} deleted image(s) still cached"] if cached & digests
                                 else []),
        }
        return {"scope": scope, "target": target, "faces": len(faces), "images": len(digests), "checks": checks,
                "ok": not any(checks.values())}

    def retention_due(self, *, today: dt.date | None = None) -> list[retention.DueSubject]:
        """Subjects with custody images due for deletion on ``today`` (default: today, UTC)."""
        return retention.due_subjects(self.catalogue, today=today or dt.datetime.now(dt.timezone.utc).date(),
                                      review_after_days=self.settings.retention.review_after_days)

    def retention_apply(self, *, reason: str, user: str | None = None, today: dt.date | None = None,
                        cache_dir: str | Path | None = None) -> list[retention.DueSubject]:
        """Delete every due custody image (one audit entry per subject); returns what was deleted."""
        reason, user = self._text("reason", reason, "note"), self._user(user)
        due = self.retention_due(today=today)
        with self.index_store.writer("retention"):
            for done in retention.apply_retention(self.catalogue, due, actor=user, reason=reason):
                self._finish_deletion(done, cache_dir)
        return due

    def embed(self, image: str | Path, *, purpose: str = "probe") -> np.ndarray:
        """``(n, 128) float32`` embeddings of the faces in one image (largest first)."""
        loaded = load_image(image, max_pixels=self.settings.max_pixels)
        faces = self.pipeline.analyse(loaded.pixels, purpose=purpose)
        return np.array([f.embedding for f in faces], dtype=np.float32).reshape(len(faces), EMBEDDING_DIM)

    # -- backup, restore, health (facematch.store.maintenance) -------------------------------------------

    def backup(self, dest: str | Path) -> dict:
        """Write a consistent backup of the catalogue (and calibration) to ``dest``; returns its manifest."""
        return maintenance.backup(self.catalogue, dest, audit_key=self.settings.audit_key_path)

    def restore(self, src: str | Path, *, force: bool = False) -> dict:
        """Replace this data directory's catalogue with the backup in ``src`` and rebuild the indexes.

        Refuses a data directory that holds anything unless ``force``. Returns the backup's manifest.
        """
        self.close()
        with self._lock:
            self._indexes.clear()
        manifest = maintenance.restore(src, self.settings.data_dir, force=force,
                                       audit_key=self.settings.audit_key_path)
        problems = maintenance.integrity_problems(self.catalogue)
        if problems:
            raise CatalogueError(f"the restored catalogue is damaged: {problems[0]}")
        self.rebuild_index()
        return manifest

    def doctor(self) -> list[dict]:
        """Health checks of this data directory, each ``{"check", "ok", "problems"}``.

        Permissions (no access for other users), catalogue integrity and foreign keys, index
        consistency, leftover temporary files, the stored faces' model against the pipeline's, the
        calibration against the pipeline's model, and the audit log's own verification where this
        version has one.
        """
        folders = (self.settings.data_dir, self.settings.index_dir)
        checks = {
            "permissions": maintenance.permission_problems(*folders),
            "catalogue integrity": maintenance.integrity_problems(self.catalogue),
            "index": [f"{kind}: {text}" for kind, text in self.index_status().items() if not text.startswith("ok")],
            "leftover files": verification.leftovers_check(*folders),
            "model": self._model_drift(),
            "calibration": _problems_of(self.band_scheme),
        }
        report = [{"check": name, "ok": not problems, "problems": problems} for name, problems in checks.items()]
        verify_audit = getattr(self, "verify_audit", None)
        if verify_audit is None:
            report.append({"check": "audit log", "ok": True, "problems": [], "note": "not available"})
        else:
            problems = _audit_problems(verify_audit)
            report.append({"check": "audit log", "ok": not problems, "problems": problems})
        return report

    def _model_drift(self) -> list[str]:
        """Kinds whose stored faces were embedded otherwise than the current settings embed."""
        wanted = embedding_model(self.settings.detection.landmarks)
        return [f"{kind} faces were embedded with {stored}, the pipeline embeds with {wanted}"
                for kind in IMAGE_KINDS if (stored := self.catalogue.embedding_model(kind)) not in (None, wanted)
                and self.catalogue.face_state(kind)["count"]]

    # -- audit -----------------------------------------------------------------------------------

    def audit(self, *, action: str | None = None, limit: int | None = None, reason: str | None = None,
              user: str | None = None) -> list[dict]:
        """The newest audit-log entries (newest first), optionally of one ``action``; reading them is
        itself audited with ``reason`` (required) and ``user`` (default: the OS user)."""
        limit = check_int("limit", self.settings.audit_limit if limit is None else limit)
        action = self._optional("action", action)
        reason = _review.require_text(self._optional("reason", reason, "note"), "a reason for reading the audit log")
        self.catalogue.audit(self._user(user), "audit.read", {"reason": reason, "action": action, "limit": limit})
        lock = self.index_store.writer("audit")
        if lock.try_acquire():  # show runs whose process died as interrupted; never wait for a writer
            try:
                self.catalogue.mark_interrupted_runs()
            finally:
                lock.release()
        return self.catalogue.audit_entries(action=action, limit=limit)

    def audit_head(self) -> str:
        """``<entry id>:<MAC>`` of the newest audit entry: keep it outside the catalogue and pass it to
        :meth:`verify_audit` later to detect removal of the newest entries. Raises ``NotFound`` when empty."""
        return self.catalogue.audit_head()

    def verify_audit(self, *, head: str | None = None) -> AuditVerification:
        """Check the audit chain, stored searches and decisions, and (given ``head``, a value or a file
        holding one, from :meth:`audit_head`) truncation. Read-only. Raises ``InvalidArgument`` for a
        malformed head, ``CatalogueError`` when the key is missing."""
        return self.catalogue.verify_audit(_parse_head(head) if head else None)

    # -- evaluation and calibration (no catalogue needed) -----------------------------------------

    def evaluate(self, source: str | Path, *, output: str | Path | None = None, baseline: bool = True,
                 fallback_box: tuple[int, int, int, int] | None = None, face: str | None = None,
                 n_boot: int | None = None, kind: str = "auto", data_root: str | Path | None = None,
                 gallery_per_subject: int | None = None, holdout_fraction: float | None = None,
                 seed: int | None = None, workers: int | None = None, num_jitters: int | None = None,
                 cache_dir: str | Path | None = None, no_cache: bool = False, progress=None,
                 group_by: str | None = None):
        """Measure accuracy on a labelled ``source`` (folder, protocol JSON, LFW pairs) beside the baseline.

        ``group_by`` (protocols): "auto" (None; the ``person`` attribute when the probes have it), "subject",
        "none" or a probe attribute: probes of one group are also scored as one person-level search.

        Returns ``(evaluation, paths)``: the :class:`facematch.evaluation.runner.Evaluation` and the report
        files written to ``output`` (None when no output is given). See :mod:`facematch.evaluation.workflows`.
        """
        from facematch.evaluation import workflows

        sources = workflows.SourceOptions(kind, _path(data_root), gallery_per_subject, holdout_fraction, seed)
        settings = workflows.evaluation_settings(self.settings, workers=workers, num_jitters=num_jitters)
        return workflows.run_evaluation(settings, Path(source), output=_path(output), baseline=baseline,
                                        fallback_box=fallback_box, face=face, n_boot=n_boot, sources=sources,
                                        cache_dir=_path(cache_dir), no_cache=no_cache, progress=progress,
                                        group_by=group_by)

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


def _parse_head(head: str) -> tuple[int, str]:
    """A head value ``ID:MAC``, or the path of a file holding one."""
    text = str(head)
    if ":" not in text or Path(text).is_file():
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgument(f"--head is neither ID:MAC nor a readable file: {exc}") from None
    try:
        return parse_head(text)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def _problems_of(check) -> list[str]:
    """Run a check that raises a named error when something is wrong; its message, or nothing."""
    try:
        check()
    except FacematchError as exc:
        return [str(exc)]
    return []


def _audit_problems(verify_audit) -> list[str]:
    """Problems reported by ``Facematch.verify_audit`` (added by the audit hash chain), whatever form its
    answer takes: a named error, False, a dict with ``ok``/``problems``, or a list of problems."""
    try:
        result = verify_audit()
    except FacematchError as exc:
        return [str(exc)]
    if isinstance(result, dict) and result.get("ok") is False:
        return [str(p) for p in result.get("problems") or [result]]
    if isinstance(result, (list, tuple)):
        return [str(p) for p in result]
    return ["the audit log failed its verification"] if result is False else []
