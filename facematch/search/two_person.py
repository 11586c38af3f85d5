"""Two-person review: a candidate becomes an investigative lead only when two different reviewers,
each deciding without seeing the other's decision, both record "possible match".

Each candidate takes at most two reviews (stage 1 and stage 2, by different people), each with a
mandatory note; nothing is overwritten (the table refuses updates), so disagreements stay visible.
Until a viewer has recorded their own review, they see that a first review exists but not what it said.
The audit entry of a review holds ids, the decision, the outcome and the digest of the review row, never
the candidate's identity or the note: those stay in the row, which erasure of the subject rewrites
(facematch.store.deletion), so the hash-chained log never holds what retention must remove.
"""

from __future__ import annotations

from dataclasses import dataclass

from facematch.errors import Conflict, DataDeleted, InvalidArgument, NotFound
from facematch.search.bands import BANDS
from facematch.store.audit_chain import REVIEW_ACTIONS, review_digest
from facematch.store.catalogue import Catalogue, utc_now

__all__ = ["REVIEW_DECISIONS", "Review", "candidate_id", "record_review", "outcome", "reviews_by_candidate",
    "review_queue"]

REVIEW_DECISIONS = ("possible match", "not a match", "inconclusive")


@dataclass(frozen=True)
class Review:
    stage: int
    reviewer: str
    decision: str
    note: str
    decided_at: str


def candidate_id(catalogue: Catalogue, search_id: int, probe_no: int, candidate_list: str, rank: int) -> int:
    row = catalogue.conn.execute(
        """SELECT c.id FROM candidates c JOIN search_probes p ON p.id = c.probe_id
           WHERE c.search_id = ? AND p.probe_no = ? AND c.list = ? AND c.rank = ?""",
        (search_id, probe_no, candidate_list, rank)).fetchone()
    if row is None:
        raise NotFound(f"search {search_id} has no {candidate_list} candidate {rank} for probe face {probe_no}")
    return row[0]


def record_review(catalogue: Catalogue, cand_id: int, *, reviewer: str, decision: str, note: str) -> Review:
    """Record the first or second review of a candidate (audited); ``Conflict`` for a third or a repeat."""
    if decision not in REVIEW_DECISIONS:
        raise InvalidArgument(f"decision must be one of {', '.join(REVIEW_DECISIONS)}; got {decision!r}")
    if not note or not note.strip():
        raise InvalidArgument("a note is required with every decision")
    with catalogue.atomic():
        deleted = catalogue.conn.execute("SELECT deleted_at FROM candidates WHERE id = ?", (cand_id,)).fetchone()
        if deleted is not None and deleted[0] is not None:
            raise DataDeleted("this candidate's data was deleted under retention: no review can be recorded on it")
        done = catalogue.conn.execute("SELECT reviewer FROM reviews WHERE candidate_id = ?", (cand_id,)).fetchall()
        if reviewer in {r[0] for r in done}:
            raise Conflict("you have already reviewed this candidate: a second review must come from someone else")
        if len(done) >= 2:
            raise Conflict("this candidate already has its two reviews")
        stage, at = len(done) + 1, utc_now()
        review_id = catalogue.conn.execute(
            "INSERT INTO reviews (candidate_id, stage, reviewer, decision, note, decided_at) VALUES (?, ?, ?, ?, ?, ?)",
            (cand_id, stage, reviewer, decision, note.strip(), at)).lastrowid
        cand = catalogue.conn.execute(
            """SELECT c.search_id, c.list, c.rank, p.probe_no FROM candidates c
               JOIN search_probes p ON p.id = c.probe_id WHERE c.id = ?""", (cand_id,)).fetchone()
        reviews = _reviews(catalogue, cand_id)
        catalogue.audit(reviewer, REVIEW_ACTIONS[stage - 1], {
            "search_id": cand["search_id"], "probe": cand["probe_no"], "list": cand["list"], "rank": cand["rank"],
            "candidate_id": cand_id, "review_id": review_id, "decision": decision, "outcome": outcome(reviews),
            "digest": review_digest(catalogue.conn, review_id)})
    return Review(stage, reviewer, decision, note.strip(), at)


def outcome(reviews: list[Review]) -> str:
    """Where a candidate stands: awaiting first/second review, investigative lead, agreed, or disagreement."""
    if not reviews:
        return "awaiting first review"
    if len(reviews) == 1:
        return "awaiting second review"
    first, second = reviews[0].decision, reviews[1].decision
    if first != second:
        return "disagreement"
    return "investigative lead" if first == "possible match" else f"agreed: {first}"


def reviews_by_candidate(catalogue: Catalogue, search_id: int, viewer: str) -> dict[tuple[int, str, int], dict]:
    """``{(probe_no, list, rank): {"outcome", "reviews", "hidden"}}`` as ``viewer`` may see them.

    A single review is hidden (``hidden`` = 1, ``reviews`` empty) from everyone but its author, so the
    second reviewer decides independently.
    """
    rows = catalogue.conn.execute(
        """SELECT r.*, p.probe_no, c.list, c.rank FROM reviews r JOIN candidates c ON c.id = r.candidate_id
           JOIN search_probes p ON p.id = c.probe_id WHERE c.search_id = ? ORDER BY r.stage""", (search_id,))
    grouped: dict[tuple[int, str, int], list[Review]] = {}
    for r in rows:
        grouped.setdefault((r["probe_no"], r["list"], r["rank"]), []).append(
            Review(r["stage"], r["reviewer"], r["decision"], r["note"], r["decided_at"]))
    out = {}
    for key, reviews in grouped.items():
        blind = len(reviews) == 1 and reviews[0].reviewer != viewer
        out[key] = {"outcome": outcome(reviews), "hidden": len(reviews) if blind else 0,
                    "reviews": [] if blind else reviews}
    return out


def review_queue(catalogue: Catalogue, agency_id: int, reviewer: str, *, limit: int = 200) -> list[dict]:
    """Candidates of ``agency_id``'s searches awaiting a first or second review that ``reviewer`` may give:
    banded candidates with no review yet, and any candidate with one review by someone else."""
    marks = ",".join("?" * len(BANDS))
    rows = catalogue.conn.execute(
        f"""SELECT c.search_id, s.case_ref, s.created_at, p.probe_no, c.list, c.rank, c.band, c.distance,
                   COALESCE(c.subject_ref, c.case_ref) AS candidate,
                   (SELECT COUNT(*) FROM reviews r WHERE r.candidate_id = c.id) AS n_reviews
            FROM candidates c JOIN search_probes p ON p.id = c.probe_id JOIN searches s ON s.id = c.search_id
            JOIN search_owners o ON o.search_id = c.search_id
            WHERE o.agency_id = ?
              AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.candidate_id = c.id AND r.reviewer = ?)
              AND ((c.band IN ({marks}) AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.candidate_id = c.id))
                   OR (SELECT COUNT(*) FROM reviews r WHERE r.candidate_id = c.id) = 1)
            ORDER BY n_reviews DESC, c.search_id DESC, p.probe_no, c.list, c.rank LIMIT ?""",
        (agency_id, reviewer, *BANDS, limit))
    return [dict(r) | {"awaiting": "second review" if r["n_reviews"] else "first review"} for r in rows]


def _reviews(catalogue: Catalogue, cand_id: int) -> list[Review]:
    return [Review(r["stage"], r["reviewer"], r["decision"], r["note"], r["decided_at"]) for r in
            catalogue.conn.execute("SELECT * FROM reviews WHERE candidate_id = ? ORDER BY stage", (cand_id,))]
