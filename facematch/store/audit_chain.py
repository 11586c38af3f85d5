"""The audit log as a keyed hash chain, and its verification.

Entry n carries ``mac_n = HMAC-SHA256(key, canonical JSON [id, at, actor, action, details] + mac_(n-1))``;
``mac_0`` is the genesis MAC, ``HMAC(key, catalogue id | the time the chain started)``. Whoever can write
the SQLite file but not read the key cannot edit, delete, insert or reorder an entry and recompute the MACs
that follow. Removing the newest entries (truncation) leaves a valid shorter chain: it is found against a
head (entry id and MAC) exported earlier with ``facematch audit head``.

Searches, decisions and two-person reviews are tied to the chain by digests of their stored rows (a
search's entry holds the digest of its search, probe and candidate rows; a decision's or review's entry
the digest of its row), so a row edited after the fact no longer matches. The entries hold ids and
digests, never a candidate's identity or a reviewer's note: those stay in the rows, which erasure can
rewrite. An entry may restate digests under ``search_digests`` / ``decision_digests`` /
``review_digests`` (``{id: digest}``; ``None``: erased on purpose): a retention job that rewrites or
removes stored rows records their new state that way (``search_digest`` etc. compute it).

Review entries written before reviews carried a digest (``review.first``/``review.second`` with the note
in clear) still vouch for their row: its reviewer, decision and note must equal the entry's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from facematch.errors import CatalogueError
from facematch.store.private_files import ensure_private_dir, restrict_file, write_private_file

__all__ = ["KEY_BYTES", "REVIEW_ACTIONS", "META_PENDING", "META_STARTED", "META_KEY_ID", "read_key", "create_key", "key_id",
    "genesis_mac", "entry_mac", "search_digest", "decision_digest", "review_digest", "pseudonym", "format_head", "parse_head",
    "AuditVerification", "verify_chain"]

KEY_BYTES = 32
#: meta keys: the last legacy entry id a migration left to seal; when the chain started; which key it uses
META_PENDING = "audit_chain.pending"
META_STARTED = "audit_chain.started_at"
META_KEY_ID = "audit_chain.key_id"

_SEARCH_COLS = "id, created_at, user, case_ref, reason, params, bands, gallery_subjects, gallery_faces"
_PROBE_COLS = "id, probe_no, path, sha256, face_no, box, detector, quality, quality_score, warning, outcome, reason"
# face_id is left out: deleting a gallery face sets it to NULL (ON DELETE SET NULL) without changing the lead
_CANDIDATE_COLS = "id, probe_id, list, rank, subject_ref, case_ref, image_path, distance, score, band, est_fmr"
_DECISION_COLS = "id, candidate_id, decision, reviewer, note, decided_at"
_REVIEW_COLS = "id, candidate_id, stage, reviewer, decision, note, decided_at"
#: the audit actions of the first and second review of a candidate (facematch.search.two_person)
REVIEW_ACTIONS = ("review.first", "review.second")
_MAX_FINDINGS = 50


# -- key ---------------------------------------------------------------------------------------------

def read_key(path: Path) -> bytes:
    """The key in ``path`` (hex text). Raises ``CatalogueError`` when it is missing or malformed."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except FileNotFoundError:
        raise CatalogueError(
            f"the audit key {path} is missing: the audit log can be neither written nor verified without it "
            "(restore the file, or point FACEMATCH_AUDIT_KEY_FILE at it)") from None
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"cannot read the audit key {path}: {exc}") from None
    if len(key) < KEY_BYTES:
        raise CatalogueError(f"the audit key {path} is shorter than {KEY_BYTES} bytes")
    restrict_file(path)
    return key


def create_key(path: Path) -> bytes:
    """The key in ``path``, created (random, 0600 in a 0700 folder) when the file does not exist.

    Created without ever replacing a file, so processes starting the same chain at once read one key.
    """
    path = Path(path)
    if not path.exists():
        ensure_private_dir(path.parent, what="audit key folder")
        write_private_file(path, (secrets.token_hex(KEY_BYTES) + "\n").encode("ascii"), exclusive=True)
    return read_key(path)


