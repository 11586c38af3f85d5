"""The catalogue's SQLite schema and its migrations.

``PRAGMA user_version`` holds the schema version. Each migration is a list of statements applied in one
transaction; a catalogue newer than this code is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3

from facematch.errors import CatalogueError

__all__ = ["ERASED_NOTE_PREFIX", "AUDIT_SEARCH_ID", "AUDIT_CASE_REF", "MIGRATIONS", "SCHEMA_VERSION", "migrate"]

_V1 = [
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE subjects (
        id INTEGER PRIMARY KEY,
        reference TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE ingest_runs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        user TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        counts TEXT
    )""",
    """CREATE TABLE ingest_failures (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES ingest_runs(id),
        path TEXT NOT NULL,
        reason TEXT NOT NULL,
        at TEXT NOT NULL
    )""",
    """CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('custody', 'scene')),
        subject_id INTEGER REFERENCES subjects(id) ON DELETE CASCADE,
        custody_ref TEXT,
        case_ref TEXT,
        captured_at TEXT,
        source TEXT,
        original_path TEXT NOT NULL,
        width INTEGER,
        height INTEGER,
        format TEXT,
        outcome TEXT NOT NULL,
        reason TEXT,
        notes TEXT,
        ingested_at TEXT NOT NULL,
        run_id INTEGER REFERENCES ingest_runs(id),
        UNIQUE (sha256, kind)
    )""",
    """CREATE TABLE faces (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('custody', 'scene')),
        subject_id INTEGER REFERENCES subjects(id) ON DELETE CASCADE,
        face_no INTEGER NOT NULL,
        box_left INTEGER NOT NULL, box_top INTEGER NOT NULL,
        box_right INTEGER NOT NULL, box_bottom INTEGER NOT NULL,
        landmarks BLOB,
        detector TEXT NOT NULL,
        confidence REAL,
        quality TEXT,
        quality_score REAL,
        flags TEXT,
        embedding BLOB NOT NULL,
        model_name TEXT NOT NULL,
        model_version TEXT NOT NULL,
        UNIQUE (image_id, face_no)
    )""",
    "CREATE INDEX faces_kind_id ON faces(kind, id)",
    "CREATE INDEX faces_subject ON faces(subject_id)",
    "CREATE INDEX images_subject ON images(subject_id)",
    """CREATE TABLE searches (
        id INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        user TEXT NOT NULL,
        case_ref TEXT,
        reason TEXT,
        params TEXT NOT NULL,
        bands TEXT NOT NULL,
        gallery_subjects INTEGER NOT NULL,
        gallery_faces INTEGER NOT NULL
    )""",
    """CREATE TABLE search_probes (
        id INTEGER PRIMARY KEY,
        search_id INTEGER NOT NULL REFERENCES searches(id) ON DELETE CASCADE,
        probe_no INTEGER NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT,
        face_no INTEGER,
        box TEXT,
        detector TEXT,
        quality TEXT,
        quality_score REAL,
        warning TEXT,
        outcome TEXT NOT NULL,
        reason TEXT,
        UNIQUE (search_id, probe_no)
    )""",
    """CREATE TABLE candidates (
        id INTEGER PRIMARY KEY,
        search_id INTEGER NOT NULL REFERENCES searches(id) ON DELETE CASCADE,
        probe_id INTEGER NOT NULL REFERENCES search_probes(id) ON DELETE CASCADE,
        list TEXT NOT NULL CHECK (list IN ('custody', 'scene')),
        rank INTEGER NOT NULL,
        subject_ref TEXT,
        case_ref TEXT,
        face_id INTEGER REFERENCES faces(id) ON DELETE SET NULL,
        image_path TEXT,
        distance REAL NOT NULL,
        score REAL NOT NULL,
        band TEXT NOT NULL,
        est_fmr REAL,
        UNIQUE (probe_id, list, rank)
    )""",
    """CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        candidate_id INTEGER NOT NULL REFERENCES candidates(id) ON DELETE CASCADE,
        decision TEXT NOT NULL CHECK (decision IN ('confirmed', 'rejected', 'inconclusive')),
        reviewer TEXT NOT NULL,
        note TEXT,
        decided_at TEXT NOT NULL
    )""",
    """CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        details TEXT NOT NULL
    )""",
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
]

