"""Search on real faces: mated subjects found, fused by subject, scene faces linked, stored and audited."""

import json
import shutil

import cv2
import pytest
from conftest import FRMDB_GALLERY_SUBJECTS, make_facematch, require_data

from facematch.errors import InvalidArgument, InvalidBox, SourceNotFound
from facematch.search.ranking import NOTICE, SEARCH_SCHEMA_VERSION
from facematch.settings import EmbeddingSettings


def test_gallery_enrolled_every_subject(frmdb_gallery):
    fm, summary, _ = frmdb_gallery
    enrolled = {r[0] for r in fm.catalogue.conn.execute(
        "SELECT DISTINCT s.reference FROM faces f JOIN subjects s ON s.id = f.subject_id")}
    assert enrolled == set(FRMDB_GALLERY_SUBJECTS)
    assert summary.outcomes.get("enrolled", 0) >= 30  # of 36 eye-level views


def test_unseen_mugshot_view_finds_its_subject_first(frmdb_gallery):
    fm, _, _ = frmdb_gallery
    mugshots = require_data("frmdb-dev", "mugshots")
    hits = 0
    for subject in FRMDB_GALLERY_SUBJECTS[:6]:
        result = fm.search([mugshots / subject / "Img_32.jpg"], top=5, user="tester", reason="test")
        searched = [p for p in result.probes if p.outcome == "searched"]
        if searched and searched[0].subjects[0].subject == subject:
            hits += 1
            top = searched[0].subjects[0]
            assert top.distance < 0.6 and top.band in ("strong", "possible", "weak")
            ranks = [c.rank for c in searched[0].subjects]
            assert ranks == sorted(ranks) and len({c.subject for c in searched[0].subjects}) == len(ranks)
    assert hits >= 5, f"only {hits}/6 unseen views of enrolled people ranked their subject first"


def test_cctv_crop_of_enrolled_person_is_found_in_top_ten(frmdb_gallery):
    fm, _, _ = frmdb_gallery
    crops = require_data("frmdb-dev", "cctv_crops")
    ranks = []
    for subject in FRMDB_GALLERY_SUBJECTS:
        result = fm.search([crops / subject / "Img_02.jpg"], top=10, reason="test")
        for probe in result.probes:
            ranks += [c.rank for c in probe.subjects if c.subject == subject]
    assert len(ranks) >= 3, f"true subject in the top 10 for only {len(ranks)} of 12 CCTV crops"


def test_search_is_stored_and_audited_and_json_is_versioned(frmdb_gallery):
    fm, _, _ = frmdb_gallery
    mugshots = require_data("frmdb-dev", "mugshots")
    result = fm.search([mugshots / "040" / "Img_33.jpg"], case="OP-TEST", user="dc-smith", reason="unit test")
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["schema"] == "facematch.search" and doc["schema_version"] == SEARCH_SCHEMA_VERSION
    assert doc["notice"] == NOTICE and doc["bands"]["calibrated"] is False
    stored, decisions = fm.review(result.search_id, reason="unit test", user="dc-smith")
    assert json.loads(json.dumps(stored.to_dict()))["probes"] == doc["probes"] and decisions == []
    entry = fm.catalogue.audit_entries(action="search")[0]
    assert entry["actor"] == "dc-smith" and entry["details"]["search_id"] == result.search_id
    assert entry["details"]["case_ref"] == "OP-TEST" and entry["details"]["reason"] == "unit test"


def test_probe_without_face_and_bad_arguments(frmdb_gallery, tmp_path):
    fm, _, _ = frmdb_gallery
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), (128 * __import__("numpy").ones((200, 300, 3))).astype("uint8"))
    result = fm.search([blank], reason="test")
    assert result.probes[0].outcome == "no_face" and "--box" in result.probes[0].reason
    with pytest.raises(SourceNotFound, match="does not exist"):
        fm.search([tmp_path / "nope.jpg"], reason="test")
    with pytest.raises(InvalidArgument, match="top must be at least 1"):
        fm.search([blank], top=0, reason="test")
    with pytest.raises(InvalidBox, match="outside"):
        fm.search([blank], box=(1000, 1000, 50, 50), reason="test")


def test_marked_box_searches_only_that_face(frmdb_gallery, tmp_path):
    fm, _, _ = frmdb_gallery
    mugshots = require_data("frmdb-dev", "mugshots")
    a = cv2.imread(str(mugshots / "041" / "Img_33.jpg"))
    b = cv2.imread(str(mugshots / "042" / "Img_33.jpg"))
    h = min(a.shape[0], b.shape[0])
    side_by_side = cv2.hconcat([a[:h], b[:h]])
    path = tmp_path / "two people.jpg"
    cv2.imwrite(str(path), side_by_side)
    both = fm.search([path], top=3, reason="test")
    assert len([p for p in both.probes if p.outcome == "searched"]) == 2
    x = a.shape[1]
    marked = fm.search([path], top=3, box=(x, 0, b.shape[1], h), reason="test")
    (probe,) = marked.probes
    assert probe.subjects[0].subject == "042" and probe.box[0] >= x - 5


