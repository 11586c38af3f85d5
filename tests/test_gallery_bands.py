"""Bands that mean the same at every gallery size: thresholds derived from the FMR curve at the live N."""

import dataclasses
import json
import math
import shutil

import pytest
from click.testing import CliRunner
from conftest import REPO, require_data

from facematch import Facematch
from facematch.cli.commands import cli
from facematch.search.bands import BandScheme, curve_reach, curve_threshold, reach_summary, supported_faces
from facematch.search.calibration import load_band_scheme, read_calibration
from facematch.search.ranking import SEARCH_SCHEMA_VERSION
from facematch.settings import BandThresholds, Settings

#: A synthetic non-mated FMR curve whose thresholds are known by hand, from a billion comparisons.
CURVE = ((0.2, 1e-9), (0.3, 1e-8), (0.4, 1e-6), (0.5, 1e-4), (0.55, 1e-3), (0.6, 1e-2), (0.8, 0.5))
COMMITTED = REPO / "docs" / "calibration-dev.json"


def _scheme(n_nonmated=10**9) -> BandScheme:
    return BandScheme(BandThresholds(), True, "synthetic", fmr_curve=CURVE, n_nonmated=n_nonmated)


def test_curve_threshold_is_the_last_point_within_the_rate():
    assert curve_threshold(CURVE, 1e-4) == 0.5 and curve_threshold(CURVE, 9.9e-5) == 0.4
    assert curve_threshold(CURVE, 1e-10) is None


def test_thousand_subjects_get_thresholds_by_hand():
    bands = _scheme().for_gallery(1000, 1000)
    strong, possible, weak = bands.bands
    # per-face FMR = expected false candidates / 1,000: 1e-5, 1e-4, 1e-3
    assert (strong.threshold, possible.threshold, weak.threshold) == (0.4, 0.5, 0.55)
    assert (strong.face_fmr, possible.subject_fmr) == pytest.approx((1e-5, 1e-4))
    assert possible.expected_false == pytest.approx(0.1) and weak.expected_false == pytest.approx(1.0)
    assert possible.predicted_fpir == pytest.approx(1 - math.exp(-0.1))
    assert [bands.band(d) for d in (0.35, 0.45, 0.52, 0.58)] == ["strong", "possible", "weak", "below"]
    assert possible.meaning == ("possible: at most 0.1 false candidates expected per search of someone not "
                                "enrolled, among 1,000 subjects; distance <= 0.500")


def test_twenty_million_subjects_get_tighter_bands_and_an_unsupported_one():
    bands = _scheme().for_gallery(20_000_000, 20_000_000)
    strong, possible, weak = bands.bands
    # per-face FMR 5e-10 (strong) is below 3 / 1e9: needs 6e9 comparisons
    assert (strong.supported, strong.threshold, strong.needs_nonmated) == (False, None, 6_000_000_000)
    assert "strong: not supported at this gallery size" in strong.meaning
    assert "needs >= 6,000,000,000 non-mated comparisons, the calibration has 1,000,000,000" in strong.meaning
    assert (possible.threshold, weak.threshold) == (0.2, 0.3)  # per-face FMR 5e-9 and 5e-8
    assert bands.band(0.15) == "possible" and bands.band(0.25) == "weak" and bands.band(0.35) == "below"
    assert bands.limit == 0.3 and bands.describe()["thresholds"] == {"strong": None, "possible": 0.2, "weak": 0.3}


def test_several_images_per_subject_tighten_by_the_union_bound():
    """Search fuses a subject's images by the closest: k images can each be a false match."""
    one, three = _scheme().for_gallery(1000, 1000).bands[1], _scheme().for_gallery(1000, 3000).bands[1]
    assert three.subject_fmr == one.subject_fmr == pytest.approx(1e-4)
    assert three.face_fmr == pytest.approx(1e-4 / 3) and three.threshold == 0.4 < one.threshold


def test_rule_of_three_limit_and_uncalibrated_meaning():
    assert supported_faces(141_815, 0.1) == 4_727
    small = _scheme(n_nonmated=30_000).for_gallery(1000, 1000)
    assert [b.supported for b in small.bands] == [False, True, True]  # 1e-5 < 3 / 30,000 = 1e-4 <= 1e-4
    assert small.band(0.35) == "possible"  # an unsupported band holds nothing: the next band that is takes it
    plain = BandScheme.uncalibrated().for_gallery(50, 60)
    assert [b.threshold for b in plain.bands] == [0.40, 0.50, 0.60] and plain.expected_false_candidates is None
    assert all("uncalibrated default" in b.meaning for b in plain.bands)


