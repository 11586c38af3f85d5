"""Evaluation protocols: the shared FRMDB CCTV protocol, LFW pairs, and seeded folder splits."""

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from facematch.errors import InvalidArgument, ProtocolError
from facematch.evaluation import protocols as P

DATA = Path(os.environ.get("FACEMATCH_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FRMDB_JSON = DATA / "protocols" / "frmdb-dev-cctv.json"
LFW_PAIRS = DATA / "lfw" / "pairs.txt"


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"test data not found at {path} (set FACEMATCH_TEST_DATA to the shared data folder)")


# ------------------------------------------------------------------------------------- protocol JSON

def test_load_frmdb_cctv_protocol():
    _need(FRMDB_JSON)
    proto = P.load_protocol_json(FRMDB_JSON, attributes_fn=P.camera_from_filename)
    assert proto.name == "frmdb-dev-cctv" and proto.root == DATA.resolve()
    assert (len(proto.gallery), len(proto.probes), len(proto.nonmated_probes)) == (1105, 140, 35)
    assert len(proto.gallery_subjects) == 21 + 1000  # FRMDB 040-060 plus one image of 1000 LFW people
    assert all(p.subject in proto.gallery_subjects for p in proto.mated_probes)
    assert {p.id.split("/")[0] for p in proto.nonmated_probes} == {f"{n:03d}" for n in range(61, 68)}
    assert all(p.path.is_file() for p in proto.probes) and proto.gallery[0].path.is_file()
    assert Counter(p.attributes["camera"] for p in proto.probes) == {str(c): 28 for c in range(1, 6)}


def test_missing_files_are_counted_and_named(tmp_path):
    _need(FRMDB_JSON)
    with pytest.raises(ProtocolError, match=r"1245 of 1245 image files do not exist under .*: "
                                            r"frmdb-dev/mugshots/040/Img_13.jpg, .* \.\.\.$"):
        P.load_protocol_json(FRMDB_JSON, data_root=tmp_path)
    assert len(P.load_protocol_json(FRMDB_JSON, data_root=tmp_path, check_files=False).probes) == 140


def _write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_protocol_json_validation(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.jpg").write_bytes(b"x")
    good = {"description": "d", "data_root": ".", "gallery": [{"subject": "A", "path": "a/1.jpg"}],
            "probes": [{"id": "p", "path": "a/1.jpg", "subject": None, "attributes": {"camera": 2}}]}
    proto = P.load_protocol_json(_write(tmp_path / "ok.json", good))
    assert proto.probes[0].attributes == {"camera": "2"} and proto.probes[0].subject is None
    with pytest.raises(ProtocolError, match="gallery entry 0 lacks the key 'subject'"):
        P.load_protocol_json(_write(tmp_path / "x.json", {**good, "gallery": [{"path": "a/1.jpg"}]}))
    with pytest.raises(ProtocolError, match="lacks the key 'probes'"):
        P.load_protocol_json(_write(tmp_path / "x.json", {"gallery": []}))
    with pytest.raises(ProtocolError, match="probe id 'p' appears twice"):
        P.load_protocol_json(_write(tmp_path / "x.json", {**good, "probes": good["probes"] * 2}))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ProtocolError, match="cannot read protocol JSON"):
        P.load_protocol_json(tmp_path / "bad.json")


def test_save_and_reload_real_protocol_elsewhere(tmp_path):
    _need(FRMDB_JSON)
    proto = P.load_protocol_json(FRMDB_JSON, attributes_fn=P.camera_from_filename)
    (tmp_path / "sub").mkdir()
    out = P.save_protocol_json(proto, tmp_path / "sub" / "copy.json")
    again = P.load_protocol_json(out)  # data_root recorded in the file, relative to it
    assert again.gallery == proto.gallery and again.probes == proto.probes
    assert again.description == proto.description and again.name == "frmdb-dev-cctv"


# ---------------------------------------------------------------------------------------- folder split

def _labelled_folder(root: Path, sizes: dict[str, int]) -> Path:
    for person, n in sizes.items():
        (root / person).mkdir(parents=True)
        for i in range(n):
            (root / person / f"img_{i}.jpg").write_bytes(b"x")
    (root / "notes.txt").write_text("ignored")
    (root / next(iter(sizes)) / "readme.txt").write_text("not an image")
    return root


def test_folder_split_rule(tmp_path):
    sizes = {f"person{i:02d}": 1 + i % 5 for i in range(20)}
    folder = _labelled_folder(tmp_path / "faces", sizes)
    proto = P.protocol_from_folder(folder, gallery_per_subject=2, holdout_fraction=0.25, seed=3)
    held = {p.attributes["identity"] for p in proto.nonmated_probes}
    assert len(held) == 5  # round(0.25 * 20)
    assert not held & proto.gallery_subjects  # no leakage of held-out people into the gallery
    assert all(p.subject in proto.gallery_subjects for p in proto.mated_probes)
    for person, n in sizes.items():
        in_gallery = sum(g.subject == person for g in proto.gallery)
        assert in_gallery == (0 if person in held else min(2, n))
    files = [g.path for g in proto.gallery] + [p.path for p in proto.probes]
    assert len(files) == len(set(files)) == sum(sizes.values())  # every image used exactly once
    assert all(p.id == f"{p.path.parent.name}/{p.path.name}" for p in proto.probes)


def test_folder_split_is_deterministic_and_seeded(tmp_path):
    folder = _labelled_folder(tmp_path / "faces", {f"p{i}": 6 for i in range(10)})
    a = P.protocol_from_folder(folder, gallery_per_subject=2, seed=7)
    b = P.protocol_from_folder(folder, gallery_per_subject=2, seed=7)
    c = P.protocol_from_folder(folder, gallery_per_subject=2, seed=8)
    assert (a.gallery, a.probes) == (b.gallery, b.probes)
    assert a.gallery != c.gallery
    # Adding a person leaves the others' gallery choice unchanged (per-identity generator).
    keep = {g.path for g in a.gallery if g.subject != "p9"}
    (folder / "zz_new").mkdir()
    (folder / "zz_new" / "1.jpg").write_bytes(b"x")
    d = P.protocol_from_folder(folder, gallery_per_subject=2, holdout_fraction=0.0, seed=7)
    assert keep <= {g.path for g in d.gallery}


def test_folder_split_on_real_orl_and_round_trip(tmp_path):
    orl = DATA / "small" / "orl"
    _need(orl)
    proto = P.protocol_from_folder(orl, gallery_per_subject=3, holdout_fraction=0.2, seed=0)
    assert (len(proto.gallery), len(proto.probes), len(proto.nonmated_probes)) == (32 * 3, 400 - 96, 80)
    again = P.load_protocol_json(P.save_protocol_json(proto, tmp_path / "orl.json"))
    assert again.gallery == proto.gallery and again.probes == proto.probes


def test_folder_split_errors(tmp_path):
    with pytest.raises(ProtocolError, match="not a folder"):
        P.protocol_from_folder(tmp_path / "absent")
    with pytest.raises(ProtocolError, match="no <identity>/<image>"):
        P.protocol_from_folder(tmp_path)
    with pytest.raises(InvalidArgument, match="holdout_fraction"):
        P.protocol_from_folder(tmp_path, holdout_fraction=1.0)


# ------------------------------------------------------------------------------------------ LFW pairs

def test_load_real_lfw_pairs():
    _need(LFW_PAIRS)
    pairs = P.load_lfw_pairs(LFW_PAIRS)
    assert len(pairs) == 6000 and sum(p.same for p in pairs) == 3000
    assert Counter(p.fold for p in pairs) == {k: 600 for k in range(10)}
    first = pairs[0]  # "Abel_Pacheco 1 4"
    assert first.same and first.fold == 0 and first.subject_a == first.subject_b == "Abel_Pacheco"
    assert first.path_b == (DATA / "lfw" / "Abel_Pacheco" / "Abel_Pacheco_0004.jpg").resolve()
    assert all(p.subject_a != p.subject_b for p in pairs if not p.same)
    assert not pairs[300].same and pairs[600].same and pairs[600].fold == 1


def test_lfw_pairs_format_errors(tmp_path):
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn\t1\t2\nAnn\t1\tBob\n")
    with pytest.raises(ProtocolError, match="line 3: expected a non-mated 'name1 i name2 j' line"):
        P.load_lfw_pairs(tmp_path / "pairs.txt", check_files=False)
    (tmp_path / "pairs.txt").write_text("1\t2\nAnn\t1\t2\n")
    with pytest.raises(ProtocolError, match="expected 4 pair lines .* found 1"):
        P.load_lfw_pairs(tmp_path / "pairs.txt")
    (tmp_path / "pairs.txt").write_text("1\nAnn\t1\t2\nAnn\t1\tBob\t3\n")
    with pytest.raises(ProtocolError, match="3 of 3 image files do not exist"):
        P.load_lfw_pairs(tmp_path / "pairs.txt")
    pairs = P.load_lfw_pairs(tmp_path / "pairs.txt", check_files=False)
    assert pairs[1].path_b.name == "Bob_0003.jpg" and pairs[1].fold == 0