def key_id(key: bytes) -> str:
    """A short fingerprint of the key (says which key a chain uses without revealing it)."""
    return hmac.new(key, b"facematch audit key id", hashlib.sha256).hexdigest()[:16]


def pseudonym(key: bytes, kind: str, value: str) -> str:
    """A keyed hash of ``value`` (e.g. an erased subject's reference): linkable only by the key holder."""
    return hmac.new(key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()


# -- chain -------------------------------------------------------------------------------------------

def genesis_mac(key: bytes, catalogue_id: str, started_at: str) -> str:
    """``mac_0``: binds the chain to its catalogue and the moment it started."""
    return hmac.new(key, f"facematch audit genesis|{catalogue_id}|{started_at}".encode(), hashlib.sha256).hexdigest()


def entry_mac(key: bytes, prev_mac: str, row) -> str:
    """MAC of one entry (``row`` has id, at, actor, action and details as stored text) after ``prev_mac``."""
    body = json.dumps([row["id"], row["at"], row["actor"], row["action"], row["details"]],
                      ensure_ascii=False, separators=(",", ":"))
    return hmac.new(key, body.encode() + prev_mac.encode(), hashlib.sha256).hexdigest()


def _digest(parts) -> str:
    text = json.dumps(parts, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def search_digest(conn: sqlite3.Connection, search_id: int) -> str | None:
    """SHA-256 of a stored search's rows (search, probes, candidates), or None when it is not stored."""
    row = conn.execute(f"SELECT {_SEARCH_COLS} FROM searches WHERE id = ?", (search_id,)).fetchone()
    if row is None:
        return None
    probes = conn.execute(f"SELECT {_PROBE_COLS} FROM search_probes WHERE search_id = ? ORDER BY id", (search_id,))
    cands = conn.execute(f"SELECT {_CANDIDATE_COLS} FROM candidates WHERE search_id = ? ORDER BY id", (search_id,))
    return _digest([list(row), [list(p) for p in probes], [list(c) for c in cands]])


def decision_digest(conn: sqlite3.Connection, decision_id: int) -> str | None:
    """SHA-256 of a stored decision row, or None when it is not stored."""
    row = conn.execute(f"SELECT {_DECISION_COLS} FROM decisions WHERE id = ?", (decision_id,)).fetchone()
    return None if row is None else _digest(list(row))


def review_digest(conn: sqlite3.Connection, review_id: int) -> str | None:
    """SHA-256 of a stored two-person review row, or None when it is not stored."""
    row = conn.execute(f"SELECT {_REVIEW_COLS} FROM reviews WHERE id = ?", (review_id,)).fetchone()
    return None if row is None else _digest(list(row))


def format_head(entry_id: int, mac: str) -> str:
    """The exported head: ``<entry id>:<MAC>``."""
    return f"{entry_id}:{mac}"


def parse_head(text: str) -> tuple[int, str]:
    """``<entry id>:<MAC>`` -> (id, MAC). Raises ``ValueError`` when malformed."""
    entry, _, mac = text.strip().partition(":")
    if not entry.isdigit() or len(mac) != 64 or any(c not in "0123456789abcdef" for c in mac):
        raise ValueError(f"expected ENTRY_ID:MAC (as `facematch audit head` prints), got {text.strip()[:80]!r}")
    return int(entry), mac


# -- verification ------------------------------------------------------------------------------------

@dataclass
class AuditVerification:
    """What ``verify_chain`` found: ``ok`` when every check passed; one line per finding, first bad first."""

    ok: bool
    entries: int
    head: str | None
    started_at: str | None
    legacy_entries: int | None
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verify_chain(conn: sqlite3.Connection, key: bytes, catalogue_id: str,
                 head: tuple[int, str] | None = None) -> AuditVerification:
    """Recompute every MAC, check the head and the stored searches and decisions against the chain."""
    rows = conn.execute("SELECT id, at, actor, action, details, mac FROM audit_log ORDER BY id").fetchall()
    meta = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'audit_chain.%'").fetchall())
    last = next((r for r in reversed(rows) if r["mac"]), None)
    report = AuditVerification(ok=False, entries=len(rows), head=format_head(last["id"], last["mac"]) if last else None,
                               started_at=meta.get(META_STARTED), legacy_entries=None)
    if META_STARTED not in meta:
        report.findings.append("the chain's genesis record (meta audit_chain.started_at) is missing")
        return report
    if meta.get(META_KEY_ID) != key_id(key):
        report.findings.append("the audit key is not the key this chain was made with (key id "
                               f"{key_id(key)}, chain {meta.get(META_KEY_ID)}): nothing can be verified")
        return report
    findings, good = _check_links(key, genesis_mac(key, catalogue_id, meta[META_STARTED]), rows)
    findings += _check_head(rows, head)
    if head is None:
        report.notes.append("no exported head given: removal of the newest entries cannot be detected "
                            "(export one with `facematch audit head`, verify with --head)")
    start = next((json.loads(r["details"]) for r in good if r["action"] == "audit.chain_start"), {})
    report.legacy_entries = start.get("legacy_entries")
    findings += _check_rows(conn, good)
    report.findings = [text for _, text in sorted(findings, key=lambda f: f[0])]
    if len(report.findings) > _MAX_FINDINGS:
        extra = len(report.findings) - _MAX_FINDINGS
        report.findings = report.findings[:_MAX_FINDINGS] + [f"... and {extra} more findings"]
    report.ok = not report.findings
    return report


def _check_links(key: bytes, genesis: str, rows: list) -> tuple[list[tuple[float, str]], list]:
    """Walk the chain; returns findings as (position, text) and the entries whose MAC verified."""
    findings: list[tuple[float, str]] = []
    good, bad = [], []
    prev, prev_id = genesis, 0
    for i, row in enumerate(rows):
        rid = row["id"]
        gap = rid != prev_id + 1
        if gap:
            missing = f"entry {prev_id + 1} is" if rid == prev_id + 2 else f"entries {prev_id + 1}-{rid - 1} are"
            findings.append((prev_id + 1, f"{missing} missing: deleted from the log"))
        if row["mac"] is None:
            findings.append((rid, f"entry {rid} has no MAC: inserted outside facematch"))
            prev_id = rid
            continue
        if entry_mac(key, prev, row) == row["mac"]:
            good.append(row)
        elif not gap:
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            if nxt is not None and nxt["mac"] and entry_mac(key, row["mac"], nxt) == nxt["mac"]:
                why = "its content no longer matches its MAC: edited"
            else:
                why = "it does not match the chain: edited, forged or moved"
            bad.append(row)
            findings.append((rid, f"entry {rid}: {why}"))
        prev, prev_id = row["mac"], rid
    return _name_reordering(key, genesis, rows, bad, findings), good


def _name_reordering(key: bytes, genesis: str, rows: list, bad: list, findings: list) -> list:
    """Say "reordered" where a bad entry's content verifies at another bad entry's place."""
    if not 2 <= len(bad) <= _MAX_FINDINGS:
        return findings
    by_id = {r["id"]: r for r in rows}
    prevs = {genesis} | {r["mac"] for r in bad}
    moved: dict[int, int] = {}
    for a in bad:
        for b in bad:
            before = by_id.get(b["id"] - 1)
            candidates = prevs | ({before["mac"]} if before is not None and before["mac"] else set())
            placed = dict(a) | {"id": b["id"]}
            if a is not b and any(entry_mac(key, p, placed) in (a["mac"], b["mac"]) for p in candidates):
                moved[a["id"]] = b["id"]
                break
    return [(pos, f"entry {pos} holds the content of entry {moved[pos]}: entries reordered")
            if pos in moved and text.startswith(f"entry {pos}: ") else (pos, text) for pos, text in findings]


def _check_head(rows: list, head: tuple[int, str] | None) -> list[tuple[float, str]]:
    if head is None:
        return []
    head_id, head_mac = head
    by_id = {r["id"]: r for r in rows}
    last_id = rows[-1]["id"] if rows else 0
    if head_id > last_id:
        return [(last_id + 0.5, f"the log ends at entry {last_id}, before the exported head {head_id}: "
                                f"the newest entries were removed (truncated)")]
    if head_id not in by_id:
        return [(head_id, f"entry {head_id} of the exported head is missing: deleted from the log")]
    if by_id[head_id]["mac"] != head_mac:
        return [(head_id, f"entry {head_id} differs from the exported head: the log was rewritten from there on")]
    return []


def _expected_digests(good: list) -> tuple[dict[int, str | None], dict[int, str | None], dict[int, str | None],
                                            dict[tuple, tuple]]:
    """Digests the verified entries expect: per search, decision and review id, and legacy review entries
    ``{(search_id, probe, list, rank, stage): (reviewer, decision, note)}``."""
    searches: dict[int, str | None] = {}
    decisions: dict[int, str | None] = {}
    reviews: dict[int, str | None] = {}
    legacy: dict[tuple, tuple] = {}
    for row in good:
        details = json.loads(row["details"])
        if not isinstance(details, dict):
            continue
        if row["action"] == "search" and "digest" in details:
            searches[int(details["search_id"])] = details["digest"]
        if row["action"] == "decision" and "digest" in details:
            decisions[int(details["decision_id"])] = details["digest"]
        if row["action"] in REVIEW_ACTIONS:
            if "digest" in details:
                reviews[int(details["review_id"])] = details["digest"]
            elif "note" in details:
                key = (details.get("search_id"), details.get("probe"), details.get("list"), details.get("rank"),
                       REVIEW_ACTIONS.index(row["action"]) + 1)
                legacy[key] = (row["actor"], details.get("decision"), details.get("note"))
        searches.update({int(k): v for k, v in (details.get("search_digests") or {}).items()})
        decisions.update({int(k): v for k, v in (details.get("decision_digests") or {}).items()})
        reviews.update({int(k): v for k, v in (details.get("review_digests") or {}).items()})
    return searches, decisions, reviews, legacy


def _legacy_reviews(conn: sqlite3.Connection, legacy: dict[tuple, tuple]) -> dict[int, bool]:
    """``{review id: whether its row still says what its legacy entry said}`` for reviews a legacy entry names."""
    if not legacy:
        return {}
    rows = conn.execute("""SELECT r.id, r.stage, r.reviewer, r.decision, r.note, c.search_id, c.list, c.rank,
                                  p.probe_no FROM reviews r JOIN candidates c ON c.id = r.candidate_id
                           JOIN search_probes p ON p.id = c.probe_id""")
    out = {}
    for r in rows:
        said = legacy.get((r["search_id"], r["probe_no"], r["list"], r["rank"], r["stage"]))
        if said is not None:
            out[r["id"]] = said == (r["reviewer"], r["decision"], r["note"])
    return out


def _check_rows(conn: sqlite3.Connection, good: list) -> list[tuple[float, str]]:
    """Stored searches, decisions and reviews against the digests the verified entries hold."""
    expected_searches, expected_decisions, expected_reviews, legacy = _expected_digests(good)
    legacy_ok = _legacy_reviews(conn, legacy)
    findings: list[tuple[float, str]] = []
    end = float("inf")
    for what, table, expected, digest in (("search", "searches", expected_searches, search_digest),
                                          ("decision", "decisions", expected_decisions, decision_digest),
                                          ("review", "reviews", expected_reviews, review_digest)):
        stored = [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id")]
        for row_id in stored:
            if what == "review" and row_id not in expected and row_id in legacy_ok:
                if not legacy_ok[row_id]:
                    findings.append((end, f"review {row_id}: its stored rows were changed after it was audited"))
            elif row_id not in expected:
                findings.append((end, f"{what} {row_id} has no verified audit entry: inserted outside facematch"))
            elif expected[row_id] is None:
                findings.append((end, f"{what} {row_id} was recorded as erased but its rows remain"))
            elif digest(conn, row_id) != expected[row_id]:
                findings.append((end, f"{what} {row_id}: its stored rows were changed after it was audited"))
        for row_id in sorted(set(expected) - set(stored)):
            if expected[row_id] is not None:
                findings.append((end, f"{what} {row_id} was deleted without an audit entry recording its erasure"))
    return findings
