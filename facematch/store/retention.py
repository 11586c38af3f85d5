"""Retention review of custody images: which are due, and deleting them (one audit entry per subject).

Each custody image's review date is its capture date (else the date it was ingested) plus
``RetentionSettings.review_after_days``; an image flagged ``not_convicted`` is due from the day it was
ingested. Scene images follow their case (``delete case``), not this rule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from facematch.store.catalogue import Catalogue
from facematch.store.deletion import Deletion, delete_images, salted_digest

__all__ = ["DueSubject", "review_date", "due_subjects", "apply_retention"]


@dataclass(frozen=True)
class DueSubject:
    """A subject with custody images due for deletion: how many of its images, since when, and why.
    ``agency``: whose subject (None: no agency); another agency's subject of the same reference is apart."""

    subject: str
    due_images: int
    total_images: int
    review_date: str
    not_convicted: bool
    image_ids: tuple[int, ...]
    agency_id: int = 0
    agency: str | None = None


def review_date(captured_at: str | None, ingested_at: str, not_convicted: bool, review_after_days: int) -> dt.date:
    """When an image falls due (see the module)."""
    ingested = dt.date.fromisoformat(ingested_at[:10])
    if not_convicted:
        return ingested
    try:
        start = dt.date.fromisoformat((captured_at or "")[:10])
    except ValueError:
        start = ingested
    return start + dt.timedelta(days=review_after_days)


def due_subjects(catalogue: Catalogue, *, today: dt.date, review_after_days: int) -> list[DueSubject]:
    """Subjects with at least one custody image due on ``today``, earliest review date first."""
    per_subject: dict[tuple, list] = {}  # by subject: each agency's subject of a reference on its own dates
    for r in catalogue.conn.execute(
            "SELECT i.id, i.captured_at, i.ingested_at, i.not_convicted, s.id AS sid, s.reference, s.agency_id, "
            "a.name AS agency FROM images i JOIN subjects s ON s.id = i.subject_id "
            "LEFT JOIN agencies a ON a.id = s.agency_id WHERE i.kind = 'custody' ORDER BY i.id"):
        when = review_date(r["captured_at"], r["ingested_at"], bool(r["not_convicted"]), review_after_days)
        key = (r["sid"], r["reference"], r["agency_id"], r["agency"])
        per_subject.setdefault(key, []).append((r["id"], when, bool(r["not_convicted"])))
    out = []
    for (_, subject, agency_id, agency), images in per_subject.items():
        due = [i for i in images if i[1] <= today]
        if due:
            out.append(DueSubject(subject, len(due), len(images), min(i[1] for i in due).isoformat(),
                                  any(i[2] for i in due), tuple(i[0] for i in due), agency_id, agency))
    return sorted(out, key=lambda d: (d.review_date, d.subject, d.agency_id))


def apply_retention(catalogue: Catalogue, due: list[DueSubject], *, actor: str, reason: str) -> list[Deletion]:
    """Delete each due subject's due images (the whole subject when all are due); one audit entry each.

    The entry names the subject only by its salted digest (as a deletion's record does): the chain is
    never rewritten, so a reference in clear would outlive the erasure it records.
    """
    deletions = []
    for d in due:
        whole = d.due_images == d.total_images
        details = {"subject_digest": salted_digest(catalogue.catalogue_id, d.subject), "whole_subject": whole, "review_date": d.review_date,
                   "not_convicted": d.not_convicted, "agency_id": d.agency_id}
        deletions.append(delete_images(catalogue, list(d.image_ids), scope="subject" if whole else "image",
                                       target=d.subject, actor=actor, reason=reason,
                                       audit=("retention.apply", details), agency_id=d.agency_id))
    return deletions
