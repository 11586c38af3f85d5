"""Deletion under retention removes every trace, past searches keep a marked record, and it can be proved."""

import datetime as dt
import json
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_facematch, require_data

from facematch.cli.commands import cli
from facematch.errors import DataDeleted, NotFound
from facematch.evaluation.embed_cache import EmbeddingCache, ImageEmbedding, cached_hashes
from facematch.store.deletion import salted_digest


def _write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def gallery(frmdb_gallery, tmp_path):
    """A private copy of the frmdb gallery, plus a faceless photo (scikit-image's coffee) under subject 040."""
    from skimage import data

    _, _, root = frmdb_gallery
    shutil.copytree(root, tmp_path / "g")
    coffee = _write_rgb(tmp_path / "extra" / "coffee.png", data.coffee())
    (tmp_path / "extra" / "m.csv").write_text("path,subject_id\ncoffee.png,040\n")
    with make_facematch(tmp_path / "g") as fm:
        summary = fm.ingest_custody(tmp_path / "extra" / "m.csv")
        assert summary.outcomes == {"no_face": 1}
        yield fm, coffee


def _cli(fm, args):
    base = ["--data-dir", str(fm.settings.data_dir), "--index-dir", str(fm.settings.index_dir)]
    return CliRunner().invoke(cli, base + args)


def _subject_hashes(fm, subject):
    return [r[0] for r in fm.catalogue.conn.execute(
        "SELECT i.sha256 FROM images i JOIN subjects s ON s.id = i.subject_id WHERE s.reference = ?", (subject,))]


def _cache_with(folder, fm, hashes):
    """An evaluation cache holding entries for ``hashes`` (what an evaluation of these images leaves)."""
    cache = EmbeddingCache(folder)
    vector = np.zeros(128, np.float32)
    cache.put_many("facematch-test", {h: ImageEmbedding("ok", vector, 1, 90.0, "hog", (0, 0, 1, 1), 0.1)
                                      for h in hashes})
    cache.close()


def test_delete_subject_removes_every_trace_and_past_searches_keep_a_marked_record(gallery, tmp_path):
    fm, coffee = gallery
    probe = require_data("frmdb-dev", "mugshots", "040", "Img_32.jpg")
    hashes = _subject_hashes(fm, "040")
    assert len(hashes) == 4  # three mugshots and the faceless photo
    cache_dir = tmp_path / "eval-cache"
    _cache_with(cache_dir, fm, hashes + ["0" * 64])

    before = fm.search([probe], top=5, user="dc1", reason="test")
    rank = next(c.rank for c in before.probes[0].subjects if c.subject == "040")
    faces = fm.catalogue.conn.execute("SELECT COUNT(*) FROM faces f JOIN subjects s ON s.id = f.subject_id "
                                      "WHERE s.reference = '040'").fetchone()[0]
    removed = fm.delete_subject("040", user="records", reason="retention ended", cache_dir=cache_dir)
    assert removed == faces >= 2

    conn = fm.catalogue.conn
    assert conn.execute("SELECT COUNT(*) FROM subjects WHERE reference = '040'").fetchone()[0] == 0
    marks = ",".join("?" * len(hashes))
    assert conn.execute(f"SELECT COUNT(*) FROM images WHERE sha256 IN ({marks})", hashes).fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM images WHERE original_path = ?", (str(coffee),)).fetchone()[0] == 0
    assert cached_hashes(cache_dir) == {"0" * 64}  # only the unrelated entry is left

    after = fm.search([probe], top=5, user="dc1", reason="test")
    assert "040" not in [c.subject for c in after.probes[0].subjects]

    stored, _ = fm.review(before.search_id, reason="test")
    marked = next(c for c in stored.probes[0].subjects if c.rank == rank)
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert marked.deleted == f"deleted under retention on {today} (retention ended)"
    assert (marked.subject, marked.image_path, marked.face_id) == (None, None, None)
    shown = _cli(fm, ["review", str(before.search_id), "--reason", "test"])
    assert shown.exit_code == 0 and f"DELETED UNDER RETENTION ON {today}" in shown.output
    assert "040" not in shown.output.replace(str(probe), "")  # the probe path names its folder, 040

    with pytest.raises(DataDeleted, match="deleted under retention"):
        fm.decide(before.search_id, rank, decision="confirmed", reviewer="PC1")
    refused = _cli(fm, ["decide", str(before.search_id), str(rank), "--decision", "confirmed", "--reviewer", "PC1"])
    assert refused.exit_code == 1 and "no decision can be recorded on it" in refused.output

    proof = fm.verify_deletion("subject", "040", cache_dir=cache_dir)
    assert proof["ok"] and proof["images"] == 4 and proof["faces"] == removed, proof
    assert _cli(fm, ["verify-deletion", "subject", "040", "--cache-dir", str(cache_dir)]).exit_code == 0
    assert fm.verify_deletion("image", hashes[0], cache_dir=cache_dir)["ok"]  # found through the subject's record

    leftover = fm.index_store.folder / ".custody.faiss.abc.tmp"
    leftover.write_bytes(b"interrupted save")
    proof = fm.verify_deletion("subject", "040", cache_dir=cache_dir)
    assert not proof["ok"] and "custody.faiss.abc.tmp" in proof["checks"]["files"][0]
    r = _cli(fm, ["verify-deletion", "subject", "040", "--cache-dir", str(cache_dir)])
    assert r.exit_code == 1 and "error: traces of the deleted subject remain" in r.output