def test_committed_dev_calibration_reads_and_resolves():
    settings = Settings(calibration_file=COMMITTED)
    doc = read_calibration(COMMITTED, settings)
    scheme = load_band_scheme(settings)
    assert scheme.calibrated and scheme.n_nonmated == doc["rule_of_three"]["n_nonmated_smallest_set"] == 141_815
    at_1000 = scheme.for_gallery(1000, 1000)
    strong, possible, weak = at_1000.bands
    assert not strong.supported and strong.needs_nonmated == 300_000
    assert 0.4 < possible.threshold < weak.threshold < doc["thresholds"]["weak"]
    assert possible.expected_false <= 0.1 and weak.expected_false <= 1.0
    assert not any(b.supported for b in scheme.for_gallery(20_000_000, 20_000_000).bands)
    # the miss side: each data set's mated curve reproduces the TAR the file records at its fixed thresholds
    curves = {c.source: c for c in scheme.mated_curves}
    assert {name: c.n_mated for name, c in curves.items()} == {s["name"]: s["n_mated"] for s in doc["sources"]}
    for band in doc["bands"]:
        for name, c in curves.items():
            tar = band["per_source"][name]["tar_at_threshold"]
            assert tar - 1 / 200 <= curve_reach(c.curve, band["threshold"]) <= tar  # <= 200 points: conservative
    reach = {r.source: r for r in possible.mated_reach}
    assert reach["frmdb-dev-cctv"].fraction < 0.5 < reach["lfw-pair-images"].fraction  # CCTV misses far more
    # ...and by the probe's quality: the CCTV searches split into the quality bins, reached more as quality rises
    bins = reach["frmdb-dev-cctv"].by_quality
    assert [(b.min_quality, b.max_quality) for b in bins] == [(0, 20), (20, 40), (40, 60), (60, None)]
    assert sum(b.n_mated for b in bins) == 104 and reach["lfw-pair-images"].by_quality == ()  # pairs: no probes
    shares = [b.fraction for b in bins]
    assert shares == sorted(shares) and shares[0] < 0.15 < 0.7 < shares[-1]
    assert reach["frmdb-dev-cctv"].for_quality(19.9) is bins[0] and reach["frmdb-dev-cctv"].for_quality(60) is bins[3]


def _search_cli(fm, args):
    base = ["--data-dir", str(fm.settings.data_dir), "--index-dir", str(fm.settings.index_dir)]
    return CliRunner().invoke(cli, base + args, env={"FACEMATCH_CALIBRATION": str(COMMITTED)},
                              catch_exceptions=False)


def test_real_search_says_what_each_band_means_among_n_subjects(frmdb_gallery):
    fm, _, _ = frmdb_gallery
    probe = require_data("frmdb-dev", "mugshots") / "040" / "Img_32.jpg"
    subjects, faces = fm.catalogue.gallery_size()
    with Facematch(settings=fm.settings.replace(calibration_file=COMMITTED)) as calibrated:
        result = calibrated.search([probe], user="tester", reason="bands test")
        expected = calibrated.band_scheme().for_gallery(subjects, faces)
    assert result.bands["gallery_subjects"] == subjects == 12 and result.bands["gallery_faces"] == faces
    assert [b["meaning"] for b in result.bands["bands"]] == [b.meaning for b in expected.bands]
    assert all(b.supported for b in expected.bands)  # 141,815 comparisons support 0.01 up to 472 faces
    top = result.probes[0].subjects[0]
    assert top.subject == "040" and top.band == expected.band(top.distance) != "below"

    text = _search_cli(fm, ["search", str(probe), "--reason", "bands test"])
    assert text.exit_code == 0, text.output
    assert "possible: at most 0.1 false candidates expected per search of someone not enrolled, among 12 " \
           f"subjects; distance <= {expected.bands[1].threshold:.3f}" in text.output
    shares = ", ".join(f"{b.band} {100 * {r.source: r.fraction for r in b.mated_reach}['frmdb-dev-cctv']:.0f}%"
                       for b in expected.bands)
    assert "If the person is enrolled: how often the calibration's comparisons of the same person" in text.output
    assert f"  frmdb-dev-cctv (104 mated comparisons): {shares}" in text.output
    quality = result.probes[0].quality_score
    (line,) = reach_summary(result.bands["bands"], quality)
    assert line.startswith("frmdb-dev-cctv, probe quality ")
    assert f"  If enrolled, the calibration's searches with probes of this quality reached: {line}" in text.output
    raw = _search_cli(fm, ["search", str(probe), "--reason", "bands test", "--json"])
    doc = json.loads(raw.output)
    assert doc["schema_version"] == SEARCH_SCHEMA_VERSION == 3
    bands = doc["bands"]
    assert bands["calibrated"] and bands["max_false_candidates"] == {"strong": 0.01, "possible": 0.1, "weak": 1.0}
    assert [b["band"] for b in bands["bands"]] == ["strong", "possible", "weak"]
    for entry, band in zip(bands["bands"], expected.bands):
        assert entry["threshold"] == band.threshold == bands["thresholds"][band.band]
        assert entry["supported"] is True and entry["needs_nonmated"] == band.needs_nonmated
        assert 0 < entry["predicted_fpir"] <= entry["expected_false"] <= entry["max_false"]
        assert entry["mated_reach"] == json.loads(json.dumps([dataclasses.asdict(r) for r in band.mated_reach]))
        assert [r["source"] for r in entry["mated_reach"]] == ["frmdb-dev-cctv", "lfw-pair-images"]
    assert doc["expected_false_candidates"] == pytest.approx(expected.bands[2].expected_false)
    assert doc["scene_bands"]["gallery_subjects"] == 0 and doc["probes"][0]["scene_faces"] == []


def test_calibrate_cli_on_a_small_labelled_folder(tmp_path):
    orl = require_data("small", "orl")
    folder = tmp_path / "orl"
    for subject in [f"s{i}" for i in range(1, 9)]:
        shutil.copytree(orl / subject, folder / subject)
    out = tmp_path / "cal.json"
    result = CliRunner().invoke(cli, ["calibrate", str(folder), "-o", str(out), "--gallery-per-subject", "2",
                                      "--workers", "1", "--no-cache"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = read_calibration(out, Settings())
    n = doc["rule_of_three"]["n_nonmated_smallest_set"]
    assert f"  possible <= 0.1 false candidates: {supported_faces(n, 0.1):,} enrolled faces" in result.output
    bands = load_band_scheme(Settings(calibration_file=out)).for_gallery(5, 5)
    weak = bands.bands[2]
    assert weak.supported == (n >= 15) and weak.needs_nonmated == 15
