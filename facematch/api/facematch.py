"""The Python API: one ``Facematch`` object per data directory, mirroring the CLI command for command.

Designed to sit under a long-running service too: nothing loads at import, models load on first use,
each thread gets its own catalogue connection, and searches read a consistent index while an ingest
writes (the catalogue is in WAL mode; the index is caught up from the catalogue, never half-written).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from facematch.api.base import default_user
from facematch.api.lifecycle import DataLifecycle
from facematch.api.measurement import Measurement
from facematch.errors import InvalidArgument, SourceNotFound
from facematch.faces.imaging import load_image
from facematch.ingest.bulk import IngestSummary, Owner, ProgressCallback, ingest, require_embedding_model
from facematch.ingest.sources import custody_items, scene_items
from facematch.search import review as _review
from facematch.search import two_person as _two_person
from facematch.search.person import read_boxes_csv
from facematch.search.ranking import SearchResult
from facematch.search.run import search as _search
from facematch.store.accounts import SearchScope
from facematch.store.audit_query import MAX_PAGE, AuditFilter, audit_page, reading_details
from facematch.types import EMBEDDING_DIM, IMAGE_KINDS, FaceBox
from facematch.validation import check_int

__all__ = ["Facematch", "CANDIDATE_LISTS", "DECISIONS", "default_user"]

#: The candidate lists of a search (custody subjects, unidentified crime-scene faces) and reviewers' decisions.
CANDIDATE_LISTS = _review.LISTS
DECISIONS = _review.DECISIONS


class Facematch(DataLifecycle, Measurement):
    """A facematch catalogue and its indexes.

    Parameters: ``data_dir`` (catalogue home), ``index_dir`` (FAISS files), ``settings`` (everything
    else); each defaults to ``Settings.from_env()``.
    """

    # -- ingestion -------------------------------------------------------------------------------

    def ingest_custody(self, source: str | Path, *, workers: int | None = None, batch_size: int | None = None,
                       user: str | None = None, progress: ProgressCallback | None = None,
                       collection: str | None = None, allow_relabel: bool = False,
                       on_run: Callable[[int], None] | None = None) -> IngestSummary:
        """Ingest custody images from a ``<subject_id>/<image>`` folder or a CSV manifest.

        ``collection`` (an existing collection's name) is the agency collection the new images join;
        without it they belong to none and the service shows them to nobody. An image the collection's
        agency already stores is skipped, and one it stores under another subject id is refused unless
        ``allow_relabel`` (``facematch.ingest.labels``); another agency's copies are never consulted, so
        the same file ingested by two agencies is stored once for each. Rows with invalid fields are
        recorded as failures. ``on_run`` is told the run's id once it is recorded.
        """
        target = self.accounts.collection(collection) if collection else None
        owner = Owner(target["agency_id"], target["id"]) if target else Owner()
        items = custody_items(source, self.settings.text_limits)
        return self._ingest(items, "custody", source, workers, batch_size, user, progress, allow_relabel, owner,
                            on_run=on_run)

    def ingest_scene(self, source: str | Path, *, case: str | None = None, workers: int | None = None,
                     batch_size: int | None = None, user: str | None = None,
                     progress: ProgressCallback | None = None, agency: str | None = None,
                     on_run: Callable[[int], None] | None = None) -> IngestSummary:
        """Ingest crime-scene images (folder with ``case``, or a manifest with a case_ref column).

        With ``agency`` the images' cases become that agency's cases (created when new). ``on_run`` is
        told the run's id once it is recorded.
        """
        owner = Owner(self.accounts.agency_id(agency)) if agency else Owner()
        case = self._optional("case ref", case)
        items = scene_items(source, case, self.settings.text_limits)
        return self._ingest(items, "scene", source, workers, batch_size, user, progress, False, owner,
                            case_ref=case, on_run=on_run)

    def _ingest(self, items, kind, source, workers, batch_size, user, progress, allow_relabel,
                owner: Owner, *, case_ref: str | None = None, on_run=None) -> IngestSummary:
        """One ingest run; ``owner``'s images only count as "already stored" (another agency's never do)."""
        for name, value in (("workers", workers), ("batch size", batch_size)):
            if value is not None:
                check_int(name, value)
        settings = self.settings.replace(workers=workers, batch_size=batch_size)
        return ingest(self.catalogue, self.index_store, items, kind=kind, settings=settings,
                      user=self._user(user), source=os.path.abspath(source), progress=progress,
                      allow_relabel=allow_relabel, owner=owner, case_ref=case_ref, on_run=on_run)

    # -- search and review ------------------------------------------------------------------------

    def search(self, images: list[str | Path], *, case: str | None = None, top: int | None = None,
               box: tuple[int, int, int, int] | None = None,
               boxes: Sequence[tuple[int, int, int, int] | None] | str | Path | None = None,
               one_person: bool = False, user: str | None = None, reason: str | None = None,
               scope: SearchScope | None = None, workers: int | None = None) -> SearchResult:
        """Search every face of each probe image; the result is stored and audited.

        ``box`` (x, y, w, h) marks the face to search in every image; ``boxes`` gives one box (or None)
        per image, or is a CSV file with header ``path,box`` (box "x,y,w,h"). With ``one_person`` the
        images (stills, or video clips: these imply it) show one unknown person and ``result.person``
        holds one fused candidate list (``facematch.search.person``). ``reason`` (the justification, DPA
        2018 s.62) is required. ``workers``: processes analysing the images (default
        ``settings.search_workers``: one per image, at most the CPU cores; 1: in this process; the same
        results either way, ``facematch.search.parallel``). ``scope`` (``Accounts.search_scope``) limits the
        search to what its user may see, before ranking. Raises ``SourceNotFound`` for a missing probe
        file, ``InvalidArgument`` for bad parameters or a missing reason, ``NoFaceFound`` when no still of
        a person-level search is searchable, ``IndexStale``/``IndexMissing``. A result whose probes all failed
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
        settings = self.settings if workers is None else self.settings.replace(
            search_workers=check_int("workers", workers))
        return _search(self.catalogue, indexes, self.pipeline, paths, settings=settings,
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

    def consult(self, search_id: int, *, user: str, reason: str, stated: bool = True) -> tuple[SearchResult, int]:
        """A stored search, its consultation audited with ``reason`` (``stated=False``: a reason composed for
        the user, marked so); returns it and the consultation's audit entry id."""
        check_int("search id", search_id)
        return _review.consult_search(self.catalogue, search_id, user=self._text("user", user, "name"),
                                      reason=self._optional("reason", reason, "note"), stated=stated)

    def continue_consultation(self, search_id: int, consultation: int, *, user: str, since: str) -> SearchResult:
        """A stored search that ``user`` consulted (audit entry ``consultation``, made at or after ``since``),
        without a new entry. Raises ``InvalidArgument`` when that entry is not such a consultation."""
        check_int("consultation", consultation)
        if _review.consultation_search(self.catalogue, consultation, user=user, since=since) != search_id:
            raise InvalidArgument(f"consultation {consultation} is not yours, is over, or is of another search: "
                                  "state a reason for viewing this search")
        return _review.load_search(self.catalogue, search_id)

    def consultation_search(self, consultation: int, *, user: str, since: str) -> int | None:
        """The search ``user``'s consultation (audit entry id) made at or after ``since`` covers, else None."""
        check_int("consultation", consultation)
        return _review.consultation_search(self.catalogue, consultation, user=user, since=since)

    def record_image_view(self, *, user: str, reason: str, **image: int | str) -> int:
        """Audit one image fetched with its own ``reason`` (``image``: its ids, e.g. search_id, probe_no,
        face_id, probe_sha256); returns the entry id."""
        return _review.record_image_view(self.catalogue, user=self._text("user", user, "name"),
                                         reason=self._optional("reason", reason, "note"), **image)

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

    def embed(self, image: str | Path, *, purpose: str = "probe") -> np.ndarray:
        """``(n, 128) float32`` embeddings of the faces in one image (largest first)."""
        loaded = load_image(image, max_pixels=self.settings.max_pixels)
        faces = self.pipeline.analyse(loaded.pixels, purpose=purpose)
        return np.array([f.embedding for f in faces], dtype=np.float32).reshape(len(faces), EMBEDDING_DIM)

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

    def audit_trail(self, where: AuditFilter, *, user: str, reason: str, before: int | None = None,
                    limit: int = 100, consultation: int | None = None) -> tuple[list[dict], int | None]:
        """One page of the entries ``where`` selects, newest first (filtered in SQL), and the ``before`` of
        the next page (None: last page). The reading is audited first, with ``reason`` and the filters,
        unless ``consultation`` (an entry of ``record_audit_reading``, checked by the caller with
        ``audit_reading``) already records this very page; a new entry then names the consultation."""
        if consultation is not None:
            same = self.audit_reading(consultation, user=user, since="")
            if same is not None and (same.get("filters"), same.get("before"), same.get("limit")) == (
                    where.to_dict(), before, limit):
                return audit_page(self.catalogue.conn, where, before=before, limit=limit)
        self.record_audit_reading(where, user=user, reason=reason, before=before, limit=limit,
                                  consultation=consultation)
        return audit_page(self.catalogue.conn, where, before=before, limit=limit)

    def record_audit_reading(self, where: AuditFilter, *, user: str, reason: str, before: int | None = None,
                             limit: int = 100, consultation: int | None = None) -> int:
        """Record ``user`` reading a page of the entries ``where`` selects (``audit.read`` with ``reason`` and
        the filters; naming the earlier ``consultation`` it goes on from, if any); returns the entry id."""
        reason = _review.require_text(self._optional("reason", reason, "note"), "a reason for reading the audit log")
        details = {"reason": reason, "filters": where.to_dict(), "before": before, "limit": limit}
        return self.catalogue.audit(self._user(user), "audit.read",
                                    details | ({"consultation": consultation} if consultation is not None else {}))

    def audit_reading(self, consultation: int, *, user: str, since: str) -> dict | None:
        """The reason, filters and page of ``user``'s reading of the audit trail recorded as entry
        ``consultation`` at or after ``since`` (ISO UTC), else None (someone else's, older, or no reading)."""
        check_int("consultation", consultation)
        return reading_details(self.catalogue.conn, consultation, user=user, since=since)

    def audit_export(self, where: AuditFilter, *, user: str, reason: str) -> Iterator[dict]:
        """Every entry ``where`` selects, newest first, read a page at a time as the iterator is consumed
        (in whichever thread: each page uses that thread's connection). The export is audited at once, before
        anything is read; the entries are those up to and including that record."""
        reason = _review.require_text(self._optional("reason", reason, "note"), "a reason for exporting the audit log")
        entry = self.catalogue.audit(self._user(user), "audit.export", {"reason": reason, "filters": where.to_dict()})
        return self._audit_pages(where, entry + 1)

    def _audit_pages(self, where: AuditFilter, before: int | None) -> Iterator[dict]:
        while before is not None:
            page, before = audit_page(self.catalogue.conn, where, before=before, limit=MAX_PAGE)
            yield from page
