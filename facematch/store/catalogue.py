"""The catalogue: SQLite, the source of truth for subjects, images, faces, searches, decisions and audit.

One ``Catalogue`` wraps one connection (SQLite connections belong to one thread); a service opens one per
thread. WAL mode lets searches read while an ingest writes. Writes happen inside :meth:`atomic`. The data
directory is 0700 and the database files 0600 (facematch.store.private_files); the audit log is a keyed
hash chain (facematch.store.audit_chain) whose key lives in a separate file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sqlite3
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np

from facematch.errors import CatalogueError, IncompatibleEmbeddings, NotFound
from facematch.settings import default_audit_key_file
from facematch.store import audit_chain as chain
from facematch.store.lock import run_alive
from facematch.store.private_files import create_private_file, ensure_private_dir, restrict_file
from facematch.store.schema import migrate
from facematch.types import EMBEDDING_DIM, FaceRecord

__all__ = ["CATALOGUE_FILENAME", "utc_now", "Catalogue"]

log = logging.getLogger(__name__)

CATALOGUE_FILENAME = "catalogue.sqlite3"


def utc_now() -> str:
    """Timestamps are stored as ISO 8601 UTC strings with seconds precision."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


class Catalogue:
    """Connection to a catalogue in ``data_dir`` (created on first open).

    ``audit_key_file``: the audit chain's HMAC key (default: ``$FACEMATCH_AUDIT_KEY_FILE`` or
    ``<data_dir>/keys/audit.key``); created with the chain, required to write or verify the audit log.
    """

    def __init__(self, data_dir: str | Path, *, audit_key_file: str | Path | None = None):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / CATALOGUE_FILENAME
        self.audit_key_file = Path(audit_key_file) if audit_key_file else default_audit_key_file(self.data_dir)
        self._key: bytes | None = None
        try:
            ensure_private_dir(self.data_dir, what="data directory")
            create_private_file(self.path)
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=60)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            migrate(self.conn)
            for suffix in ("", "-wal", "-shm"):  # SQLite gives -wal/-shm the database's mode; older files may be wider
                restrict_file(f"{self.path}{suffix}")
        except (sqlite3.Error, OSError) as exc:
            raise CatalogueError(f"cannot open catalogue at {self.path}: {exc}") from exc
        self.catalogue_id = self._ensure_identity()
        if self.get_meta(chain.META_PENDING) is not None:
            self._start_chain()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same committed state (WAL snapshot)."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``; rolled back on any exception)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _ensure_identity(self) -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'catalogue_id'").fetchone()
        if row:
            return row[0]
        with self.atomic():
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('catalogue_id', ?)", (str(uuid.uuid4()),))
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (utc_now(),))
        return self.conn.execute("SELECT value FROM meta WHERE key = 'catalogue_id'").fetchone()[0]

    # -- audit -------------------------------------------------------------------------------------

    def audit(self, actor: str, action: str, details: dict) -> int:
        """Append an entry to the audit chain (in the caller's transaction, or its own); returns its id.

        The entry's MAC covers its content and the previous entry's MAC (facematch.store.audit_chain).
        Raises ``CatalogueError`` when the audit key is missing: nothing is done that cannot be logged.
        """
        key = self.audit_key()
        with self._in_transaction():
            last = self.conn.execute(
                "SELECT mac FROM audit_log WHERE mac IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
            row = {"id": self.conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM audit_log").fetchone()[0],
                   "at": utc_now(), "actor": actor, "action": action,
                   "details": json.dumps(details, sort_keys=True, default=str)}
            mac = chain.entry_mac(key, last[0] if last else self._genesis(key), row)
            self.conn.execute("INSERT INTO audit_log (id, at, actor, action, details, mac) VALUES (?, ?, ?, ?, ?, ?)",
                              (row["id"], row["at"], actor, action, row["details"], mac))
        return row["id"]

    def audit_entries(self, *, action: str | None = None, limit: int = 1000) -> list[dict]:
        sql = "SELECT * FROM audit_log" + (" WHERE action = ?" if action else "") + " ORDER BY id DESC LIMIT ?"
        args = (action, limit) if action else (limit,)
        return [dict(r) | {"details": json.loads(r["details"])} for r in self.conn.execute(sql, args)]

    def audit_key(self) -> bytes:
        """The audit chain's key, read once from ``audit_key_file``. Raises ``CatalogueError`` when missing."""
        if self._key is None:
            self._key = chain.read_key(self.audit_key_file)
        return self._key

    def audit_head(self) -> str:
        """``<entry id>:<MAC>`` of the newest entry, to keep outside the catalogue (truncation check)."""
        row = self.conn.execute(
            "SELECT id, mac FROM audit_log WHERE mac IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            raise NotFound("the audit log has no chained entry yet")
        return chain.format_head(row[0], row[1])

    def verify_audit(self, head: tuple[int, str] | None = None) -> chain.AuditVerification:
        """Check the chain, the exported ``head`` (id, MAC) and the stored searches and decisions."""
        return chain.verify_chain(self.conn, self.audit_key(), self.catalogue_id, head)

    def _genesis(self, key: bytes) -> str:
        started = self.get_meta(chain.META_STARTED)
        if started is None:
            raise CatalogueError("the audit chain has no genesis record: the catalogue's meta table was altered")
        return chain.genesis_mac(key, self.catalogue_id, started)

    @contextlib.contextmanager
    def _in_transaction(self) -> Iterator[None]:
        if self.conn.in_transaction:
            yield
        else:
            with self.atomic():
                yield

    def _start_chain(self) -> None:
        """Start the chain: seal the entries a migration left (from a genesis recorded now), then log it."""
        try:
            key = self._key = chain.create_key(self.audit_key_file)
        except OSError as exc:
            raise CatalogueError(f"cannot create the audit key {self.audit_key_file}: {exc}") from exc
        with self.atomic():
            pending = self.get_meta(chain.META_PENDING)
            if pending is None:  # another process started it meanwhile
                return
            started = utc_now()
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(chain.META_STARTED, started), (chain.META_KEY_ID, chain.key_id(key))])
            prev = chain.genesis_mac(key, self.catalogue_id, started)
            legacy = self.conn.execute("SELECT id, at, actor, action, details FROM audit_log "
                                       "WHERE mac IS NULL AND id <= ? ORDER BY id", (int(pending),)).fetchall()
            for row in legacy:
                prev = chain.entry_mac(key, prev, row)
                self.conn.execute("UPDATE audit_log SET mac = ? WHERE id = ?", (prev, row["id"]))
            self.conn.execute("DELETE FROM meta WHERE key = ?", (chain.META_PENDING,))
            self.audit("facematch", "audit.chain_start", {
                "legacy_entries": len(legacy), "key_id": chain.key_id(key),
                "search_digests": {r[0]: chain.search_digest(self.conn, r[0])
                                   for r in self.conn.execute("SELECT id FROM searches")},
                "decision_digests": {r[0]: chain.decision_digest(self.conn, r[0])
                                     for r in self.conn.execute("SELECT id FROM decisions")}})
        if legacy:
            log.warning("audit log: %d existing entries sealed into a keyed chain started %s; they are protected "
                        "from now on, not before", len(legacy), started)

    # -- ingestion -------------------------------------------------------------------------------

    def start_ingest_run(self, kind: str, source: str, user: str, *, agency_id: int = 0,
                         collection_id: int | None = None, case_ref: str | None = None) -> int:
        """Record a run as started, with whose it is (``agency_id``, 0: none; its ``collection_id`` or
        the ``case_ref`` of a one-case crime-scene run), so the agency's ingest list shows it later."""
        with self.atomic():
            cur = self.conn.execute(
                "INSERT INTO ingest_runs (kind, source, user, started_at, agency_id, collection_id, case_ref) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kind, source, user, utc_now(), agency_id, collection_id, case_ref),
            )
            self.audit(user, "ingest.start", {"run_id": cur.lastrowid, "kind": kind, "source": source})
        return cur.lastrowid

    def ingest_runs(self, agency_id: int, *, limit: int = 50, before: int | None = None) -> list[dict]:
        """``agency_id``'s ingest runs, newest first, at most ``limit`` (with ``before``: only runs with a
        smaller id, the next page of an older list): id, kind, user, started_at,
        finished_at, collection (name), case_ref, state (running, finished, failed: it raised, with its
        ``error``; interrupted: recorded as started, not finished, and no process holds it) and processed /
        faces_stored / failures (from the run's summary once finished, counted from what it stored so far
        otherwise)."""
        rows = self.conn.execute(
            """SELECT r.id, r.kind, r.user, r.started_at, r.finished_at, r.status, r.error, r.counts, r.case_ref,
                      c.name AS collection,
                      (SELECT COUNT(*) FROM ingest_failures f WHERE f.run_id = r.id) AS failures
               FROM ingest_runs r LEFT JOIN collections c ON c.id = r.collection_id
               WHERE r.agency_id = ? AND (? IS NULL OR r.id < ?) ORDER BY r.id DESC LIMIT ?""",
            (agency_id, before, before, limit)).fetchall()
        runs = []
        for r in rows:
            run = {k: r[k] for k in ("id", "kind", "user", "started_at", "finished_at", "collection", "case_ref",
                                     "failures", "error")}
            counts = json.loads(r["counts"]) if r["counts"] else None
            if counts is None:
                counts = {"processed": self.conn.execute("SELECT COUNT(*) FROM images WHERE run_id = ?",
                                                         (r["id"],)).fetchone()[0],
                          "faces_stored": self.conn.execute(
                              "SELECT COUNT(*) FROM faces WHERE image_id IN (SELECT id FROM images WHERE run_id = ?)",
                              (r["id"],)).fetchone()[0]}
            run.update(processed=counts.get("processed", 0), faces_stored=counts.get("faces_stored", 0),
                       total=counts.get("total"))
            if r["status"]:
                run["state"] = r["status"]
            else:
                run["state"] = "running" if run_alive(self.data_dir, r["id"]) else "interrupted"
            runs.append(run)
        return runs

    def finish_ingest_run(self, run_id: int, user: str, counts: dict) -> None:
        with self.atomic():
            self.conn.execute(
                "UPDATE ingest_runs SET finished_at = ?, counts = ?, status = 'finished' WHERE id = ?",
                (utc_now(), json.dumps(counts, sort_keys=True), run_id),
            )
            self.audit(user, "ingest.finish", {"run_id": run_id, "counts": counts})

    def fail_ingest_run(self, run_id: int, user: str, error: str) -> None:
        """Record that run ``run_id`` stopped on an error (``error``, the message its user saw), with an audit
        entry; a run already finished or marked keeps its state. Call it holding the writer lock."""
        with self.atomic():
            changed = self.conn.execute(
                "UPDATE ingest_runs SET status = 'failed', error = ?, finished_at = ? WHERE id = ? AND status IS NULL",
                (error, utc_now(), run_id)).rowcount
            if changed:
                self.audit(user, "ingest.failed", {"run_id": run_id, "error": error})

    def mark_interrupted_runs(self) -> list[int]:
        """Mark ingest runs that never finished and whose process is gone as interrupted, with an audit
        entry each; returns their ids. Call it holding the writer lock (a run starts under it)."""
        dead = [r[0] for r in self.conn.execute(
            "SELECT id FROM ingest_runs WHERE finished_at IS NULL AND status IS NULL").fetchall()
            if not run_alive(self.data_dir, r[0])]
        for run_id in dead:
            with self.atomic():
                self.conn.execute("UPDATE ingest_runs SET status = 'interrupted', finished_at = ? WHERE id = ?",
                                  (utc_now(), run_id))
                self.audit("facematch", "ingest.interrupted", {"run_id": run_id})
            log.warning("ingest run %d was interrupted (its process died before finishing); marked so", run_id)
        return dead

    def stored_hashes(self, hashes: list[str], kind: str, *, owner_agency: int = 0) -> set[str]:
        """Which of ``hashes`` ``owner_agency`` already stores for ``kind`` (whatever their outcome; 0: the
        images of no agency). Another agency's copies are never consulted."""
        found: set[str] = set()
        for start in range(0, len(hashes), 500):
            chunk = hashes[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT sha256 FROM images WHERE owner_agency = ? AND kind = ? AND sha256 IN ({marks})",
                (owner_agency, kind, *chunk)
            )
            found.update(r[0] for r in rows)
        return found

    def subject_id(self, reference: str, *, create: bool = False, agency_id: int = 0) -> int | None:
        """The id of ``agency_id``'s subject ``reference`` (0: no agency); with ``create``, made when new.

        A reference belongs to its agency (schema 11): another agency's subject of the same reference is
        another person, never found here."""
        row = self.conn.execute("SELECT id FROM subjects WHERE agency_id = ? AND reference = ?",
                                (agency_id, reference)).fetchone()
        if row or not create:
            return row[0] if row else None
        cur = self.conn.execute(
            "INSERT INTO subjects (reference, agency_id, created_at) VALUES (?, ?, ?)",
            (reference, agency_id, utc_now()))
        return cur.lastrowid

    def subjects_named(self, reference: str) -> list[dict]:
        """Every subject of this reference, one per agency that uses it: ``{"id", "agency_id", "agency"}``
        (``agency`` None for no agency), by agency id."""
        return [dict(r) for r in self.conn.execute(
            """SELECT s.id, s.agency_id, a.name AS agency FROM subjects s LEFT JOIN agencies a ON a.id = s.agency_id
               WHERE s.reference = ? ORDER BY s.agency_id""", (reference,))]

    def add_image(self, *, sha256: str, kind: str, original_path: str, outcome: str, reason: str | None,
                  subject_id: int | None = None, custody_ref: str | None = None, case_ref: str | None = None,
                  captured_at: str | None = None, source: str | None = None, width: int | None = None,
                  height: int | None = None, format: str | None = None, notes: list[str] | None = None,
                  run_id: int | None = None, not_convicted: bool = False, owner_agency: int = 0) -> int | None:
        """Insert an image row; returns its id, or None if ``owner_agency`` already stores the same content
        for ``kind`` (each agency keeps its own record of a file; 0: no agency)."""
        cur = self.conn.execute(
            """INSERT OR IGNORE INTO images (sha256, kind, subject_id, custody_ref, case_ref, captured_at,
               source, original_path, width, height, format, outcome, reason, notes, ingested_at, run_id,
               not_convicted, owner_agency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (sha256, kind, subject_id, custody_ref, case_ref, captured_at, source, original_path, width,
             height, format, outcome, reason, json.dumps(notes or []), utc_now(), run_id, int(not_convicted),
             owner_agency),
        )
        return cur.lastrowid if cur.rowcount else None

    def add_face(self, image_id: int, kind: str, face_no: int, face: FaceRecord, *, model_name: str,
                 model_version: str, subject_id: int | None = None, flags: list[str] | None = None) -> int:
        """Insert one face with its float32 embedding; returns the face id (the FAISS id)."""
        embedding = np.asarray(face.embedding, dtype=np.float32).reshape(EMBEDDING_DIM)
        b = face.box
        cur = self.conn.execute(
            """INSERT INTO faces (image_id, kind, subject_id, face_no, box_left, box_top, box_right,
               box_bottom, landmarks, detector, confidence, quality, quality_score, flags, embedding,
               model_name, model_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (image_id, kind, subject_id, face_no, b.left, b.top, b.right, b.bottom,
             np.asarray(face.landmarks, dtype=np.float32).tobytes(), face.detector, face.confidence,
             json.dumps(face.quality, sort_keys=True), face.quality_score, json.dumps(flags or []),
             embedding.tobytes(), model_name, model_version),
        )
        return cur.lastrowid

    def embedding_model(self, kind: str) -> str | None:
        """"<model name> <version>" every ``kind`` face of this catalogue was embedded with (None: no face yet)."""
        return self.get_meta(f"embedding_model.{kind}")

    def claim_embedding_model(self, kind: str, model: str) -> None:
        """Record that ``kind`` faces are embedded with ``model``; refuse another one.

        Descriptors made with another network or alignment are not comparable, so a gallery never mixes
        them: ``IncompatibleEmbeddings`` unless the kind holds no face (e.g. after every one was deleted).
        """
        current = self.embedding_model(kind)
        if current == model:
            return
        if current is not None and self.conn.execute(
                "SELECT 1 FROM faces WHERE kind = ? LIMIT 1", (kind,)).fetchone():
            raise IncompatibleEmbeddings(
                f"the catalogue's {kind} faces were embedded with {current}, but the current settings embed "
                f"with {model}: use the settings the catalogue was built with, or ingest into a new catalogue")
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"embedding_model.{kind}", model))

    # -- faces for the index ------------------------------------------------------------------------

    def face_state(self, kind: str) -> dict:
        """What an index of ``kind`` faces must reflect: count, highest id, deletions so far, models."""
        row = self.conn.execute(
            "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM faces WHERE kind = ?", (kind,)
        ).fetchone()
        model = self.embedding_model(kind)
        return {
            "catalogue_id": self.catalogue_id,
            "kind": kind,
            "count": row[0],
            "max_face_id": row[1],
            "deletions": int(self.get_meta(f"deletions.{kind}", "0")),
            "models": [model] if model and row[0] else [],
        }

    def face_ids(self, kind: str) -> np.ndarray:
        """Ids of every ``kind`` face, sorted (n,) int64: what the index of that kind must hold."""
        rows = self.conn.execute("SELECT id FROM faces WHERE kind = ? ORDER BY id", (kind,)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_embeddings(self, kind: str, *, after_id: int = 0, block: int = 10_000
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(ids (n,) int64, vectors (n, 128) float32)`` blocks of ``kind`` faces with id > after_id."""
        last = after_id
        while True:
            rows = self.conn.execute(
                "SELECT id, embedding FROM faces WHERE kind = ? AND id > ? ORDER BY id LIMIT ?",
                (kind, last, block),
            ).fetchall()
            if not rows:
                return
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            last = int(ids[-1])
            yield ids, vectors.copy()

    def embeddings(self, face_ids: list[int]) -> dict[int, np.ndarray]:
        """Embeddings of the given faces, ``{face_id: (128,) float32}``."""
        out: dict[int, np.ndarray] = {}
        for start in range(0, len(face_ids), 500):
            chunk = [int(i) for i in face_ids[start:start + 500]]
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(f"SELECT id, embedding FROM faces WHERE id IN ({marks})", chunk):
                out[r[0]] = np.frombuffer(r[1], dtype=np.float32).copy()
        return out

    def custody_faces(self, subject_ids: list[int]) -> list[dict]:
        """Every custody face of the given subjects (ids: a reference alone may name several agencies'
        subjects): ``{"face_id", "subject_id", "subject_ref", "detector"}``."""
        out: list[dict] = []
        for start in range(0, len(subject_ids), 500):
            chunk = [int(i) for i in subject_ids[start:start + 500]]
            marks = ",".join("?" * len(chunk))
            out += [dict(r) for r in self.conn.execute(
                f"""SELECT f.id AS face_id, f.subject_id, s.reference AS subject_ref, f.detector FROM faces f
                    JOIN subjects s ON s.id = f.subject_id WHERE f.kind = 'custody' AND f.subject_id IN ({marks})
                    ORDER BY f.id""", chunk)]
        return out

    def face_details(self, face_ids: list[int]) -> dict[int, dict]:
        """Who and where each face is: subject reference, case, image path, detector and quality."""
        out: dict[int, dict] = {}
        for start in range(0, len(face_ids), 500):
            chunk = [int(i) for i in face_ids[start:start + 500]]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"""SELECT f.id AS face_id, f.image_id, f.kind, f.detector, f.quality_score, f.flags,
                           f.subject_id, s.reference AS subject_ref, i.case_ref, i.custody_ref, i.original_path,
                           i.captured_at
                    FROM faces f JOIN images i ON i.id = f.image_id
                    LEFT JOIN subjects s ON s.id = f.subject_id WHERE f.id IN ({marks})""",
                chunk,
            )
            for r in rows:
                out[r["face_id"]] = dict(r)
        return out

    def gallery_size(self) -> tuple[int, int]:
        """(enrolled custody subjects, custody faces): what FPIR grows with."""
        row = self.conn.execute(
            "SELECT COUNT(DISTINCT subject_id), COUNT(*) FROM faces WHERE kind = 'custody'"
        ).fetchone()
        return int(row[0]), int(row[1])

    def outcome_counts(self, kind: str | None = None) -> dict[str, int]:
        sql = "SELECT outcome, COUNT(*) FROM images" + (" WHERE kind = ?" if kind else "") + " GROUP BY outcome"
        return {r[0]: r[1] for r in self.conn.execute(sql, (kind,) if kind else ())}

    # -- deletion (retention) --------------------------------------------------------------------------

    def delete_subject(self, reference: str, *, actor: str, reason: str, agency_id: int | None = None) -> list[int]:
        """Delete a subject with all its images and faces; returns the removed face ids (for the index).

        The work is :func:`facematch.store.deletion.delete_subject`'s (candidates, records, audit).
        """
        from facematch.store import deletion

        return deletion.delete_subject(self, reference, actor=actor, reason=reason,
                                       agency_id=agency_id).face_ids.get("custody", [])

    def delete_case(self, case_ref: str, *, actor: str, reason: str) -> list[int]:
        """Delete every crime-scene image of a case and its faces; returns the removed face ids."""
        from facematch.store import deletion

        return deletion.delete_case(self, case_ref, actor=actor, reason=reason).face_ids.get("scene", [])

    def _erasure_details(self, kind: str, reference: str, **counts) -> dict:
        """An erasure record that keeps none of the erased data (DPA 2018 s.62): an opaque deletion
        reference, a keyed hash of the erased reference (only the key holder can test a reference against
        it, e.g. to answer "was my data erased?"), the counts and the reason."""
        return {"deletion_ref": uuid.uuid4().hex, f"{kind}_hmac": chain.pseudonym(self.audit_key(), kind, reference),
                **counts}

    def _count_deletions(self, kind: str, n: int) -> None:
        total = int(self.get_meta(f"deletions.{kind}", "0")) + n
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"deletions.{kind}", str(total)))

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default
