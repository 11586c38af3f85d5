"""Proof that a deletion is complete: the deleted data is absent from the catalogue, the index and its files.

A nearest-neighbour check with the deleted embeddings is impossible once they are gone, so the proof
rests on what the deletion recorded (``deletion_records``: face ids and salted image digests):

- catalogue: no row of any table (the audit log and the deletion records excepted: they are the
  accountable record; past searches' probes are the searcher's own images, except that a case's
  deletion erases the searches made in it) holds the subject or case reference, a deleted face id, or an
  image whose salted hash is a deleted one; after a deletion of some agencies' data only (a subject, a
  case, an image copy), another agency's rows of the same reference or file are not traces;
- index: no index file (nor its raw-vector file) holds a deleted face id, and each sidecar was saved
  after the deletion (its deletion count is the catalogue's);
- files: no temporary file (``*.tmp``, an interrupted save) is left in the data or index folder, since
  one could hold the deleted vectors, and no uploaded probe file of an erased search is left.

The evaluation cache is checked by the caller (it belongs to a higher layer).
"""

from __future__ import annotations

import json
from pathlib import Path

from facematch.errors import FacematchError, NotFound
from facematch.store.catalogue import Catalogue
from facematch.store.deletion import SCOPES, is_sha256, salted_digest
from facematch.store.index import FaceIndex
from facematch.types import IMAGE_KINDS

__all__ = ["EXEMPT_TABLES", "recorded_deletions", "covered_agencies", "catalogue_check", "probe_files_check",
           "index_check", "leftovers_check", "temp_leftovers"]

#: Tables that keep an accountable record of what was done and are not searched for traces.
EXEMPT_TABLES = frozenset({"audit_log", "deletion_records", "search_probes", "searches", "sqlite_sequence"})


def recorded_deletions(catalogue: Catalogue, scope: str, target: str, *, agency_id: int | None = None
                       ) -> tuple[set[int], set[str], set[int] | None]:
    """(face ids, salted image digests, agencies) of every recorded deletion of ``target``. Raises ``NotFound``.

    ``agency_id``: only the deletions of that agency's data (0: of no agency's; None: every deletion,
    whichever agency's). ``agencies``: when every such deletion removed only some agencies' copies, those
    agencies (the same files may remain in others' records); None when one removed every copy.

    Face ids that now belong to a face of another image (reused ids) are left out: they are not traces.

    An image named by its SHA-256 is found in any deletion that removed it (of its subject, case or itself).
    """
    rows = _records(catalogue, scope, target, agency_id)
    faces = {int(i) for r in rows for i in json.loads(r["face_ids"])}
    digests = {d for r in rows for d in json.loads(r["image_digests"])}
    agencies = None if any(r["agency_id"] is None for r in rows) else {r["agency_id"] for r in rows}
    return faces - _reused_ids(catalogue, faces, digests), digests, agencies


def covered_agencies(catalogue: Catalogue, scope: str, target: str, *, agency_id: int | None = None) -> list[str]:
    """Whose data the recorded deletions of ``target`` removed (as ``recorded_deletions`` selects them), by
    name: "no agency" for data ingested without one, "every agency" for a deletion of every copy."""
    names = dict(catalogue.conn.execute("SELECT id, name FROM agencies").fetchall())
    owners = {r["agency_id"] for r in _records(catalogue, scope, target, agency_id)}
    return sorted("every agency" if a is None else "no agency" if a == 0 else names.get(a, f"agency {a}")
                  for a in owners)


