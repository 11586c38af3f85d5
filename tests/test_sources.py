"""Ingestion sources: folders and CSV manifests, with clear errors for bad manifests."""

import pytest

from facematch.errors import InvalidArgument, ManifestError, SourceNotFound
from facematch.ingest.sources import custody_items, scene_items


def test_custody_folder_uses_subject_folders_and_skips_loose_and_hidden_files(tmp_path):
    for rel in ["S1/a.jpg", "S1/b.png", "S2 unicodé/c.JPG", "loose.jpg", "S1/.hidden.jpg", "S1/notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    items = custody_items(tmp_path)
    assert [(i.path.name, i.subject_ref) for i in items] == [
        ("a.jpg", "S1"), ("b.png", "S1"), ("c.JPG", "S2 unicodé")]


def test_custody_manifest_resolves_relative_paths_and_optional_columns(tmp_path):
    (tmp_path / "m.csv").write_text("path,subject_id,custody_ref,captured_at\nimg/a.jpg,S1,CR-9,2024-01-02\n")
    (item,) = custody_items(tmp_path / "m.csv")
    assert item.path == tmp_path / "img" / "a.jpg"
    assert (item.subject_ref, item.custody_ref, item.captured_at) == ("S1", "CR-9", "2024-01-02")


def test_manifest_missing_column_is_a_clear_error(tmp_path):
    (tmp_path / "m.csv").write_text("file,subject\na.jpg,S1\n")
    with pytest.raises(ManifestError, match=r"missing column\(s\) path, subject_id \(found: file, subject\)"):
        custody_items(tmp_path / "m.csv")


def test_manifest_empty_cell_names_the_line(tmp_path):
    (tmp_path / "m.csv").write_text("path,subject_id\na.jpg,S1\nb.jpg,\n")
    with pytest.raises(ManifestError, match="line 3 has an empty subject_id"):
        custody_items(tmp_path / "m.csv")


def test_scene_folder_needs_a_case_and_manifest_rows_carry_their_own(tmp_path):
    (tmp_path / "cam1").mkdir()
    (tmp_path / "cam1" / "f.jpg").write_bytes(b"x")
    with pytest.raises(InvalidArgument, match="case reference is required"):
        scene_items(tmp_path)
    assert scene_items(tmp_path, "OP-1")[0].case_ref == "OP-1"
    (tmp_path / "m.csv").write_text("path,case_ref\ncam1/f.jpg,OP-2\n")
    assert scene_items(tmp_path / "m.csv")[0].case_ref == "OP-2"


def test_missing_source_and_non_utf8_manifest(tmp_path):
    with pytest.raises(SourceNotFound, match="does not exist"):
        custody_items(tmp_path / "nowhere")
    (tmp_path / "bad.csv").write_bytes(b"path,subject_id\n\xff\xfe,\x80\n")
    with pytest.raises(ManifestError, match="not a UTF-8 CSV"):
        custody_items(tmp_path / "bad.csv")
