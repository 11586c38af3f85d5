"""Ingestion on real faces: outcomes, bad input, idempotence, parallel workers, kill and resume."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, make_facematch, require_data

from tests.bad_inputs import OK, TOO_LARGE, write_bad_input_corpus


def _small_custody_folder(tmp_path, subjects=("040", "041", "042"), views=("Img_33.jpg", "Img_23.jpg")):
    mugshots = require_data("frmdb-dev", "mugshots")
    folder = tmp_path / "custody"
    for s in subjects:
        (folder / s).mkdir(parents=True)
        for v in views:
            shutil.copy(mugshots / s / v, folder / s / v)
    return folder


def test_custody_ingest_enrols_one_face_per_image_and_is_idempotent(tmp_path):
    folder = _small_custody_folder(tmp_path)
    fm = make_facematch(tmp_path)
    first = fm.ingest_custody(folder)
    assert first.total == 6 and first.processed == 6
    assert first.outcomes.get("enrolled", 0) >= 5  # frontal and 45-degree eye-level views
    faces = fm.catalogue.conn.execute("SELECT COUNT(*), COUNT(DISTINCT image_id) FROM faces").fetchone()
    assert faces[0] == faces[1] == first.faces_stored  # one face per custody image
    again = fm.ingest_custody(folder)
    assert again.processed == 0 and again.already_stored == 6 and again.faces_stored == 0
    assert fm.catalogue.conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0] == first.faces_stored
    assert fm.index_status()["custody"] == f"ok ({first.faces_stored} faces)"


def test_bad_input_corpus_gets_recorded_reasons_and_never_aborts(tmp_path, astronaut):
    corpus = tmp_path / "scene"
    corpus.mkdir()
    expected = write_bad_input_corpus(corpus, astronaut)
    (corpus / "manifest-points-nowhere").mkdir()
    manifest = tmp_path / "scene.csv"
    rows = [f"{corpus / name},CASE-1" for name in expected] + [f"{tmp_path / 'missing.jpg'},CASE-1"]
    manifest.write_text("path,case_ref\n" + "\n".join(rows) + "\n")
    fm = make_facematch(tmp_path)
    summary = fm.ingest_scene(manifest)
    assert summary.unreadable_paths == 1  # the row pointing nowhere
    failure = fm.catalogue.conn.execute("SELECT path, reason FROM ingest_failures").fetchone()
    assert failure["path"].endswith("missing.jpg") and "file not found" in failure["reason"]
    rows = {r["original_path"].rsplit("/", 1)[-1]: dict(r) for r in fm.catalogue.conn.execute(
        "SELECT original_path, outcome, reason FROM images")}
    for name, outcome in expected.items():
        if name in ("empty.jpg",):
            continue  # zero bytes: its content hash may equal another zero-byte file's
        if outcome == OK:
            assert rows[name]["outcome"] == "stored", (name, rows[name])
        elif outcome == TOO_LARGE:
            assert rows[name]["outcome"] == "too_large" and "pixels" in rows[name]["reason"]
        else:
            assert rows[name]["outcome"] == "unreadable" and rows[name]["reason"], name
    assert rows["empty.jpg"]["outcome"] == "unreadable"


def test_two_workers_give_the_same_catalogue_as_one(tmp_path):
    folder = _small_custody_folder(tmp_path, subjects=("043", "044"), views=("Img_33.jpg", "Img_43.jpg"))
    one = make_facematch(tmp_path / "one")
    two = make_facematch(tmp_path / "two", workers=2)
    one.ingest_custody(folder)
    two.ingest_custody(folder)
    query = "SELECT i.sha256, f.embedding FROM faces f JOIN images i ON i.id = f.image_id ORDER BY i.sha256"
    a = one.catalogue.conn.execute(query).fetchall()
    b = two.catalogue.conn.execute(query).fetchall()
    assert [r[0] for r in a] == [r[0] for r in b] and len(a) >= 3
    for (_, ea), (_, eb) in zip(a, b):
        assert np.allclose(np.frombuffer(ea, np.float32), np.frombuffer(eb, np.float32), atol=1e-5)


def test_sigkill_mid_ingest_then_rerun_loses_and_duplicates_nothing(tmp_path):
    mugshots = require_data("frmdb-dev", "mugshots")
    subjects = [f"{n:03d}" for n in range(45, 53)]
    manifest = tmp_path / "custody.csv"
    manifest.write_text("path,subject_id\n" + "".join(
        f"{mugshots / s / v},{s}\n" for s in subjects for v in ("Img_33.jpg", "Img_23.jpg", "Img_43.jpg")))
    data, indexes = tmp_path / "data", tmp_path / "indexes"
    cmd = [sys.executable, "-m", "facematch", "--data-dir", str(data), "--index-dir", str(indexes),
           "ingest", "custody", str(manifest), "--workers", "1", "--batch-size", "2"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fm = make_facematch(tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some, but not all, batches are committed
        time.sleep(0.2)
        n = fm.catalogue.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        if n >= 4:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored_before = fm.catalogue.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    assert 0 < stored_before < 24, "the kill should land mid-ingest"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    images = fm.catalogue.conn.execute("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM images").fetchone()
    assert tuple(images) == (24, 24)
    faces = fm.catalogue.conn.execute("SELECT COUNT(*), COUNT(DISTINCT image_id) FROM faces").fetchone()
    assert faces[0] == faces[1]
    assert fm.index_status()["custody"] == f"ok ({faces[0]} faces)"
    assert f"already stored (skipped): {stored_before}" in rerun.stdout


def test_a_batch_without_any_face_is_stored_with_its_reason(tmp_path):
    import cv2

    folder = tmp_path / "custody" / "S1"
    folder.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(folder / f"wall{i}.png"), np.full((120, 160, 3), 40 * i, np.uint8))
    fm = make_facematch(tmp_path)
    summary = fm.ingest_custody(tmp_path / "custody", batch_size=2)
    assert summary.outcomes == {"no_face": 3} and summary.faces_stored == 0
    reasons = {r[0] for r in fm.catalogue.conn.execute("SELECT reason FROM images")}
    assert reasons == {"no face detected"}


def test_a_gallery_never_mixes_alignments(tmp_path):
    """Faces embedded with 5-point alignment are not searched or extended with 68-point settings."""
    import dataclasses

    from facematch.errors import IncompatibleEmbeddings
    from facematch.faces.models import embedding_model

    folder = _small_custody_folder(tmp_path, subjects=("040",), views=("Img_33.jpg",))
    fm = make_facematch(tmp_path)
    assert fm.settings.detection.landmarks == "5"
    fm.ingest_custody(folder)
    assert fm.catalogue.embedding_model("custody") == embedding_model("5")
    stored = fm.catalogue.conn.execute("SELECT DISTINCT model_version FROM faces").fetchall()
    assert [r[0] for r in stored] == [embedding_model("5").split(" ", 1)[1]]
    other = fm.settings.replace(detection=dataclasses.replace(fm.settings.detection, landmarks="68"))
    with make_facematch(tmp_path, detection=other.detection) as fm68:
        before = fm68.catalogue.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        more = _small_custody_folder(tmp_path / "more", subjects=("041",))
        with pytest.raises(IncompatibleEmbeddings, match="align-5pt.*align-68pt"):
            fm68.ingest_custody(more)
        assert fm68.catalogue.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == before
        with pytest.raises(IncompatibleEmbeddings):
            fm68.search([folder / "040" / "Img_33.jpg"], reason="test")
        # once every face of a kind is deleted (retention), the kind may be rebuilt with new settings
        fm68.delete_subject("040", user="t", reason="retention ended")
        assert fm68.ingest_custody(more).faces_stored >= 1
        assert fm68.catalogue.embedding_model("custody") == embedding_model("68")