def test_verification_finds_traces_a_deletion_left(gallery, tmp_path):
    fm, _ = gallery
    hashes = _subject_hashes(fm, "041")
    fm.delete_subject("041", reason="retention ended", cache_dir=tmp_path / "none")
    _cache_with(tmp_path / "cache", fm, hashes[:1])  # e.g. an evaluation run after the deletion
    proof = fm.verify_deletion("subject", "041", cache_dir=tmp_path / "cache")
    assert proof["checks"]["evaluation cache"] == ["1 deleted image(s) still cached"] and not proof["ok"]
    fm.catalogue.conn.execute("INSERT INTO subjects (reference, created_at) VALUES ('041', 'x')")
    proof = fm.verify_deletion("subject", "041", cache_dir=tmp_path / "none")
    assert proof["checks"]["catalogue"] == ["table subjects.reference still holds 1 trace(s) of the deleted data"]
    with pytest.raises(NotFound, match="no deletion of subject '042' is recorded"):
        fm.verify_deletion("subject", "042")


def test_delete_image_by_path_and_by_hash(gallery, tmp_path):
    fm, coffee = gallery
    r = _cli(fm, ["delete", "image", str(coffee), "--reason", "wrong photo", "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0 and "0 faces removed" in r.output
    assert fm.verify_deletion("image", str(coffee), cache_dir=tmp_path / "c")["ok"]
    assert fm.catalogue.subject_id("040") is not None  # the subject keeps its other images
    sha = _subject_hashes(fm, "043")[0]
    assert fm.delete_image(sha.upper(), reason="wrong photo", cache_dir=tmp_path / "c") == 1
    assert len(_subject_hashes(fm, "043")) == 2 and fm.index_status()["custody"].startswith("ok")
    assert fm.verify_deletion("image", sha, cache_dir=tmp_path / "c")["ok"]


def test_delete_case_marks_scene_candidates(tmp_path, astronaut):
    fm = make_facematch(tmp_path)
    _write_rgb(tmp_path / "scene" / "still.png", astronaut)
    fm.ingest_scene(tmp_path / "scene", case="OP-X")
    probe = _write_rgb(tmp_path / "probe.png", astronaut[:, ::-1])
    search = fm.search([probe], reason="test")
    assert search.probes[0].scene_faces[0].case_ref == "OP-X"
    assert fm.delete_case("OP-X", reason="case closed", cache_dir=tmp_path / "c") >= 1
    candidates = [c for p in fm.review(search.search_id, reason="test")[0].probes for c in p.scene_faces]
    assert candidates and all(c.case_ref is None and c.deleted.endswith("(case closed)") for c in candidates)
    assert fm.verify_deletion("case", "OP-X", cache_dir=tmp_path / "c")["ok"]
    fm.close()


def test_retention_due_and_apply(tmp_path):
    from skimage import data

    coffee = data.coffee()
    rows = [("old.png", "OLD", "2015-01-02", ""), ("old2.png", "OLD", "2026-01-01", ""),
            ("new.png", "NEW", "2026-01-01", ""), ("nc.png", "NC", "2026-01-01", "yes")]
    for n, (name, *_) in enumerate(rows):
        _write_rgb(tmp_path / "src" / name, coffee[: 300 + 10 * n])
    (tmp_path / "src" / "m.csv").write_text("path,subject_id,captured_at,not_convicted\n"
                                            + "".join(",".join(r) + "\n" for r in rows))
    fm = make_facematch(tmp_path)
    fm.ingest_custody(tmp_path / "src" / "m.csv")
    today = dt.datetime.now(dt.timezone.utc).date()
    due = fm.retention_due(today=today)
    assert [(d.subject, d.due_images, d.total_images, d.not_convicted) for d in due] == [
        ("OLD", 1, 2, False), ("NC", 1, 1, True)]
    assert due[0].review_date == "2020-12-31"  # 2015-01-02 + 6 * 365 days (two leap days)
    fm.retention_apply(reason="MoPI review", user="records", today=today, cache_dir=tmp_path / "c")
    assert fm.retention_due(today=today) == []
    left = {r[0]: r[1] for r in fm.catalogue.conn.execute(
        "SELECT s.reference, COUNT(*) FROM images i JOIN subjects s ON s.id = i.subject_id GROUP BY 1")}
    assert left == {"OLD": 1, "NEW": 1}
    entries = fm.audit(action="retention.apply", reason="test")
    # the chain names erased subjects only by their salted digest, never in clear
    assert sorted(e["details"]["subject_digest"] for e in entries) == sorted(
        salted_digest(fm.catalogue.catalogue_id, s) for s in ("NC", "OLD"))
    assert all("subject" not in e["details"] and "NC" not in json.dumps(e["details"]) for e in entries)
    assert all(e["actor"] == "records" and e["details"]["reason"] == "MoPI review" for e in entries)
    assert fm.verify_deletion("subject", "NC", cache_dir=tmp_path / "c")["ok"]
    fm.close()


def test_face_ids_sqlite_reuses_after_a_deletion_are_not_traces(gallery, tmp_path, astronaut):
    fm, _ = gallery
    top, owner = fm.catalogue.conn.execute(
        "SELECT f.id, s.reference FROM faces f JOIN subjects s ON s.id = f.subject_id ORDER BY f.id DESC").fetchone()
    fm.delete_subject(owner, reason="retention ended", cache_dir=tmp_path / "c")
    _write_rgb(tmp_path / "new" / "NEW" / "a.png", astronaut)
    fm.ingest_custody(tmp_path / "new")
    (new_id,) = [r[0] for r in fm.catalogue.conn.execute(
        "SELECT f.id FROM faces f JOIN subjects s ON s.id = f.subject_id WHERE s.reference = 'NEW'")]
    assert new_id <= top  # the deleted face's id was given to the new face
    proof = fm.verify_deletion("subject", owner, cache_dir=tmp_path / "c")
    assert proof["ok"], proof


def test_erasing_a_subject_erases_review_notes_and_the_chain_still_verifies(gallery, tmp_path):
    """Two-person reviews and decisions keep their notes out of the chained log, so erasure can reach them."""
    from facematch.store.schema import ERASED_NOTE_PREFIX

    fm, _ = gallery
    probe = require_data("frmdb-dev", "mugshots", "040", "Img_32.jpg")
    search = fm.search([probe], top=5, user="dc1", reason="test")
    rank = next(c.rank for c in search.probes[0].subjects if c.subject == "040")
    notes = {"rita": "NOTE-RITA-7731 scar above the left eye", "ravi": "NOTE-RAVI-8842 agree: ear shape"}
    for reviewer, note in notes.items():
        fm.review_candidate(search.search_id, 1, rank, reviewer=reviewer, decision="possible match", note=note)
    fm.decide(search.search_id, rank, decision="confirmed", reviewer="PC1", probe=1, note="NOTE-DECIDE-9953")
    entries = fm.catalogue.audit_entries(limit=20)
    reviews = [e for e in entries if e["action"] in ("review.first", "review.second")]
    assert [e["actor"] for e in reviews] == ["ravi", "rita"] and reviews[0]["details"]["outcome"] == "investigative lead"
    for e in entries:  # the chain holds ids and digests: no note, no candidate
        text = json.dumps(e["details"])
        assert "NOTE-" not in text and '"040"' not in text and "candidate" not in e["details"], e
    assert fm.verify_audit().ok

    fm.delete_subject("040", user="records", reason="retention ended", cache_dir=tmp_path / "c")
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    conn = fm.catalogue.conn
    kept = conn.execute("SELECT reviewer, decision, note FROM reviews ORDER BY stage").fetchall()
    assert [tuple(r) for r in kept] == [(name, "possible match", f"{ERASED_NOTE_PREFIX} on {today}")
                                        for name in ("rita", "ravi")]
    assert conn.execute("SELECT note FROM decisions").fetchone()[0] == f"{ERASED_NOTE_PREFIX} on {today}"
    report = fm.verify_audit()
    assert report.ok, report.findings
    assert fm.verify_deletion("subject", "040", cache_dir=tmp_path / "c")["ok"]
    for path in fm.settings.data_dir.glob("catalogue.sqlite3*"):  # secure_delete: not even in freed pages
        data = path.read_bytes()
        assert b"NOTE-RITA" not in data and b"NOTE-RAVI" not in data and b"NOTE-DECIDE" not in data, path
    with pytest.raises(DataDeleted):
        fm.review_candidate(search.search_id, 1, rank, reviewer="rosa", decision="not a match", note="late")

    conn.execute("UPDATE reviews SET note = ? WHERE reviewer = 'rita'", (f"{ERASED_NOTE_PREFIX} on 1999-01-01",))
    assert fm.verify_audit().findings == ["review 1: its stored rows were changed after it was audited"]
    with pytest.raises(Exception, match="reviews are kept as recorded"):
        conn.execute("UPDATE reviews SET decision = 'not a match' WHERE reviewer = 'ravi'")
