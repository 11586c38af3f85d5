"""The data's life cycle through the API: indexes, deletion and its proof, retention, backup, restore and
health checks (facematch.store.deletion, .verification, .retention, .maintenance)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from facematch.api.base import FacematchBase
from facematch.errors import CatalogueError, FacematchError, InvalidArgument
from facematch.evaluation import embed_cache
from facematch.faces.imaging import sha256_file
from facematch.faces.models import embedding_model
from facematch.store import deletion as _deletion
from facematch.store import maintenance, retention, verification
from facematch.store.audit_chain import AuditVerification, parse_head
from facematch.types import IMAGE_KINDS

__all__ = ["DataLifecycle"]


class DataLifecycle(FacematchBase):
    """Index, deletion, retention and maintenance methods of :class:`facematch.api.Facematch`."""

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
                       cache_dir: str | Path | None = None, agency: str | None = None) -> int:
        """Delete a subject's images (with or without a face), faces, index entries and evaluation-cache
        entries (retention); past searches keep a marked candidate. Returns faces removed.

        A reference belongs to its agency: ``agency`` names whose subject ("": the one ingested without
        agency). Without it, a reference several agencies use is refused (``InvalidArgument``)."""
        subject, actor, reason = self._text("subject id", subject), self._user(user), self._text("reason", reason, "note")
        agency_id = None if agency is None else self.accounts.agency_id(agency) if agency else 0
        return self._delete(lambda: _deletion.delete_subject(self.catalogue, subject, actor=actor, reason=reason,
                                                             agency_id=agency_id), cache_dir)

    def delete_case(self, case: str, *, user: str | None = None, reason: str,
                    cache_dir: str | Path | None = None, agency: str | None = None) -> int:
        """Delete a case completely (``facematch.store.deletion.delete_case``: its crime-scene images, faces,
        index and cache entries, its searches with their probes and leads, the case row); returns faces
        removed. With ``agency``, only that agency's case of this reference (another's of the same name stays)."""
        case, actor, reason = self._text("case ref", case), self._user(user), self._text("reason", reason, "note")
        agency_id = self.accounts.agency_id(agency) if agency else None
        return self._delete(lambda: _deletion.delete_case(self.catalogue, case, actor=actor, reason=reason,
                                                          agency_id=agency_id), cache_dir)

    def delete_image(self, image: str, *, user: str | None = None, reason: str,
                     cache_dir: str | Path | None = None, agency: str | None = None) -> int:
        """Delete one stored image named by its SHA-256 or its path (a readable file is matched by content
        too), with its faces, index and cache entries; returns faces removed. Each agency holds its own
        record of a file: with ``agency`` only that agency's copy is deleted, without it every copy."""
        sha256, path = self._image_target(self._text("image", image, "note"))
        actor, reason = self._user(user), self._text("reason", reason, "note")
        agency_id = self.accounts.agency_id(agency) if agency else None
        return self._delete(lambda: _deletion.delete_image(
            self.catalogue, sha256[0] if sha256 and not path else path, sha256=sha256, path=path,
            actor=actor, reason=reason, agency_id=agency_id), cache_dir)

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

    def verify_deletion(self, scope: str, target: str, *, cache_dir: str | Path | None = None,
                        agency: str | None = None) -> dict:
        """Prove that a recorded deletion of ``scope`` ("subject", "image", "case") ``target`` left no trace.

        A reference belongs to its agency: ``agency`` limits the proof to the deletion of that agency's
        data ("": the data of no agency); without it every recorded deletion of ``target`` is covered.
        Returns ``{"scope", "target", "agencies", "faces", "images", "checks": {name: [problems]}, "ok"}``:
        ``agencies`` names whose deletions the proof covers; the checks are the catalogue's tables, the
        index files and sidecars, leftover temporary files, the evaluation cache
        (``facematch.store.verification``). Raises ``NotFound`` when no such deletion is recorded.
        """
        target = self._text(scope, target, "note")
        if scope == "image" and not _deletion.is_sha256(target):
            target = os.path.abspath(target)
        agency_id = None if agency is None else self.accounts.agency_id(agency) if agency else 0
        faces, digests, agencies = verification.recorded_deletions(self.catalogue, scope, target, agency_id=agency_id)
        covered = verification.covered_agencies(self.catalogue, scope, target, agency_id=agency_id)
        cached = {_deletion.salted_digest(self.catalogue.catalogue_id, s)
                  for s in embed_cache.cached_hashes(self._cache_dir(cache_dir))}
        checks = {
            "catalogue": verification.catalogue_check(self.catalogue, scope, target, faces, digests, agencies),
            "index": verification.index_check(self.catalogue, self.settings.index_dir, faces),
            "files": (verification.leftovers_check(self.settings.data_dir, self.index_store.folder)
                      + verification.probe_files_check(self.catalogue, digests)),
            "evaluation cache": ([f"{len(cached & digests)} deleted image(s) still cached"] if cached & digests
                                 else []),
        }
        return {"scope": scope, "target": target, "agencies": covered, "faces": len(faces), "images": len(digests),
                "checks": checks, "ok": not any(checks.values())}

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
        calibration against the pipeline's model, and the audit log's own verification (the keyed hash
        chain).
        """
        folders = (self.settings.data_dir, self.settings.index_dir)
        checks = {
            "permissions": maintenance.permission_problems(*folders),
            "catalogue integrity": maintenance.integrity_problems(self.catalogue),
            "index": [f"{kind}: {text}" for kind, text in self.index_status().items() if not text.startswith("ok")],
            "leftover files": verification.leftovers_check(*folders),
            "model": self._model_drift(),
            "calibration": _problems_of(self.band_scheme),
            "audit log": _problems_of(lambda: self._raise_audit_findings()),
        }
        return [{"check": name, "ok": not problems, "problems": problems} for name, problems in checks.items()]

    def _raise_audit_findings(self) -> None:
        report = self.verify_audit()
        if not report.ok:
            raise CatalogueError("; ".join(report.findings) or "the audit log failed its verification")

    def _model_drift(self) -> list[str]:
        """Kinds whose stored faces were embedded otherwise than the current settings embed."""
        wanted = embedding_model(self.settings.detection.landmarks)
        return [f"{kind} faces were embedded with {stored}, the pipeline embeds with {wanted}"
                for kind in IMAGE_KINDS if (stored := self.catalogue.embedding_model(kind)) not in (None, wanted)
                and self.catalogue.face_state(kind)["count"]]

    def audit_head(self) -> str:
        """``<entry id>:<MAC>`` of the newest audit entry: keep it outside the catalogue and pass it to
        :meth:`verify_audit` later to detect removal of the newest entries. Raises ``NotFound`` when empty."""
        return self.catalogue.audit_head()

    def verify_audit(self, *, head: str | None = None) -> AuditVerification:
        """Check the audit chain, stored searches and decisions, and (given ``head``, a value or a file
        holding one, from :meth:`audit_head`) truncation. Read-only. Raises ``InvalidArgument`` for a
        malformed head, ``CatalogueError`` when the key is missing."""
        return self.catalogue.verify_audit(_parse_head(head) if head else None)


def _problems_of(check) -> list[str]:
    """Run a check that raises a named error when something is wrong; its message, or nothing."""
    try:
        check()
    except FacematchError as exc:
        return [str(exc)]
    return []


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
