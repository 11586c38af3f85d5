"""Person-level search on real faces: several stills (or a clip) of one person, one fused list, stored and
reviewable; per-image boxes from a CSV; stills without a face reported, never fatal unless none is left."""

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_data

from facematch.cli.commands import cli
from facematch.errors import InvalidArgument, NoFaceFound
from facematch.faces.video import sample_frames
from facematch.search.person import fuse_distances, read_boxes_csv
from facematch.search.ranking import SEARCH_SCHEMA_VERSION

SUBJECT = "041"


@pytest.fixture(scope="module")
def wall(tmp_path_factory):
    """A real photograph with no face in it (scikit-image's brick wall)."""
    from skimage import data

    path = tmp_path_factory.mktemp("wall") / "wall.png"
    cv2.imwrite(str(path), cv2.cvtColor(data.brick(), cv2.COLOR_GRAY2BGR))
    return path


@pytest.fixture(scope="module")
def person_search(frmdb_gallery, wall):
    """One person-level search: the five CCTV crops of an enrolled subject plus a still without a face."""
    fm, _, _ = frmdb_gallery
    crops = require_data("frmdb-dev", "cctv_crops", SUBJECT)
    stills = sorted(crops.glob("Img_0*.jpg"))[:5] + [wall]
    return stills, fm.search(stills, one_person=True, top=5, user="dc-person", reason="person test")


def test_true_subject_first_with_per_still_distances(person_search):
    stills, result = person_search
    person = result.person
    assert person.stills == 6 and person.stills_searched == 5 and person.fusion == "min"
    assert person.candidates[0].subject == SUBJECT
    assert [c.rank for c in person.candidates] == list(range(1, len(person.candidates) + 1))
    assert [c.distance for c in person.candidates] == sorted(c.distance for c in person.candidates)
    top = person.candidates[0]
    searched = {p.probe_no: p for p in result.probes if p.outcome == "searched"}
    assert [s.probe_no for s in top.support] == sorted(searched)
    for s in top.support:  # each still's own list agrees with the support it gives
        own = {c.subject: c for c in searched[s.probe_no].subjects}
        if s.rank is not None:
            assert own[SUBJECT].rank == s.rank and abs(own[SUBJECT].distance - s.distance) < 1e-3
        else:
            assert SUBJECT not in own and s.distance >= max(c.distance for c in own.values()) - 1e-3
    assert abs(top.distance - min(s.distance for s in top.support)) < 1e-3  # the "min" rule


def test_still_without_face_is_reported_not_fatal(person_search, wall):
    _, result = person_search
    faceless = [p for p in result.probes if p.path == str(wall)]
    assert len(faceless) == 1 and faceless[0].outcome == "no_face" and faceless[0].subjects == []
    assert all(p.face_no == 0 for p in result.probes if p.outcome == "searched")  # one face per still


def test_person_search_json_review_decide_and_audit(frmdb_gallery, person_search):
    fm, _, _ = frmdb_gallery
    _, result = person_search
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["schema_version"] == SEARCH_SCHEMA_VERSION == 3
    assert doc["person"]["fusion"] == "min" and doc["person"]["stills"] == 6
    first = doc["person"]["candidates"][0]
    assert first["subject"] == SUBJECT and {"probe_no", "path", "distance", "rank"} <= set(first["support"][0])
    stored, _ = fm.review(result.search_id, reason="test")
    assert json.loads(json.dumps(stored.to_dict())) == doc
    audit = fm.catalogue.audit_entries(action="search")
    entry = next(e for e in audit if e["details"]["search_id"] == result.search_id)
    assert entry["details"]["person_level"] is True and entry["details"]["stills"] == 6
    decision = fm.decide(result.search_id, 1, decision="inconclusive", reviewer="PC1", note="same jacket")
    assert decision.probe_no == 0 and decision.candidate == SUBJECT
    entry = fm.catalogue.audit_entries(action="decision")[0]
    assert entry["details"]["person_level"] is True and entry["details"]["stills"] == 6
    per_still = fm.decide(result.search_id, 1, decision="rejected", reviewer="PC1", probe=1)
    assert per_still.probe_no == 1 and "person_level" not in fm.catalogue.audit_entries(action="decision")[0]["details"]
    _, decisions = fm.review(result.search_id, reason="test")
    assert [d.probe_no for d in decisions] == [0, 1]


def test_cli_review_shows_fused_list_and_decides_on_it(frmdb_gallery, person_search):
    _, _, root = frmdb_gallery
    _, result = person_search
    base = ["--data-dir", str(root / "data"), "--index-dir", str(root / "indexes")]
    r = CliRunner().invoke(cli, base + ["review", str(result.search_id), "--reason", "test"], catch_exceptions=False)
    assert r.exit_code == 0
    assert "Person-level search: 6 stills of one person, 5 searched; fusion min" in r.output
    assert f"1. {SUBJECT}" in r.output and "per still: probe 1 " in r.output
    r = CliRunner().invoke(cli, base + ["decide", str(result.search_id), "2", "--decision", "rejected",
                                        "--reviewer", "PC2"], catch_exceptions=False)
    assert r.exit_code == 0 and f"search {result.search_id} probe 0 custody rank 2" in r.output


