"""Stored searches and reviewers' decisions: what was shown to whom, and what a person decided.

Every search is written with its user, case reference, reason, bands and candidates; every decision is
a new row (a later decision on the same candidate does not erase an earlier one) and an audit entry.
Each audit entry holds a digest of the rows it records, so ``facematch audit verify`` notices a stored
search or decision edited afterwards. Viewing a stored search and exporting it (disclosure) are audited
with their reason, as DPA 2018 s.62 asks of consultation and disclosure.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from facematch.errors import DataDeleted, InvalidArgument, NotFound
from facematch.search.person import PersonCandidate, PersonResult, StillSupport
from facematch.search.ranking import Candidate, ProbeFace, SearchResult
from facematch.store.audit_chain import decision_digest, search_digest
from facematch.store.catalogue import Catalogue, utc_now
from facematch.store.private_files import private_temp_beside

__all__ = ["DECISIONS", "LISTS", "PERSON_PROBE_NO", "CONSULT_ACTION", "IMAGE_VIEW_ACTION", "Decision", "deleted_marker",
    "require_text", "store_search", "load_search", "consult_search", "consultation_search", "record_image_view",
    "review_search", "export_search", "decide", "decisions_for"]

DECISIONS = ("confirmed", "rejected", "inconclusive")
#: audit actions: consulting a stored search (its candidates), and fetching one face image of it on its own
CONSULT_ACTION = "review"
IMAGE_VIEW_ACTION = "view.image"
LISTS = ("custody", "scene")
#: Probe row number of a person-level search's fused list (the stills are rows 1, 2, ...).
PERSON_PROBE_NO = 0


def deleted_marker(row) -> str | None:
    """"deleted under retention on DATE (reason)" for a candidate row whose data was deleted, else None."""
    if row["deleted_at"] is None:
        return None
    return f"deleted under retention on {row['deleted_at'][:10]} ({row['deleted_reason']})"


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision on one candidate of a stored search."""

    decision_id: int
    search_id: int
    probe_no: int
    face_no: int | None
    list: str
    rank: int
    candidate: str | None
    decision: str
    reviewer: str
    note: str | None
    decided_at: str