def _records(catalogue: Catalogue, scope: str, target: str, agency_id: int | None) -> list:
    if scope not in SCOPES:
        raise NotFound(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    digest = salted_digest(catalogue.catalogue_id, target.lower() if is_sha256(target) else target)
    if scope == "image" and is_sha256(target):  # whichever deletion removed that image (subject, case, image)
        rows = [r for r in catalogue.conn.execute("SELECT face_ids, image_digests, agency_id FROM deletion_records")
                if digest in json.loads(r["image_digests"])]
    else:
        rows = catalogue.conn.execute(
            "SELECT face_ids, image_digests, agency_id FROM deletion_records WHERE scope = ? AND target_digest = ?",
            (scope, digest)).fetchall()
    if not rows:
        raise NotFound(f"no deletion of {scope} {target!r} is recorded in this catalogue")
    if agency_id is not None:
        mine = [r for r in rows if r["agency_id"] == agency_id]
        if not mine:
            raise NotFound(f"no deletion of that agency's {scope} {target!r} is recorded in this catalogue (the "
                           f"recorded ones removed the data of: "
                           f"{', '.join(covered_agencies(catalogue, scope, target))})")
        rows = mine
    return rows


def _reused_ids(catalogue: Catalogue, faces: set[int], digests: set[str]) -> set[int]:
    """Deleted face ids SQLite has since given to faces of other images (it reuses the highest rowid)."""
    reused = set()
    ids = sorted(faces)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for face_id, sha in catalogue.conn.execute(
                f"SELECT f.id, i.sha256 FROM faces f JOIN images i ON i.id = f.image_id "
                f"WHERE f.id IN ({','.join('?' * len(chunk))})", chunk):
            if salted_digest(catalogue.catalogue_id, sha) not in digests:
                reused.add(face_id)
    return reused


def catalogue_check(catalogue: Catalogue, scope: str, target: str, faces: set[int], digests: set[str],
                    agencies: set[int] | None = None) -> list[str]:
    """Problems found in the catalogue's tables (empty: no trace). With ``agencies`` (a deletion of those
    agencies' copies), images of other agencies with the same content are not traces."""
    conn, problems = catalogue.conn, []
    # a case's deletion erases the searches made in it: one still naming the case is a trace
    exempt = EXEMPT_TABLES - {"searches"} if scope == "case" else EXEMPT_TABLES
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
              if r[0] not in exempt]
    for table in tables:
        for _, column, declared, *_ in conn.execute(f'PRAGMA table_info("{table}")'):
            hits = 0
            if declared.upper() == "TEXT" and not is_sha256(target):
                hits += conn.execute(f'SELECT COUNT(*) FROM "{table}" WHERE "{column}" = ?{_others_kept(table, agencies)}',
                                     (target,)).fetchone()[0]
            if column == "face_id" or (table == "faces" and column == "id"):
                hits += sum(1 for (i,) in conn.execute(f'SELECT "{column}" FROM "{table}"') if i in faces)
            if column == "sha256":
                kept = table == "images" and agencies is not None  # only those agencies' copies are traces
                rows = conn.execute(f'SELECT "{column}", owner_agency FROM "{table}"') if kept else \
                    ((s, None) for (s,) in conn.execute(f'SELECT "{column}" FROM "{table}"'))
                hits += sum(1 for s, owner in rows if s and salted_digest(catalogue.catalogue_id, s) in digests
                            and (not kept or owner in agencies))
            if hits:
                problems.append(f"table {table}.{column} still holds {hits} trace(s) of the deleted data")
    return problems


def _others_kept(table: str, agencies: set[int] | None) -> str:
    """SQL that leaves out the rows of other agencies' copies (images, and candidates showing them) when a
    deletion was of ``agencies``' copies only: the same file path or subject may remain in their records."""
    if agencies is None:
        return ""
    marks = ",".join(str(int(a)) for a in sorted(agencies)) or "NULL"
    if table == "images":
        return f" AND owner_agency IN ({marks})"
    if table in ("cases", "subjects", "ingest_runs"):  # another agency's case or subject of the same reference stays
        return f" AND agency_id IN ({marks})"
    if table == "searches":  # a search's agency: its owner's (none: a command-line search)
        return f" AND COALESCE((SELECT o.agency_id FROM search_owners o WHERE o.search_id = searches.id), 0) IN ({marks})"
    if table == "candidates":
        return (" AND (face_id IS NULL OR face_id NOT IN (SELECT f.id FROM faces f JOIN images i ON i.id = "
                f"f.image_id WHERE i.owner_agency NOT IN ({marks})))")
    return ""


def probe_files_check(catalogue: Catalogue, digests: set[str]) -> list[str]:
    """Uploaded probe files (``<data_dir>/probes/<sha256>.<ext>``) a deletion recorded as removed (an
    erased case's searches) that are still there."""
    folder = catalogue.data_dir / "probes"
    left = [p for p in sorted(folder.iterdir()) if p.is_file() and is_sha256(p.stem)
            and salted_digest(catalogue.catalogue_id, p.stem.lower()) in digests] if folder.is_dir() else []
    return [f"uploaded probe file {p.name} of an erased search is still there" for p in left]


def index_check(catalogue: Catalogue, index_dir: str | Path, faces: set[int]) -> list[str]:
    """Problems found in the catalogue's index files and sidecars."""
    folder, problems = Path(index_dir) / catalogue.catalogue_id, []
    for path in sorted(folder.glob("*.faiss")) if folder.exists() else []:
        try:
            index, sidecar = FaceIndex.load(path)
        except FacematchError as exc:
            problems.append(f"index {path.name} cannot be read to verify it: {exc}")
            continue
        held = faces & {int(i) for i in index.ids()}
        if held:
            problems.append(f"index {path.name} still holds {len(held)} deleted face(s)")
        kind = path.stem
        if kind in IMAGE_KINDS:
            saved = sidecar.get("catalogue_state", {}).get("deletions", 0)
            if saved < catalogue.face_state(kind)["deletions"]:
                problems.append(f"index sidecar {path.with_suffix('.json').name} was saved before the deletion")
    return problems


def temp_leftovers(*folders: str | Path) -> list[Path]:
    """Temporary files (``*.tmp``) under the given folders: interrupted saves."""
    return sorted(p for f in folders if Path(f).exists() for p in Path(f).rglob("*.tmp") if p.is_file())


def leftovers_check(*folders: str | Path) -> list[str]:
    """One problem per temporary file left under ``folders``."""
    return [f"temporary file {p} is left over (may hold deleted data): remove it" for p in temp_leftovers(*folders)]
