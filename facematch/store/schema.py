"""The catalogue's SQLite schema and its migrations.

``PRAGMA user_version`` holds the schema version. Each migration is a list of statements applied in one
transaction; a catalogue newer than this code is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3

from facematch.errors import CatalogueError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

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

#: Version 3: an ingest run's ``status``: NULL while it runs, "finished", or "interrupted" (its process
#: died before finishing; found and marked by the next writer).
_V3 = [
    "ALTER TABLE ingest_runs ADD COLUMN status TEXT",
    "UPDATE ingest_runs SET status = 'finished' WHERE finished_at IS NOT NULL",
]

#: Migrations in order: MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: list[list[str]] = [_V1, _V2, _V3]
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
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] > version:  # another process got here first
                conn.execute("COMMIT")
                continue
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found
