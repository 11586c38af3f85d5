"""Deletion under retention: every trace of the deleted images' biometric data leaves the catalogue.

One transaction removes the images (those without a face too), their faces and embeddings, a subject
left with no image, and clears the deleted faces from past searches' candidate rows, which stay as the
accountable record ("deleted under retention on DATE (reason)") without subject, case, face or path;
the notes reviewers wrote on those candidates (decisions and two-person reviews: they may describe the
person) are replaced by "note erased under retention on DATE", the decision itself kept.
A ``deletion_records`` row keeps the face ids and *salted* digests of the image hashes (never an
identifier in clear), so :mod:`facematch.store.verification` can later prove their absence. SQLite's
``secure_delete`` overwrites the freed pages and the WAL is checkpointed and truncated afterwards.
The index entries and evaluation-cache entries are removed by the caller (``Facematch``) with the
``Deletion`` returned here.

A subject and a case belong to one agency (schema 11): a deletion names whose, and is recorded with it,
so verification expects another agency's subject or case of the same reference to remain. A case's
deletion also erases the searches made in it (the case is closed: its own records go, not only its
images), the uploaded probe files only they used, and the case row.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from facematch.errors import InvalidArgument, NotFound
from facematch.store import audit_chain as chain
from facematch.store.catalogue import Catalogue, utc_now
from facematch.store.schema import ERASED_NOTE_PREFIX

__all__ = ["SCOPES", "Deletion", "salted_digest", "delete_subject", "delete_case", "delete_image",
           "delete_images", "is_sha256"]

SCOPES = ("subject", "image", "case")


@dataclass
class Deletion:
    """What one deletion removed: face ids per kind (for the index) and image hashes (for the cache)."""

    scope: str
    images: int
    face_ids: dict[str, list[int]] = field(default_factory=dict)
    image_sha256: list[str] = field(default_factory=list)
    record_id: int | None = None
    probe_files: list[str] = field(default_factory=list)

    @property
    def n_faces(self) -> int:
        return sum(len(ids) for ids in self.face_ids.values())


def salted_digest(catalogue_id: str, value: str) -> str:
    """SHA-256 of ``value`` salted with the catalogue id: comparable within one catalogue, not a hash in clear."""
    return hashlib.sha256(f"{catalogue_id}:{value}".encode()).hexdigest()


def is_sha256(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]{64}", text))


def delete_subject(catalogue: Catalogue, reference: str, *, actor: str, reason: str,
                   agency_id: int | None = None) -> Deletion:
    """Delete a subject with every image (with or without a face). Raises ``NotFound``.

    A reference belongs to its agency (two agencies' "P-123" are two people): ``agency_id`` names whose
    (0: the subject of no agency). Without it the reference must name one subject only: when several
    agencies use it, ``InvalidArgument`` names them and nothing is deleted (never every agency's at once).
    """
    named = [s for s in catalogue.subjects_named(reference) if agency_id is None or s["agency_id"] == agency_id]
    if not named:
        raise NotFound(f"no subject {reference!r} in the catalogue" if agency_id is None else
                       f"no subject {reference!r} of that agency in the catalogue")
    if len(named) > 1:
        owners = ", ".join(s["agency"] or "no agency" for s in named)
        raise InvalidArgument(f"subject {reference!r} exists in {len(named)} agencies ({owners}), each a different "
                              "person: name the agency whose subject to delete (--agency NAME; --agency '' for the "
                              "subject ingested without agency)")
    sid, owner = named[0]["id"], named[0]["agency_id"]
    image_ids = [r[0] for r in catalogue.conn.execute("SELECT id FROM images WHERE subject_id = ?", (sid,))]
    return delete_images(catalogue, image_ids, scope="subject", target=reference, actor=actor, reason=reason,
                         audit=("retention.delete_subject", catalogue._erasure_details("subject", reference)),
                         agency_id=owner)


def delete_case(catalogue: Catalogue, case_ref: str, *, actor: str, reason: str,
                agency_id: int | None = None) -> Deletion:
    """Delete a case completely: its crime-scene images and faces, its searches (their probes, candidate
    lists, decisions and reviews; uploaded probe files no other search uses), and its ``cases`` row. With
    ``agency_id`` only that agency's case (two agencies may use the same reference); without it every
    agency's, and the searches of no agency (command line) made under that reference. Other searches'
    candidates showing the case's faces stay, marked deleted, as for any deletion. Raises ``NotFound``.
    """
    conn = catalogue.conn
    cases = [r[0] for r in conn.execute("SELECT id FROM cases WHERE reference = ? AND (? IS NULL OR agency_id = ?)",
                                        (case_ref, agency_id, agency_id))]
    marks = ",".join("?" * len(cases)) or "NULL"
    image_ids = sorted({r[0] for r in conn.execute(
        "SELECT id FROM images WHERE kind = 'scene' AND case_ref = ? AND (? IS NULL OR owner_agency = ?)",
        (case_ref, agency_id, agency_id))} | {r[0] for r in conn.execute(
            f"SELECT image_id FROM image_owners WHERE case_id IN ({marks})", cases)})
    searches = sorted({r[0] for r in conn.execute(f"SELECT search_id FROM search_owners WHERE case_id IN ({marks})",
                                                  cases)}
                      | ({r[0] for r in conn.execute("SELECT id FROM searches WHERE case_ref = ?", (case_ref,))}
                         if agency_id is None else set()))
    if not image_ids and not searches and not cases:
        raise NotFound(f"no case {case_ref!r} in the catalogue")
    return delete_images(catalogue, image_ids, scope="case", target=case_ref, actor=actor, reason=reason,
                         audit=("retention.delete_case", {"case": case_ref}), agency_id=agency_id,
                         searches=searches, cases=cases)


def delete_image(catalogue: Catalogue, target: str, *, sha256: list[str], path: str | None, actor: str,
                 reason: str, agency_id: int | None = None) -> Deletion:
    """Delete the images with any of these content hashes or stored at ``path``. Raises ``NotFound``.

    ``target`` is what the user named (hash or path); it is recorded only as a salted digest. Each agency
    keeps its own record of a file: with ``agency_id`` only that agency's copy goes, without it every copy.
    """
    marks = ",".join("?" * len(sha256)) or "NULL"
    image_ids = [r[0] for r in catalogue.conn.execute(
        f"SELECT id FROM images WHERE (sha256 IN ({marks}) OR original_path = ?) AND (? IS NULL OR owner_agency = ?)",
        (*sha256, path, agency_id, agency_id))]
    if not image_ids:
        raise NotFound("no stored image has that content hash or path")
    return delete_images(catalogue, image_ids, scope="image", target=target, actor=actor, reason=reason,
                         audit=("retention.delete_image", {}), agency_id=agency_id)


def delete_images(catalogue: Catalogue, image_ids: list[int], *, scope: str, target: str, actor: str,
                  reason: str, audit: tuple[str, dict], agency_id: int | None = None,
                  searches: list[int] = (), cases: list[int] = ()) -> Deletion:
    """Delete images by id in one transaction (one audit entry ``audit`` = (action, details)); see module.

    ``agency_id``: the deletion was of that agency's copies only (recorded, so that verifying it expects
    other agencies' copies of the same files to remain). ``searches`` and ``cases`` (a case's deletion):
    stored searches erased whole, with their probes, candidates, decisions and reviews (the entry restates
    them as erased), and ``cases`` rows removed; uploaded probe files (under ``<data_dir>/probes``) no
    remaining search uses are removed once the transaction has committed, their salted hashes recorded."""
    conn = catalogue.conn
    conn.execute("PRAGMA secure_delete = ON")
    at = utc_now()
    with catalogue.atomic():
        marks = ",".join("?" * len(image_ids)) or "NULL"
        images = conn.execute(f"SELECT id, sha256, subject_id FROM images WHERE id IN ({marks})", image_ids).fetchall()
        faces = conn.execute(f"SELECT id, kind FROM faces WHERE image_id IN ({marks})", image_ids).fetchall()
        deletion = Deletion(scope, len(images), image_sha256=sorted({r["sha256"] for r in images}))
        for face in faces:
            deletion.face_ids.setdefault(face["kind"], []).append(face["id"])
        marked, candidates = _mark_candidates(conn, [f["id"] for f in faces], scope, target, at, reason)
        decisions, reviews = _erase_notes(conn, candidates, at)
        erased = _erase_searches(conn, list(searches))
        probe_files = _unused_probe_files(catalogue, erased.pop("probes"))
        deletion.probe_files = sorted(probe_files)
        searches, decisions, reviews = (set(marked) | set(searches), sorted(set(decisions) | erased["decisions"]),
                                        sorted(set(reviews) | erased["reviews"]))
        conn.execute(f"DELETE FROM images WHERE id IN ({marks})", image_ids)
        if scope == "case":  # the ingest runs keep their record, not the case's reference (schema 12)
            conn.execute("UPDATE ingest_runs SET case_ref = NULL WHERE case_ref = ? AND (? IS NULL OR agency_id = ?)",
                         (target, agency_id, agency_id))
        for start in range(0, len(cases), 500):  # their images and searches are gone: nothing refers to them
            chunk = list(cases[start:start + 500])
            conn.execute(f"DELETE FROM cases WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        subjects = sorted({r["subject_id"] for r in images if r["subject_id"] is not None})
        for sid in subjects:  # a subject with no image left is itself a trace
            conn.execute("DELETE FROM subjects WHERE id = ? AND NOT EXISTS "
                         "(SELECT 1 FROM images WHERE subject_id = ?)", (sid, sid))
        for kind, ids in deletion.face_ids.items():
            catalogue._count_deletions(kind, len(ids))
        deletion.record_id = conn.execute(
            "INSERT INTO deletion_records (at, actor, scope, target_digest, reason, face_ids, image_digests, "
            "agency_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (at, actor, scope, salted_digest(catalogue.catalogue_id, target), reason,
             json.dumps(sorted(f["id"] for f in faces)),
             json.dumps([salted_digest(catalogue.catalogue_id, s)
                         for s in sorted(set(deletion.image_sha256) | set(probe_files.values()))]),
             agency_id)).lastrowid
        action, details = audit
        if scope == "case":
            details = details | {"searches_erased": len(list(erased["searches"])), "cases": len(cases),
                                 "probe_files": len(probe_files)}
        # the candidate rows of past searches were rewritten on purpose: the chained entry restates their
        # searches' digests, so `audit verify` tells this from tampering (facematch.store.audit_chain)
        catalogue.audit(actor, action, details | {"images": len(images), "faces": len(faces), "reason": reason,
                                                  "deletion_record": deletion.record_id,
                                                  "search_digests": {str(s): chain.search_digest(conn, s)
                                                                     for s in searches},
                                                  "decision_digests": {str(d): chain.decision_digest(conn, d)
                                                                       for d in decisions},
                                                  "review_digests": {str(r): chain.review_digest(conn, r)
                                                                     for r in reviews}})
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no copy of the deleted pages left in the WAL
    for path in probe_files:  # after the commit: a rolled-back deletion keeps its files
        Path(path).unlink(missing_ok=True)
    return deletion


def _erase_searches(conn, searches: list[int]) -> dict:
    """Delete stored searches whole (probes, candidates, decisions, reviews and owner rows cascade).

    Returns the ids of the searches, decisions and reviews erased and the ``(path, sha256)`` of their probes.
    """
    out = {"searches": set(searches), "decisions": set(), "reviews": set(), "probes": set()}
    for start in range(0, len(searches), 500):
        chunk = list(searches[start:start + 500])
        marks = ",".join("?" * len(chunk))
        out["decisions"] |= {r[0] for r in conn.execute(
            f"SELECT d.id FROM decisions d JOIN candidates c ON c.id = d.candidate_id WHERE c.search_id IN ({marks})",
            chunk)}
        out["reviews"] |= {r[0] for r in conn.execute(
            f"SELECT r.id FROM reviews r JOIN candidates c ON c.id = r.candidate_id WHERE c.search_id IN ({marks})",
            chunk)}
        out["probes"] |= {(r[0], r[1]) for r in conn.execute(
            f"SELECT path, sha256 FROM search_probes WHERE search_id IN ({marks})", chunk)}
        conn.execute(f"DELETE FROM searches WHERE id IN ({marks})", chunk)
    return out


def _unused_probe_files(catalogue: Catalogue, probes: set[tuple[str, str | None]]) -> dict[str, str]:
    """``{path: sha256}`` of the erased searches' uploaded probe files (kept by the service under
    ``<data_dir>/probes``) that no remaining search uses. A probe given on the command line is the
    searcher's own file, never removed."""
    folder = (catalogue.data_dir / "probes").resolve()
    out = {}
    for path, sha in probes:
        file = Path(path.split("#", 1)[0])  # a video frame names its clip: "<path>#frame=N"
        if sha and file.resolve().parent == folder and not catalogue.conn.execute(
                "SELECT 1 FROM search_probes WHERE path = ? OR path LIKE ? LIMIT 1",
                (str(file), f"{file}#%")).fetchone():
            out[str(file)] = file.stem if is_sha256(file.stem) else sha
    return out


