"""Evaluation report: result sections, report.json / report.md and PNG plots for two systems."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facematch.errors import InvalidArgument
from facematch.evaluation import report as R
from facematch.evaluation.metrics import SearchOutcome, search_scores

MATED = [0.30, 0.40, 0.50, 0.70]
NONMATED = [0.45, 0.60, 0.65, 0.80, 0.90, 1.00]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _outcomes():
    return [
        SearchOutcome("040/Img_01.jpg", "A", [("A", 0.30), ("B", 0.50)]),
        SearchOutcome("040/Img_02.jpg", "A", [("B", 0.40), ("A", 0.55)]),
        SearchOutcome("041/Img_01.jpg", "B", [], acquired=False),
        SearchOutcome("041/Img_02.jpg", "B", [("B", 0.42), ("A", 0.70)]),
        SearchOutcome("061/Img_01.jpg", None, [("A", 0.35)], cluster="061"),
        SearchOutcome("061/Img_02.jpg", None, [("B", 0.65)], cluster="061"),
        SearchOutcome("062/Img_01.jpg", None, [], acquired=False, cluster="062"),
    ]


def _camera(probe_id: str) -> str:
    return probe_id[-5]  # "040/Img_01.jpg" -> "1"


def test_verification_summary_values():
    d, same = MATED + NONMATED, [True] * 4 + [False] * 6
    sec = R.verification_summary(d, same, fars=(0.1, 0.5), n_boot=0)
    assert (sec["n_mated"], sec["n_nonmated"]) == (4, 6)
    assert sec["eer"]["value"] == pytest.approx(5 / 24) and sec["eer"]["ci"] is None
    low, half = sec["tar_at_far"]
    assert math.isnan(low["tar"]) and low["ci"] is None  # 0.1 < 1/6: not measurable
    assert (half["far"], half["tar"], half["fmr"]) == (0.5, 1.0, 0.5)
    folds = [0, 1] * 5
    assert R.verification_summary(d, same, folds=folds, n_boot=0)["lfw_accuracy"]["accuracies"].shape == (2,)


def test_identification_summary_values():
    groups = {"camera": {o.probe_id: _camera(o.probe_id) for o in _outcomes()}}
    sec = R.identification_summary(_outcomes(), ranks=(1, 2), fpir_targets=(0.1, 0.34),
                                   thresholds={"strong": 0.45}, groups=groups, n_boot=200)
    # 4 mated: rank 1 -> 040/1 and 041/2; rank 2 adds 040/2; 041/1 failed to acquire (a miss).
    assert [(c["rank"], c["hit_rate"]) for c in sec["cmc"]] == [(1, 0.5), (2, 0.75)]
    assert sec["cmc_curve"] == {"ranks": [1, 2], "hit_rate": [0.5, 0.75]}
    assert sec["failures"]["fta"] == pytest.approx(2 / 7)
    low, ci = sec["cmc"][0]["ci"]
    assert low <= 0.5 <= ci
    nan_point, point = sec["fnir_at_fpir"]
    assert math.isnan(nan_point["fnir"]) and nan_point["ci"] is None
    # Non-mated tops .35, .65, (none): 0.34 allows one -> T just below .65; rank-1 hits .30, .42 -> FNIR 1/2
    assert point["fnir"] == 0.5 and point["fpir"] == pytest.approx(1 / 3)
    strong = sec["at_thresholds"][0]
    assert (strong["label"], strong["fnir"], strong["fpir"]) == ("strong", 0.5, pytest.approx(1 / 3))
    cam = sec["by_group"]["camera"]
    assert cam["values"] == {"1": 0.5, "2": 0.5} and cam["n_mated"] == {"1": 2, "2": 2}
    assert cam["differential"]["difference"] == 0.0


def _result():
    d = np.array(MATED + NONMATED)
    same = np.array([True] * 4 + [False] * 6)
    groups = {"camera": {o.probe_id: _camera(o.probe_id) for o in _outcomes()}}
    ident = R.identification_summary(_outcomes(), ranks=(1, 2), groups=groups, n_boot=50)
    systems = {
        "facematch": {"description": "ours",
                      "verification": R.verification_summary(d, same, n_boot=50), "identification": ident},
        "baseline": {"description": "face_recognition defaults",
                     "verification": R.verification_summary(d + 0.05 * ~same, same, n_boot=50),
                     "identification": ident},
    }
    result = {"title": "test report", "protocol": {"name": "tiny", "n_probes": 7},
              "methods": ["Hand-made distances."], "bands": {"strong": 0.45, "weak": 0.6}, "systems": systems}
    plots = {"scores": {"facematch": {"mated": d[same], "nonmated": d[~same]},
                        "baseline": {"mated": d[same] + 0.05, "nonmated": d[~same]}},
             "search_scores": {"facematch": search_scores(_outcomes())}}
    return result, plots


def test_write_report_files_and_json_round_trip(tmp_path):
    result, plots = _result()
    written = R.write_report(result, tmp_path / "out", plots)
    doc = json.loads(written["json"].read_text())
    assert doc == R.jsonable(result)
    assert list(doc) == sorted(doc)
    # NaN (TAR at FAR 0.1% with 6 non-mated) is written as null, never as NaN.
    assert doc["systems"]["facematch"]["verification"]["tar_at_far"][0]["tar"] is None
    assert "NaN" not in written["json"].read_text()
    names = sorted(p.name for p in written["plots"])
    assert names == ["cmc.png", "det.png", "scores_baseline.png", "scores_facematch.png",
                     "search_scores_facematch.png"]
    for png in written["plots"]:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_markdown_shows_systems_side_by_side_with_caveats(tmp_path):
    result, plots = _result()
    md = R.write_report(result, tmp_path, plots)["markdown"].read_text()
    assert md.index("## Methods") < md.index("## Caveats") < md.index("## Verification")
    assert "| metric | facematch | baseline |" in md
    assert "**Small data set.** As few as 4 mated and 3 non-mated trials" in md
    assert "| EER (95% CI) | 20.8% (" in md  # 5/24
    assert "n/a (needs ≥ 100 non-mated searches)" in md
    assert "| mated / non-mated searches | 4 / 3 | 4 / 3 |" in md
    assert "### Rank-1 hit rate by camera" in md and "| 1 | 50.0% (n=2) | 50.0% (n=2) |" in md
    for png in ("det.png", "cmc.png", "scores_facematch.png"):
        assert f"]({png})" in md


def test_verification_only_report_has_no_identification(tmp_path):
    result, plots = _result()
    for sysd in result["systems"].values():
        del sysd["identification"]
    written = R.write_report(result, tmp_path, {"scores": plots["scores"]})
    md = written["markdown"].read_text()
    assert "## Verification" in md and "## Identification" not in md
    assert not (tmp_path / "cmc.png").exists() and (tmp_path / "det.png").stat().st_size > 0


def test_report_needs_systems(tmp_path):
    with pytest.raises(InvalidArgument, match="'systems'"):
        R.write_report({"title": "x"}, tmp_path)


def test_importing_report_does_not_load_matplotlib():
    code = "import sys, facematch.evaluation.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