def test_scene_faces_link_one_unknown_person_across_cases(tmp_path):
    crops = require_data("frmdb-dev", "cctv_crops")
    mugshots = require_data("frmdb-dev", "mugshots")
    fm = make_facematch(tmp_path)
    case_a = tmp_path / "case-a"
    case_a.mkdir()
    shutil.copy(mugshots / "060" / "Img_33.jpg", case_a / "phone-photo.jpg")
    shutil.copy(mugshots / "061" / "Img_33.jpg", case_a / "other-person.jpg")
    summary = fm.ingest_scene(case_a, case="CASE-A")
    assert summary.outcomes == {"stored": 2}
    result = fm.search([mugshots / "060" / "Img_34.jpg"], case="CASE-B", top=5, reason="test")
    probe = result.probes[0]
    assert probe.subjects == []  # no custody gallery yet
    assert [c.case_ref for c in probe.scene_faces][:1] == ["CASE-A"]
    assert probe.scene_faces[0].image_path.endswith("phone-photo.jpg")
    # the probe image itself, once stored as a scene image, is not returned as its own match
    again = fm.search([case_a / "phone-photo.jpg"], top=5, reason="test")
    assert all(not c.image_path.endswith("phone-photo.jpg") for c in again.probes[0].scene_faces)
    assert crops.exists()


def test_index_rebuild_gives_identical_results_and_a_deletion_behind_its_back_is_repaired(frmdb_gallery, tmp_path):
    _, _, root = frmdb_gallery
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    fm = make_facematch(copy)
    mugshots = require_data("frmdb-dev", "mugshots")
    probe = mugshots / "045" / "Img_32.jpg"
    before = fm.search([probe], top=8, reason="test").probes[0].subjects
    ids_before = fm.index_store.load("custody").ids().tolist()
    counts = fm.rebuild_index()
    assert counts["custody"] == len(ids_before)
    assert fm.index_store.load("custody").ids().tolist() == ids_before
    after = fm.search([probe], top=8, reason="test").probes[0].subjects
    assert [(c.subject, c.distance) for c in after] == [(c.subject, c.distance) for c in before]
    # a deletion made behind the index's back: status names the faces, the next open removes them
    deleted = fm.catalogue.delete_subject("045", actor="test", reason="test")
    assert "holds 3 face(s) the catalogue no longer has" in fm.index_status()["custody"]
    assert fm.index_store.load("custody").ids().tolist() == [i for i in ids_before if i not in deleted]
    assert fm.index_status()["custody"] == f"ok ({len(ids_before) - 3} faces)"
    assert all(c.subject != "045" for c in fm.search([probe], top=8, reason="test").probes[0].subjects)


def test_profile_views_are_enrolled_and_their_distances_carry_the_view_offset(tmp_path):
    """A custody profile only the CNN finds is enrolled; search adds the non-frontal offset to it."""
    mugshots = require_data("frmdb-dev", "mugshots")
    folder = tmp_path / "custody"
    for subject, view in (("040", "Img_13.jpg"), ("041", "Img_33.jpg"), ("042", "Img_33.jpg")):
        (folder / subject).mkdir(parents=True)
        shutil.copy(mugshots / subject / view, folder / subject / view)
    # plain probe descriptors (no jitter, no mirror), so the enrolled image searched as a probe lies ~0 away
    fm = make_facematch(tmp_path, embedding=EmbeddingSettings(probe_jitters=1, probe_flip=False))
    offset = fm.settings.nonfrontal_offset
    assert offset == pytest.approx(0.12)
    fm.ingest_custody(folder)
    detectors = dict(fm.catalogue.conn.execute(
        "SELECT s.reference, f.detector FROM faces f JOIN subjects s ON s.id = f.subject_id"))
    assert detectors == {"040": "cnn", "041": "hog", "042": "hog"}
    profile_probe = mugshots / "040" / "Img_13.jpg"  # the enrolled image itself
    found = fm.search([profile_probe], reason="test").probes[0].subjects
    assert found[0].subject == "040" and found[0].distance >= offset
    frontal_probe = mugshots / "041" / "Img_33.jpg"
    assert fm.search([frontal_probe], reason="test").probes[0].subjects[0].distance < 0.04  # no offset (probe boxes differ)
    for probe in (profile_probe, mugshots / "041" / "Img_43.jpg"):
        with make_facematch(tmp_path, nonfrontal_offset=0.0, embedding=fm.settings.embedding) as plain:
            raw = {c.subject: c.distance for c in plain.search([probe], reason="test").probes[0].subjects}
        adjusted = {c.subject: c.distance for c in fm.search([probe], reason="test").probes[0].subjects}
        assert adjusted["040"] == pytest.approx(raw["040"] + offset, abs=1e-4)  # the profile view
        assert adjusted["042"] == pytest.approx(raw["042"], abs=1e-4)  # a frontal view: unchanged