def _mark_candidates(conn, face_ids: list[int], scope: str, target: str, at: str, reason: str
                     ) -> tuple[set[int], set[int]]:
    """Past searches keep the candidate (rank, distance, band, decisions) but lose who and where it was.

    Returns the ids of the searches and of the candidate rows that changed.
    """
    clear = ("UPDATE candidates SET deleted_at = ?, deleted_reason = ?, subject_ref = NULL, case_ref = NULL, "
             "face_id = NULL, image_path = NULL WHERE ")
    touched = "SELECT id, search_id FROM candidates WHERE "
    conditions: list[tuple[str, tuple]] = []
    for start in range(0, len(face_ids), 500):
        chunk = face_ids[start:start + 500]
        conditions.append((f"face_id IN ({','.join('?' * len(chunk))})", tuple(chunk)))
    # also rows whose face an older version's deletion already unlinked (only those: a row still linked to
    # a face is another agency's subject or case of the same reference when its face is not deleted here)
    if scope == "subject":
        conditions.append(("list = 'custody' AND face_id IS NULL AND deleted_at IS NULL AND subject_ref = ?",
                           (target,)))
    elif scope == "case":
        conditions.append(("list = 'scene' AND face_id IS NULL AND deleted_at IS NULL AND case_ref = ?", (target,)))
    searches: set[int] = set()
    candidates: set[int] = set()
    for where, args in conditions:
        for cand_id, search_id in conn.execute(touched + where, args).fetchall():
            candidates.add(cand_id)
            searches.add(search_id)
        conn.execute(clear + where, (at, reason, *args))
    return searches, candidates


def _erase_notes(conn, candidates: set[int], at: str) -> tuple[list[int], list[int]]:
    """Replace the notes of decisions and reviews on ``candidates``; returns the ids of the rows changed."""
    marker = f"{ERASED_NOTE_PREFIX} on {at[:10]}"
    ids = sorted(candidates)
    decisions: list[int] = []
    reviews: list[int] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        decisions += [r[0] for r in conn.execute(
            f"SELECT id FROM decisions WHERE candidate_id IN ({marks}) AND note IS NOT NULL", chunk)]
        reviews += [r[0] for r in conn.execute(f"SELECT id FROM reviews WHERE candidate_id IN ({marks})", chunk)]
        conn.execute(f"UPDATE decisions SET note = ? WHERE candidate_id IN ({marks}) AND note IS NOT NULL",
                     (marker, *chunk))
        conn.execute(f"UPDATE reviews SET note = ? WHERE candidate_id IN ({marks})", (marker, *chunk))
    return decisions, reviews