def store_search(catalogue: Catalogue, result: SearchResult, params: dict) -> int:
    """Write a search, its probe faces and candidates in one transaction (audited); returns its id."""
    with catalogue.atomic():
        cur = catalogue.conn.execute(
            """INSERT INTO searches (created_at, user, case_ref, reason, params, bands, gallery_subjects,
               gallery_faces) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (result.created_at, result.user, result.case_ref, result.reason,
             json.dumps(params, sort_keys=True, default=str), json.dumps(result.bands, sort_keys=True),
             result.gallery_subjects, result.gallery_faces))
        search_id = cur.lastrowid
        for row_no, probe in enumerate(result.probes, start=1):
            probe_id = catalogue.conn.execute(
                """INSERT INTO search_probes (search_id, probe_no, path, sha256, face_no, box, detector,
                   quality, quality_score, warning, outcome, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (search_id, row_no, probe.path, probe.sha256, probe.face_no, json.dumps(probe.box),
                 probe.detector, json.dumps(probe.quality, sort_keys=True), probe.quality_score,
                 probe.warning, probe.outcome, probe.reason)).lastrowid
            for list_name, candidates in (("custody", probe.subjects), ("scene", probe.scene_faces)):
                _insert_candidates(catalogue, search_id, probe_id, list_name, candidates)
        details = {"search_id": search_id, "case_ref": result.case_ref, "reason": result.reason,
                   "probes": sorted({p.path for p in result.probes}),
                   "candidates": sum(len(p.subjects) + len(p.scene_faces) for p in result.probes)}
        if result.person is not None:
            _store_person(catalogue, search_id, result.person)
            details.update(person_level=True, stills=result.person.stills,
                           stills_searched=result.person.stills_searched, fusion=result.person.fusion,
                           person_candidates=len(result.person.candidates))
        details["digest"] = search_digest(catalogue.conn, search_id)
        catalogue.audit(result.user, "search", details)
    result.search_id = search_id
    return search_id


def _insert_candidates(catalogue: Catalogue, search_id: int, probe_id: int, list_name: str, candidates) -> None:
    catalogue.conn.executemany(
        """INSERT INTO candidates (search_id, probe_id, list, rank, subject_ref, case_ref, face_id, image_path,
           distance, score, band, est_fmr, support) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [(search_id, probe_id, list_name, c.rank, c.subject, c.case_ref, c.face_id, c.image_path,
          c.distance, c.score, c.band, c.estimated_fmr,
          json.dumps([asdict(s) for s in c.support]) if hasattr(c, "support") else None) for c in candidates])


def _store_person(catalogue: Catalogue, search_id: int, person: PersonResult) -> None:
    """The fused list hangs on probe row 0 (PERSON_PROBE_NO); the stills' own rows are numbered from 1."""
    probe_id = catalogue.conn.execute(
        """INSERT INTO search_probes (search_id, probe_no, path, detector, outcome, reason, face_no, quality)
           VALUES (?, ?, ?, ?, 'person', ?, ?, ?)""",
        (search_id, PERSON_PROBE_NO, f"person: {person.stills} stills", person.fusion,
         f"{person.stills_searched} of {person.stills} stills searched", person.stills_searched,
         json.dumps({"stills": person.stills}))).lastrowid
    _insert_candidates(catalogue, search_id, probe_id, "custody", person.candidates)


def load_search(catalogue: Catalogue, search_id: int) -> SearchResult:
    """A stored search as it was returned. Raises ``NotFound``."""
    row = catalogue.conn.execute("SELECT * FROM searches WHERE id = ?", (search_id,)).fetchone()
    if row is None:
        raise NotFound(f"no search with id {search_id}")
    probes, person = [], None
    for p in catalogue.conn.execute("SELECT * FROM search_probes WHERE search_id = ? ORDER BY probe_no",
                                    (search_id,)):
        if p["probe_no"] == PERSON_PROBE_NO:
            person = _load_person(catalogue, p)
            continue
        box = json.loads(p["box"]) if p["box"] else None
        probe = ProbeFace(probe_no=p["probe_no"], path=p["path"], outcome=p["outcome"], reason=p["reason"],
                          face_no=p["face_no"], box=tuple(box) if box else None, detector=p["detector"],
                          quality_score=p["quality_score"], quality=json.loads(p["quality"] or "{}"),
                          warning=p["warning"], sha256=p["sha256"])
        for c in catalogue.conn.execute("SELECT * FROM candidates WHERE probe_id = ? ORDER BY list, rank",
                                        (p["id"],)):
            target = probe.subjects if c["list"] == "custody" else probe.scene_faces
            target.append(Candidate(rank=c["rank"], distance=c["distance"], score=c["score"], band=c["band"],
                                    estimated_fmr=c["est_fmr"], face_id=c["face_id"],
                                    image_path=c["image_path"], subject=c["subject_ref"],
                                    case_ref=c["case_ref"], deleted=deleted_marker(c)))
        probes.append(probe)
    params = json.loads(row["params"])
    bands = json.loads(row["bands"])
    return SearchResult(search_id=row["id"], created_at=row["created_at"], user=row["user"],
                        case_ref=row["case_ref"], reason=row["reason"], top=params.get("top", 0), bands=bands,
                        gallery_subjects=row["gallery_subjects"], gallery_faces=row["gallery_faces"],
                        expected_false_candidates=params.get("expected_false_candidates"), probes=probes,
                        scene_bands=params.get("scene_bands"), person=person)


def consult_search(catalogue: Catalogue, search_id: int, *, user: str, reason: str, stated: bool = True
                   ) -> tuple[SearchResult, int]:
    """A stored search, the consultation audited (who, when, why); returns it and the audit entry's id.

    ``stated=False`` marks a reason the caller composed for the user (e.g. the search's own justification
    when its author looks at it again): the entry says so (``reason_stated: false``).
    """
    reason = require_text(reason, "a reason for viewing the search")
    result = load_search(catalogue, search_id)
    details = {"search_id": search_id, "reason": reason} | ({} if stated else {"reason_stated": False})
    return result, catalogue.audit(user, CONSULT_ACTION, details)


def consultation_search(catalogue: Catalogue, entry_id: int, *, user: str, since: str) -> int | None:
    """The search that audit entry ``entry_id`` records ``user`` consulting at or after ``since`` (ISO UTC),
    else None: a consultation goes on (its face images, the page after a review) without a new reason."""
    row = catalogue.conn.execute("SELECT actor, action, at, details FROM audit_log WHERE id = ?",
                                 (entry_id,)).fetchone()
    if row is None or row["actor"] != user or row["action"] != CONSULT_ACTION or row["at"] < since:
        return None
    search_id = json.loads(row["details"]).get("search_id")
    return int(search_id) if isinstance(search_id, int) else None


def record_image_view(catalogue: Catalogue, *, user: str, reason: str, **image: int | str) -> int:
    """Audit one image fetched outside a consultation: who, which (``image``: ids such as search_id,
    probe_no, face_id, probe_sha256), why; returns the entry id."""
    reason = require_text(reason, "a reason for viewing the image")
    return catalogue.audit(user, IMAGE_VIEW_ACTION, dict(image) | {"reason": reason})


def review_search(catalogue: Catalogue, search_id: int, *, user: str, reason: str
                  ) -> tuple[SearchResult, list[Decision]]:
    """A stored search and its decisions, the viewing audited (consultation: who, when, why)."""
    result, _ = consult_search(catalogue, search_id, user=user, reason=reason)
    return result, decisions_for(catalogue, search_id)


def export_search(catalogue: Catalogue, search_id: int, output: str | Path, *, user: str, recipient: str,
                  reason: str) -> dict:
    """Write a stored search, its decisions and the disclosure record as JSON to ``output`` (mode 0600).

    Disclosure is audited with its recipient, reason, file and the file's SHA-256 before the file appears
    (it is written to a temporary name and renamed once the entry is committed). Returns the audit details.
    Raises ``NotFound``, ``InvalidArgument``.
    """
    recipient = require_text(recipient, "the recipient of an export")
    reason = require_text(reason, "a reason for the export")
    output = Path(output)
    if not output.parent.is_dir():
        raise InvalidArgument(f"cannot export to {str(output)!r}: folder {str(output.parent)!r} does not exist")
    result, decisions = load_search(catalogue, search_id), decisions_for(catalogue, search_id)
    doc = result.to_dict() | {"decisions": [asdict(d) for d in decisions], "disclosure": {
        "recipient": recipient, "reason": reason, "by": user, "at": utc_now()}}
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    tmp = private_temp_beside(output, data)
    try:
        details = {"search_id": search_id, "recipient": recipient, "reason": reason,
                   "file": str(output.resolve()), "sha256": hashlib.sha256(data).hexdigest()}
        catalogue.audit(user, "export", details)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return details


def require_text(value: str | None, what: str) -> str:
    """``value`` stripped; ``InvalidArgument`` naming ``what`` when it is missing or blank."""
    if value is None or not str(value).strip():
        raise InvalidArgument(f"{what} is required (recorded in the audit log: DPA 2018 s.62)")
    return str(value).strip()


def _load_person(catalogue: Catalogue, row) -> PersonResult:
    person = PersonResult(row["detector"], json.loads(row["quality"])["stills"], row["face_no"])
    for c in catalogue.conn.execute("SELECT * FROM candidates WHERE probe_id = ? ORDER BY rank", (row["id"],)):
        person.candidates.append(PersonCandidate(
            rank=c["rank"], subject=c["subject_ref"], distance=c["distance"], score=c["score"], band=c["band"],
            estimated_fmr=c["est_fmr"], face_id=c["face_id"], image_path=c["image_path"],
            support=[StillSupport(**s) for s in json.loads(c["support"] or "[]")]))
    return person


def decide(catalogue: Catalogue, search_id: int, rank: int, *, decision: str, reviewer: str,
           note: str | None = None, probe: int | None = None, candidate_list: str = "custody") -> Decision:
    """Record a reviewer's decision on candidate ``rank`` of a stored search (audited).

    ``probe`` is the probe-face row number shown by ``review``; omitted, it is the person-level (fused)
    list of a person-level search, else the one searched face. Raises ``NotFound`` or ``InvalidArgument``.
    """
    if decision not in DECISIONS:
        raise InvalidArgument(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if candidate_list not in LISTS:
        raise InvalidArgument(f"list must be one of {', '.join(LISTS)}, got {candidate_list!r}")
    if not reviewer or not reviewer.strip():
        raise InvalidArgument("a reviewer id is required")
    probe_row = _probe_row(catalogue, search_id, probe)
    cand = catalogue.conn.execute(
        "SELECT * FROM candidates WHERE probe_id = ? AND list = ? AND rank = ?",
        (probe_row["id"], candidate_list, rank)).fetchone()
    if cand is None:
        raise NotFound(f"search {search_id} probe {probe_row['probe_no']} has no {candidate_list} candidate at rank {rank}")
    if cand["deleted_at"] is not None:
        raise DataDeleted(f"search {search_id} probe {probe_row['probe_no']} {candidate_list} rank {rank} was "
                          f"{deleted_marker(cand)}: no decision can be recorded on it")
    at = utc_now()
    with catalogue.atomic():
        decision_id = catalogue.conn.execute(
            "INSERT INTO decisions (candidate_id, decision, reviewer, note, decided_at) VALUES (?, ?, ?, ?, ?)",
            (cand["id"], decision, reviewer, note, at)).lastrowid
        details = {"search_id": search_id, "probe": probe_row["probe_no"], "list": candidate_list, "rank": rank,
                   "decision_id": decision_id, "candidate_id": cand["id"], "decision": decision,
                   "digest": decision_digest(catalogue.conn, decision_id)}
        if probe_row["probe_no"] == PERSON_PROBE_NO:
            details.update(person_level=True, stills=json.loads(probe_row["quality"])["stills"],
                           stills_searched=probe_row["face_no"])
        catalogue.audit(reviewer, "decision", details)
    return Decision(decision_id, search_id, probe_row["probe_no"], probe_row["face_no"], candidate_list, rank,
                    cand["subject_ref"] or cand["case_ref"], decision, reviewer, note, at)


def decisions_for(catalogue: Catalogue, search_id: int) -> list[Decision]:
    """All decisions recorded on a search, oldest first."""
    rows = catalogue.conn.execute(
        """SELECT d.*, c.list, c.rank, c.subject_ref, c.case_ref, c.deleted_at, p.probe_no, p.face_no
           FROM decisions d JOIN candidates c ON c.id = d.candidate_id JOIN search_probes p ON p.id = c.probe_id
           WHERE c.search_id = ? ORDER BY d.id""", (search_id,))
    return [Decision(r["id"], search_id, r["probe_no"], r["face_no"], r["list"], r["rank"],
                     r["subject_ref"] or r["case_ref"] or ("deleted" if r["deleted_at"] else None), r["decision"], r["reviewer"], r["note"], r["decided_at"])
            for r in rows]


def _probe_row(catalogue: Catalogue, search_id: int, probe: int | None):
    if catalogue.conn.execute("SELECT 1 FROM searches WHERE id = ?", (search_id,)).fetchone() is None:
        raise NotFound(f"no search with id {search_id}")
    rows = catalogue.conn.execute(
        "SELECT * FROM search_probes WHERE search_id = ? AND outcome IN ('searched', 'person') ORDER BY probe_no",
        (search_id,)).fetchall()
    if probe is None and rows and rows[0]["probe_no"] == PERSON_PROBE_NO:
        return rows[0]
    if probe is None:
        if len(rows) != 1:
            raise InvalidArgument(f"search {search_id} has {len(rows)} searched faces: say which with --probe N")
        return rows[0]
    for r in rows:
        if r["probe_no"] == probe:
            return r
    raise NotFound(f"search {search_id} has no searched probe face {probe}")