#: Version 2: the embedding model of each kind's faces is kept in ``meta`` ("embedding_model.<kind>"),
#: so the check that every face of a gallery was embedded alike reads one row instead of scanning faces.
_V2 = [
    """INSERT OR IGNORE INTO meta (key, value)
       SELECT 'embedding_model.' || kind, MIN(model_name || ' ' || model_version) FROM faces GROUP BY kind""",
]

#: Version 3: the audit log becomes a keyed hash chain (facematch.store.audit_chain). Each entry gets a
#: ``mac`` column; the update trigger lets only a NULL ``mac`` be set once (sealing), nothing else. The
#: entries already there are sealed, from a genesis recorded at that moment, when the catalogue is next
#: opened with the key (``Catalogue``: meta ``audit_chain.pending`` holds the last entry to seal): the chain
#: protects them from then on, not before.
_V3 = [
    "ALTER TABLE audit_log ADD COLUMN mac TEXT",
    "DROP TRIGGER audit_log_no_update",
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
       WHEN NOT (OLD.mac IS NULL AND NEW.mac IS NOT NULL AND NEW.id = OLD.id AND NEW.at = OLD.at
                 AND NEW.actor = OLD.actor AND NEW.action = OLD.action AND NEW.details = OLD.details)
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """INSERT OR REPLACE INTO meta (key, value)
       SELECT 'audit_chain.pending', CAST(COALESCE(MAX(id), 0) AS TEXT) FROM audit_log""",
]