def test_all_stills_faceless_is_an_error(frmdb_gallery, wall, tmp_path):
    fm, _, root = frmdb_gallery
    with pytest.raises(NoFaceFound, match="none of the 1 stills"):
        fm.search([wall], one_person=True, reason="test")
    base = ["--data-dir", str(root / "data"), "--index-dir", str(root / "indexes")]
    r = CliRunner().invoke(cli, base + ["search", str(wall), "--one-person", "--reason", "test"], catch_exceptions=False)
    assert r.exit_code == 1
    assert r.output == ("error: none of the 1 stills of the person holds a searchable face: mark the face with "
                        "a box (--box or --boxes) or give other stills\n")


def test_video_clip_is_searched_as_one_person(frmdb_gallery, tmp_path):
    fm, _, _ = frmdb_gallery
    crops = sorted(require_data("frmdb-dev", "cctv_crops", SUBJECT).glob("Img_0*.jpg"))[:4]
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (240, 240))
    for still in crops:
        frame = cv2.resize(cv2.imread(str(still)), (240, 240))
        for _ in range(5):  # five frames per still: one of each is sampled (every 5th frame)
            writer.write(frame)
    writer.release()
    frames = sample_frames(clip, frame_step=5, max_frames=12, max_pixels=10**8)
    assert [f.index for f in frames] == [0, 5, 10, 15] and frames[0].pixels.shape == (240, 240, 3)
    result = fm.search([clip], top=5, reason="test")  # a clip is always one person
    assert result.person is not None and result.person.stills == result.person.stills_searched >= 3
    assert all(p.path.startswith(f"{clip}#frame=") for p in result.probes)
    assert SUBJECT in [c.subject for c in result.person.candidates[:3]]


def test_unreadable_video_is_reported(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(Exception, match="video"):
        sample_frames(bad, frame_step=1, max_frames=3, max_pixels=10**8)


def test_boxes_csv_is_matched_to_images_and_bad_files_are_refused(tmp_path):
    images = [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"]
    for p in images:
        p.write_bytes(b"x")
    good = tmp_path / "boxes.csv"
    good.write_text('path,box\nc.jpg,"10,20,30,40"\n' + f'{images[0]},"0,0,5,6"\n')
    assert read_boxes_csv(good, images) == [(0, 0, 5, 6), None, (10, 20, 30, 40)]
    cases = {
        "path,region\na.jpg,\"1,2,3,4\"\n": "needs a header 'path,box'",
        "path,box\n": "needs a header 'path,box'",
        "path,box\na.jpg,\"1,2,3\"\n": r"boxes.csv:2: expected x,y,w,h",
        "path,box\na.jpg,\"1,2,0,4\"\n": r"boxes.csv:2: expected x,y,w,h",
        "path,box\nz.jpg,\"1,2,3,4\"\n": r"boxes.csv:2: 'z.jpg' is not one of the probe images",
        "path,box\na.jpg,\"1,2,3,4\"\na.jpg,\"1,2,3,4\"\n": r"boxes.csv:3: 'a.jpg' is listed twice",
    }
    for text, message in cases.items():
        good.write_text(text)
        with pytest.raises(InvalidArgument, match=message):
            read_boxes_csv(good, images)


def test_cli_boxes_errors_are_one_line(tmp_path):
    still = tmp_path / "a.jpg"
    still.write_bytes(b"x")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,box\na.jpg,oops\n")
    base = ["--data-dir", str(tmp_path / "data"), "--index-dir", str(tmp_path / "indexes")]
    r = CliRunner().invoke(cli, base + ["search", str(still), "--one-person", "--reason", "test", "--boxes", str(boxes)])
    assert r.exit_code == 1 and r.output.startswith(f"error: {boxes}:2: expected x,y,w,h") and r.output.count("\n") == 1
    r = CliRunner().invoke(cli, base + ["search", str(still), "--reason", "test", "--box", "1,2,3,4", "--boxes", str(boxes)])
    assert r.exit_code == 1 and r.output == "error: give either box (one for every image) or boxes (one per image), not both\n"


def test_fusion_rules_by_hand():
    d = np.array([[0.3, 0.5, np.inf], [0.7, 0.4, 0.6], [0.9, 0.45, 0.5]])
    assert fuse_distances(d, rule="min").tolist() == [0.3, 0.4, 0.5]
    assert np.allclose(fuse_distances(d, rule="mean-k", k=2), [0.5, 0.425, 0.55])
    assert np.allclose(fuse_distances(d, rule="mean-k", k=5), [np.mean([0.3, 0.7, 0.9]), 0.45, np.inf])
    q = [100, 50, 0]  # weights 100, 50, 1
    assert np.allclose(fuse_distances(d, q, rule="quality-mean")[:2],
                       [(30 + 35 + 0.9) / 151, (50 + 20 + 0.45) / 151])
    assert np.isclose(fuse_distances(d, q, rule="quality-mean")[2], (30 + 0.5) / 51)
    assert np.allclose(fuse_distances(d, q, rule="quality-min", penalty=0.2), [0.3, 0.5, 0.7])
    with pytest.raises(InvalidArgument):
        fuse_distances(d, rule="median")


def test_api_boxes_one_per_image(fm, tmp_path):
    stills = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for p in stills:
        p.write_bytes(b"x")
    with pytest.raises(InvalidArgument, match="boxes: 1 given for 2 images"):
        fm.search(stills, boxes=[(1, 2, 3, 4)], one_person=True, reason="test")
    with pytest.raises(InvalidArgument, match="not both"):
        fm.search(stills, box=(1, 2, 3, 4), boxes=[None, None], reason="test")
