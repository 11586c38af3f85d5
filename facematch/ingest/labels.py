"""Conflicting labels: one custody image (same content) under different subject ids.

Content is what identifies an image, so the same photograph listed as subject A and subject B is a
labelling error somewhere, and keeping it under whichever row came first would enrol a face under a
possibly wrong identity without telling anyone. Within one source, every copy of such an image is
refused (which label is right cannot be known here). Against the catalogue, a stored image under
another subject is refused too, unless the ingest allows relabelling: then the stored image and its faces
move to the source's subject (audited as ``ingest.relabel``). The catalogue is consulted within the
ingesting agency only (``agency_id``, as for "already stored"): another agency's copy of the image and
its label are never compared, reported or moved.
"""

from __future__ import annotations

from facematch.ingest.sources import IngestItem
from facematch.store.catalogue import Catalogue

__all__ = ["stored_labels", "split_conflicts", "relabel"]


def stored_labels(catalogue: Catalogue, hashes: list[str], agency_id: int = 0) -> dict[str, str | None]:
    """``{sha256: subject reference or None}`` of the custody images among ``hashes`` that ``agency_id``
    already stores."""
    out: dict[str, str | None] = {}
    for start in range(0, len(hashes), 500):
        chunk = hashes[start:start + 500]
        rows = catalogue.conn.execute(
            f"SELECT i.sha256, s.reference FROM images i LEFT JOIN subjects s ON s.id = i.subject_id "
            f"WHERE i.owner_agency = ? AND i.kind = 'custody' AND i.sha256 IN ({','.join('?' * len(chunk))})",
            (agency_id, *chunk))
        out.update({r[0]: r[1] for r in rows})
    return out


def split_conflicts(catalogue: Catalogue, hashed: list[tuple[IngestItem, str]], *, allow_relabel: bool,
                    agency_id: int = 0) -> tuple[list[tuple[IngestItem, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Split custody ``(item, sha256)`` pairs into (kept, refused ``(path, reason)``, moves ``(sha256, subject)``)."""
    labels: dict[str, set[str]] = {}
    for item, digest in hashed:
        labels.setdefault(digest, set()).add(item.subject_ref)
    stored = stored_labels(catalogue, list(labels), agency_id)
    kept, refused, moves = [], [], {}
    for item, digest in hashed:
        if len(labels[digest]) > 1:
            names = ", ".join(sorted(labels[digest]))
            refused.append((str(item.path), f"label conflict: the same image is listed under subject ids "
                                            f"{names}; refused (correct the source)"))
        elif digest in stored and stored[digest] not in (None, item.subject_ref):
            if allow_relabel:
                moves[digest] = item.subject_ref
                kept.append((item, digest))
            else:
                refused.append((str(item.path), f"label conflict: the image is stored under subject "
                                                f"{stored[digest]}, not {item.subject_ref}; refused "
                                                "(--allow-relabel moves it)"))
        else:
            kept.append((item, digest))
    return kept, refused, sorted(moves.items())


def relabel(catalogue: Catalogue, moves: list[tuple[str, str]], *, user: str, run_id: int,
            agency_id: int = 0) -> None:
    """Move stored custody images (and their faces) to other subjects, one transaction, one audit entry each."""
    if not moves:
        return
    with catalogue.atomic():
        for digest, subject in moves:
            old = catalogue.conn.execute("SELECT id, subject_id FROM images WHERE owner_agency = ? "
                                         "AND kind = 'custody' AND sha256 = ?", (agency_id, digest)).fetchone()
            new_sid = catalogue.subject_id(subject, create=True, agency_id=agency_id)
            catalogue.conn.execute("UPDATE images SET subject_id = ? WHERE id = ?", (new_sid, old["id"]))
            catalogue.conn.execute("UPDATE faces SET subject_id = ? WHERE image_id = ?", (new_sid, old["id"]))
            old_ref = catalogue.conn.execute("SELECT reference FROM subjects WHERE id = ?",
                                             (old["subject_id"],)).fetchone()[0]
            catalogue.conn.execute("DELETE FROM subjects WHERE id = ? AND NOT EXISTS "
                                   "(SELECT 1 FROM images WHERE subject_id = ?)", (old["subject_id"],) * 2)
            catalogue.audit(user, "ingest.relabel", {"run_id": run_id, "image_id": old["id"],
                                                     "from": old_ref, "to": subject})