#: Version 4 (the shared service, docs/service.md): agencies, users and their roles, API tokens and web
#: sessions (stored hashed), custody collections and cases owned by agencies, which images belong to
#: which (a separate table, so deleting an image deletes its ownership), sharing agreements between
#: agencies, who ran each search for which agency, and the two-person review of candidates.
_V4_ACCOUNTS = [
    """CREATE TABLE agencies (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL)""",
    """CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        agency_id INTEGER NOT NULL REFERENCES agencies(id),
        password_hash TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE user_roles (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('operator', 'investigator', 'reviewer', 'supervisor', 'admin')),
        PRIMARY KEY (user_id, role)
    )""",
    """CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_sha256 TEXT NOT NULL UNIQUE,
        label TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )""",
    """CREATE TABLE sessions (
        token_sha256 TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    """CREATE TABLE collections (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        agency_id INTEGER NOT NULL REFERENCES agencies(id),
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE cases (
        id INTEGER PRIMARY KEY,
        agency_id INTEGER NOT NULL REFERENCES agencies(id),
        reference TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (agency_id, reference)
    )""",
    """CREATE TABLE image_owners (
        image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
        collection_id INTEGER REFERENCES collections(id),
        case_id INTEGER REFERENCES cases(id)
    )""",
    "CREATE INDEX image_owners_collection ON image_owners(collection_id)",
    "CREATE INDEX image_owners_case ON image_owners(case_id)",
    """CREATE TABLE shares (
        id INTEGER PRIMARY KEY,
        collection_id INTEGER NOT NULL REFERENCES collections(id),
        agency_id INTEGER NOT NULL REFERENCES agencies(id),
        granted_by TEXT NOT NULL,
        granted_at TEXT NOT NULL,
        valid_until TEXT,
        revoked_at TEXT,
        revoked_by TEXT
    )""",
    """CREATE TABLE search_owners (
        search_id INTEGER PRIMARY KEY REFERENCES searches(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id),
        agency_id INTEGER NOT NULL REFERENCES agencies(id),
        case_id INTEGER NOT NULL REFERENCES cases(id),
        collections TEXT NOT NULL
    )""",
    """CREATE TABLE reviews (
        id INTEGER PRIMARY KEY,
        candidate_id INTEGER NOT NULL REFERENCES candidates(id) ON DELETE CASCADE,
        stage INTEGER NOT NULL CHECK (stage IN (1, 2)),
        reviewer TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('possible match', 'not a match', 'inconclusive')),
        note TEXT NOT NULL CHECK (length(trim(note)) > 0),
        decided_at TEXT NOT NULL,
        UNIQUE (candidate_id, stage),
        UNIQUE (candidate_id, reviewer)
    )""",
    """CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews
       BEGIN SELECT RAISE(ABORT, 'reviews are kept as recorded'); END""",
]

#: Version 5 (retention): a past search keeps its candidate rows when their data is deleted, marked
#: ``deleted_at``/``deleted_reason`` with subject, face and path cleared; custody images carry
#: ``not_convicted`` (due for deletion at once); ``deletion_records`` keep, per deletion, the face ids and
#: salted digests of the image hashes removed (no identifier in clear), so a later verification can
#: prove their absence from the catalogue, the index files and the evaluation cache.
_V5_RETENTION = [
    "ALTER TABLE candidates ADD COLUMN deleted_at TEXT",
    "ALTER TABLE candidates ADD COLUMN deleted_reason TEXT",
    "ALTER TABLE images ADD COLUMN not_convicted INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX candidates_face ON candidates(face_id)",
    """CREATE TABLE deletion_records (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        scope TEXT NOT NULL CHECK (scope IN ('subject', 'image', 'case')),
        target_digest TEXT NOT NULL,
        reason TEXT NOT NULL,
        face_ids TEXT NOT NULL,
        image_digests TEXT NOT NULL
    )""",
    "CREATE INDEX deletion_records_target ON deletion_records(scope, target_digest)",
]

#: Version 6: person-level searches. Their fused candidates hang on a probe row numbered 0 and carry, in
#: ``support``, the per-still distances behind them (JSON: [{"probe_no", "path", "distance", "rank"}]).
_V6_PERSON = [
    "ALTER TABLE candidates ADD COLUMN support TEXT",
]

#: Version 7: an ingest run's ``status``: NULL while it runs, "finished", or "interrupted" (its process
#: died before finishing; found and marked by the next writer).
_V7_RUN_STATUS = [
    "ALTER TABLE ingest_runs ADD COLUMN status TEXT",
    "UPDATE ingest_runs SET status = 'finished' WHERE finished_at IS NOT NULL",
]

#: Version 8: erasure reaches the notes of two-person reviews. A review row stays as recorded, except
#: that deleting its candidate's data under retention replaces its note with ``ERASED_NOTE_PREFIX``...
#: (the deletion's chained entry restates the row's digest); any other update is still refused.
ERASED_NOTE_PREFIX = "note erased under retention"
_V8_REVIEW_ERASURE = [
    "DROP TRIGGER reviews_no_update",
    f"""CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews
       WHEN NOT (NEW.id = OLD.id AND NEW.candidate_id = OLD.candidate_id AND NEW.stage = OLD.stage
                 AND NEW.reviewer = OLD.reviewer AND NEW.decision = OLD.decision
                 AND NEW.decided_at = OLD.decided_at AND substr(NEW.note, 1, {len(ERASED_NOTE_PREFIX)}) = '{ERASED_NOTE_PREFIX}')
       BEGIN SELECT RAISE(ABORT, 'reviews are kept as recorded'); END""",
]

#: Version 9: the supervisor's audit view filters in SQL (facematch.store.audit_query): indexes on who,
#: what and when, on the search and case an entry's details name, and on the searches of a case.
#: The indexed expressions (a query must repeat them exactly to use the index). ``json_valid`` first: an
#: entry whose details are not JSON (written outside facematch) must not make the migration, or the next
#: entry, fail; ``audit verify`` reports such an entry anyway.
AUDIT_SEARCH_ID = "CASE WHEN json_valid(details) THEN json_extract(details, '$.search_id') END"
AUDIT_CASE_REF = "CASE WHEN json_valid(details) THEN json_extract(details, '$.case_ref') END"
_V9_AUDIT_INDEXES = [
    "CREATE INDEX audit_log_actor ON audit_log(actor, id)",
    "CREATE INDEX audit_log_action ON audit_log(action, id)",
    "CREATE INDEX audit_log_at ON audit_log(at)",
    f"CREATE INDEX audit_log_search ON audit_log({AUDIT_SEARCH_ID})",
    f"CREATE INDEX audit_log_case ON audit_log({AUDIT_CASE_REF})",
    "CREATE INDEX search_owners_case ON search_owners(case_id)",
]

#: Version 10: nothing about one agency shows through another's identities or ingests.
#: - A username is unique within its agency only ((agency, username) is the identity), so adding a name
#:   that exists elsewhere cannot reveal it. ``users.actor`` is the name a user is recorded under (audit
#:   actor, searches, reviews), unique in the catalogue: ``username@agency`` for users made from now on,
#:   the bare username for those already there (unique then, and what their past entries name).
#: - An image is stored once per kind *and owning agency* (``images.owner_agency``; 0: no agency, a
#:   command-line ingest without collection or agency): agency B ingesting a file agency A stores gets its
#:   own record instead of "already stored". Existing images take their owner's agency.
#: Both tables are rebuilt (SQLite cannot drop a UNIQUE constraint): ``migrate`` turns foreign keys off
#: for it and checks them before committing, as SQLite's documentation prescribes.
_V10_AGENCY_SCOPE = [
    """CREATE TABLE users_v10 (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL,
        agency_id INTEGER NOT NULL REFERENCES agencies(id),
        password_hash TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL,
        actor TEXT NOT NULL UNIQUE,
        UNIQUE (agency_id, username)
    )""",
    """INSERT INTO users_v10 (id, username, agency_id, password_hash, active, created_at, actor)
       SELECT id, username, agency_id, password_hash, active, created_at, username FROM users""",
    "DROP TABLE users",
    "ALTER TABLE users_v10 RENAME TO users",
    """CREATE TABLE images_v10 (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('custody', 'scene')),
        subject_id INTEGER REFERENCES subjects(id) ON DELETE CASCADE,
        custody_ref TEXT,
        case_ref TEXT,
        captured_at TEXT,
        source TEXT,
        original_path TEXT NOT NULL,
        width INTEGER,
        height INTEGER,
        format TEXT,
        outcome TEXT NOT NULL,
        reason TEXT,
        notes TEXT,
        ingested_at TEXT NOT NULL,
        run_id INTEGER REFERENCES ingest_runs(id),
        not_convicted INTEGER NOT NULL DEFAULT 0,
        owner_agency INTEGER NOT NULL DEFAULT 0,
        UNIQUE (sha256, kind, owner_agency)
    )""",
    """INSERT INTO images_v10 SELECT i.id, i.sha256, i.kind, i.subject_id, i.custody_ref, i.case_ref,
           i.captured_at, i.source, i.original_path, i.width, i.height, i.format, i.outcome, i.reason, i.notes,
           i.ingested_at, i.run_id, i.not_convicted,
           COALESCE((SELECT COALESCE(c.agency_id, k.agency_id) FROM image_owners o
                     LEFT JOIN collections c ON c.id = o.collection_id LEFT JOIN cases k ON k.id = o.case_id
                     WHERE o.image_id = i.id), 0)
       FROM images i""",
    "DROP TABLE images",
    "ALTER TABLE images_v10 RENAME TO images",
    "CREATE INDEX images_subject ON images(subject_id)",
    "CREATE INDEX images_owner_sha ON images(owner_agency, kind, sha256)",
    # a deletion limited to one agency's copies (NULL: every copy); verification then expects the other
    # agencies' copies of the same files to remain
    "ALTER TABLE deletion_records ADD COLUMN agency_id INTEGER",
]

#: Version 11: a subject reference belongs to its agency, as images do since version 10.
#: - ``subjects`` is unique by (``agency_id``, ``reference``) (0: no agency, as ``images.owner_agency``): agency
#:   A's "P-123" and agency B's "P-123" are two subjects, ranked, reviewed and erased apart. An existing
#:   subject takes the agency of the images it holds (the lowest, 0 first); a subject whose images belong to
#:   several agencies is split, one subject per agency (its images and faces move to their agency's subject;
#:   the ids of the faces, and so the FAISS index, do not change).
#: - ``api_tokens.last_used_at``: the day (UTC, ``YYYY-MM-DD``) a token last authenticated a request,
#:   written at most once per token per day (NULL: not used since it was recorded).
_V11_SUBJECT_AGENCY = [
    """CREATE TABLE subjects_v11 (
        id INTEGER PRIMARY KEY,
        reference TEXT NOT NULL,
        agency_id INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        UNIQUE (agency_id, reference)
    )""",
    """INSERT INTO subjects_v11 (id, reference, agency_id, created_at)
       SELECT s.id, s.reference, COALESCE((SELECT MIN(i.owner_agency) FROM images i WHERE i.subject_id = s.id), 0),
              s.created_at FROM subjects s""",
    """INSERT INTO subjects_v11 (reference, agency_id, created_at)
       SELECT DISTINCT s.reference, i.owner_agency, s.created_at FROM images i JOIN subjects s ON s.id = i.subject_id
       WHERE i.owner_agency <> (SELECT n.agency_id FROM subjects_v11 n WHERE n.id = s.id)""",
    """UPDATE images SET subject_id = (
           SELECT n.id FROM subjects_v11 n JOIN subjects s ON s.reference = n.reference
           WHERE s.id = images.subject_id AND n.agency_id = images.owner_agency)
       WHERE subject_id IS NOT NULL""",
    """UPDATE faces SET subject_id = (SELECT i.subject_id FROM images i WHERE i.id = faces.image_id)
       WHERE subject_id IS NOT NULL""",
    "DROP TABLE subjects",
    "ALTER TABLE subjects_v11 RENAME TO subjects",
    "ALTER TABLE api_tokens ADD COLUMN last_used_at TEXT",
]

#: Version 12: an ingest run names whose it is, so the service lists an agency's past ingests after a
#: restart (``Catalogue.ingest_runs``): ``agency_id`` (0: no agency), ``collection_id`` (custody) and
#: ``case_ref`` (a crime-scene run of one case). Existing runs take them from the images they stored (a
#: run that stored none stays 0: it is shown to no agency).
_V12_RUN_OWNER = [
    "ALTER TABLE ingest_runs ADD COLUMN agency_id INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE ingest_runs ADD COLUMN collection_id INTEGER REFERENCES collections(id)",
    "ALTER TABLE ingest_runs ADD COLUMN case_ref TEXT",
    """UPDATE ingest_runs SET
         agency_id = COALESCE((SELECT MIN(i.owner_agency) FROM images i WHERE i.run_id = ingest_runs.id), 0),
         collection_id = (SELECT MIN(o.collection_id) FROM image_owners o JOIN images i ON i.id = o.image_id
                          WHERE i.run_id = ingest_runs.id),
         case_ref = (SELECT CASE WHEN COUNT(DISTINCT i.case_ref) = 1 THEN MIN(i.case_ref) END FROM images i
                     WHERE i.run_id = ingest_runs.id AND i.kind = 'scene')""",
    "CREATE INDEX ingest_runs_agency ON ingest_runs(agency_id, id)",
]

#: Version 13: an ingest run that raised (not killed) is recorded as ``status`` "failed" with its ``error``
#: message, so an agency's ingest list still says why after a restart instead of calling it interrupted.
_V13_RUN_ERROR = [
    "ALTER TABLE ingest_runs ADD COLUMN error TEXT",
]

#: Migrations in order: MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: list[list[str]] = [_V1, _V2, _V3, _V4_ACCOUNTS, _V5_RETENTION, _V6_PERSON, _V7_RUN_STATUS,
                               _V8_REVIEW_ERASURE, _V9_AUDIT_INDEXES, _V10_AGENCY_SCOPE, _V11_SUBJECT_AGENCY,
                               _V12_RUN_OWNER, _V13_RUN_ERROR]
#: Migrations that rebuild tables others refer to: run with foreign keys off, checked before the commit.
_REBUILDS = {9, 10}
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to ``SCHEMA_VERSION``; returns the version found before migrating.

    Raises ``CatalogueError`` when the file's schema is newer than this code understands.
    """
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise CatalogueError(
            f"catalogue schema version {found} is newer than this facematch understands ({SCHEMA_VERSION}): "
            "upgrade facematch"
        )
    for version in range(found, SCHEMA_VERSION):
        foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()[0]
        if version in _REBUILDS:  # outside a transaction, or SQLite ignores it
            conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] > version:  # another process got here first
                conn.execute("COMMIT")
                continue
            before = len(conn.execute("PRAGMA foreign_key_check").fetchall()) if version in _REBUILDS else 0
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            broken = len(conn.execute("PRAGMA foreign_key_check").fetchall()) if version in _REBUILDS else 0
            if broken > before:  # rows the rebuild left pointing nowhere (any found before stay as they were)
                raise CatalogueError(f"migration to schema {version + 1} would break {broken - before} foreign "
                                     "key reference(s); nothing was changed")
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    return found
