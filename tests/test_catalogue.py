"""The catalogue: schema version and migrations, foreign keys, append-only audit, identity."""

import sqlite3

import numpy as np
import pytest

from facematch.errors import CatalogueError, IncompatibleEmbeddings, NotFound
from facematch.store.catalogue import Catalogue
from facematch.store.schema import SCHEMA_VERSION
from facematch.types import FaceBox, FaceRecord


def _face(seed: int) -> FaceRecord:
    rng = np.random.default_rng(seed)
    return FaceRecord(box=FaceBox(1, 2, 30, 40), detector="hog", confidence=1.5,
                      landmarks=rng.random((68, 2), dtype=np.float32),
                      embedding=rng.random(128, dtype=np.float32), quality={"score": 50.0}, quality_score=50.0)


def test_new_catalogue_has_current_schema_wal_and_foreign_keys(tmp_path):
    with Catalogue(tmp_path) as cat:
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cat.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        first_id = cat.catalogue_id
    with Catalogue(tmp_path) as again:
        assert again.catalogue_id == first_id  # identity survives reopening


def test_newer_schema_is_refused(tmp_path):
    Catalogue(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "catalogue.sqlite3")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(CatalogueError, match="newer than this facematch understands"):
        Catalogue(tmp_path)


def test_audit_log_is_append_only(tmp_path):
    with Catalogue(tmp_path) as cat:
        cat.audit("alice", "search", {"search_id": 1})
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            cat.conn.execute("UPDATE audit_log SET actor = 'mallory'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            cat.conn.execute("DELETE FROM audit_log")
        assert cat.audit_entries()[0]["actor"] == "alice"


def test_face_round_trip_and_embeddings_are_float32(tmp_path):
    cat = Catalogue(tmp_path)
    with cat.atomic():
        sid = cat.subject_id("S1", create=True)
        image_id = cat.add_image(sha256="ab" * 32, kind="custody", original_path="/x.jpg", outcome="enrolled",
                                 reason=None, subject_id=sid)
        face = _face(1)
        face_id = cat.add_face(image_id, "custody", 0, face, model_name="m", model_version="v", subject_id=sid)
        assert cat.add_image(sha256="ab" * 32, kind="custody", original_path="/copy.jpg", outcome="enrolled",
                             reason=None) is None  # same content: not stored twice
    stored = cat.embeddings([face_id])[face_id]
    assert stored.dtype == np.float32 and np.array_equal(stored, face.embedding)
    ids, vectors = next(cat.iter_embeddings("custody"))
    assert ids.tolist() == [face_id] and vectors.shape == (1, 128)
    assert cat.face_state("custody")["count"] == 1
    cat.close()


def test_transaction_rolls_back_on_error(tmp_path):
    with Catalogue(tmp_path) as cat:
        with pytest.raises(RuntimeError):
            with cat.atomic():
                cat.subject_id("S1", create=True)
                raise RuntimeError("crash mid-batch")
        assert cat.subject_id("S1") is None


def test_delete_subject_cascades_and_counts_deletions(tmp_path):
    with Catalogue(tmp_path) as cat:
        with cat.atomic():
            sid = cat.subject_id("S1", create=True)
            image_id = cat.add_image(sha256="cd" * 32, kind="custody", original_path="/y.jpg",
                                     outcome="enrolled", reason=None, subject_id=sid)
            face_id = cat.add_face(image_id, "custody", 0, _face(2), model_name="m", model_version="v",
                                   subject_id=sid)
        removed = cat.delete_subject("S1", actor="records-officer", reason="retention ended")
        assert removed == [face_id]
        assert cat.conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0] == 0
        assert cat.face_state("custody")["deletions"] == 1
        assert cat.audit_entries(action="retention.delete_subject")[0]["details"]["reason"] == "retention ended"
        with pytest.raises(NotFound, match="no subject 'S1'"):
            cat.delete_subject("S1", actor="x", reason="y")


def test_version_1_catalogue_learns_its_embedding_model_on_migration(tmp_path):
    from facematch.store import schema

    conn = sqlite3.connect(tmp_path / "catalogue.sqlite3")
    for statement in schema.MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO images (sha256, kind, original_path, outcome, ingested_at) "
                 "VALUES ('ab', 'custody', 'x.jpg', 'enrolled', '2026-01-01')")
    conn.execute("INSERT INTO faces (image_id, kind, face_no, box_left, box_top, box_right, box_bottom, "
                 "landmarks, detector, embedding, model_name, model_version) "
                 "VALUES (1, 'custody', 0, 0, 0, 10, 10, x'', 'hog', zeroblob(512), 'm', 'v1')")
    conn.commit()
    conn.close()
    with Catalogue(tmp_path) as cat:
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert cat.embedding_model("custody") == "m v1" and cat.embedding_model("scene") is None
        assert cat.face_state("custody")["models"] == ["m v1"]
        cat.claim_embedding_model("scene", "m v2")  # no scene face yet: any model may claim it
        with pytest.raises(IncompatibleEmbeddings, match="m v1.*m v2"):
            cat.claim_embedding_model("custody", "m v2")
