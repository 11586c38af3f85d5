"""Calibration: thresholds for target FMRs, the rule of three, the file, and search using it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_facematch, require_data

from facematch.cli import render
from facematch.errors import CalibrationError, InvalidArgument
from facematch.evaluation.embed_cache import EmbeddingCache, SystemSpec, embed_images
from facematch.evaluation.metrics import threshold_for_fmr
from facematch.evaluation.protocols import GalleryEntry, ProbeEntry, Protocol
from facematch.evaluation.runner import calibration_sample
from facematch.search import calibration as C
from facematch.search.bands import BandScheme, MatedCurve, MatedReach, reach_summary
from facematch.settings import FalseCandidateTargets, Settings

TEN = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # non-mated distances, FMR steps of 0.1
LOOSE = {"strong": 0.3, "possible": 0.5, "weak": 0.7}


def _below(x: float) -> float:
    return float(np.nextafter(x, -np.inf))


def _sample(values, name="ten", mated=(0.05, 0.35, 0.55)):
    return C.ScoreSample.from_distances(name, "hand-made", values, mated)


# ------------------------------------------------------------------------------------ thresholds

def test_thresholds_by_hand():
    doc = C.compute_calibration([_sample(TEN)], targets=LOOSE, created_at="2026-01-01T00:00:00Z")
    # FMR 0.3 allows 3 of 10 false matches: just below the 4th smallest distance, and so on.
    assert doc["thresholds"] == {"strong": _below(0.4), "possible": _below(0.6), "weak": _below(0.8)}
    strong = doc["bands"][0]
    assert strong["supported"] and strong["min_supported_fmr"] == pytest.approx(0.3)
    assert strong["per_source"]["ten"] == {"threshold": _below(0.4), "fmr_at_threshold": pytest.approx(0.3),
                                           "tar_at_threshold": pytest.approx(2 / 3)}
    assert doc["warnings"] == [] and doc["sources"][0]["n_nonmated"] == 10


def test_thresholds_match_metrics_threshold_for_fmr():
    rng = np.random.default_rng(3)
    values = rng.normal(0.9, 0.1, 5000)
    sample = _sample(values)
    for target in (1e-3, 2e-3, 0.01, 0.05, 0.3):
        assert sample.threshold(target) == threshold_for_fmr(values, target)
        assert sample.fmr(sample.threshold(target)) <= target


def test_rule_of_three_warns_and_falls_back():
    doc = C.compute_calibration([_sample(TEN)], targets={"strong": 0.1, "possible": 0.2, "weak": 0.5})
    strong, possible, weak = doc["bands"]
    assert not strong["supported"] and not possible["supported"] and weak["supported"]
    # Unsupported bands sit just below the smallest non-mated distance: no false match seen.
    assert doc["thresholds"] == {"strong": _below(0.1), "possible": _below(0.1), "weak": _below(0.6)}
    assert len(doc["warnings"]) == 2 and "rule of three" in doc["warnings"][0]
    assert "needs 30 comparisons" in doc["warnings"][0]


def test_rule_of_three_strict_refuses():
    with pytest.raises(CalibrationError, match=r"strong band: target FMR 0.0001 is below what 10 non-mated "
                                               r"comparisons \(ten\) can support"):
        C.compute_calibration([_sample(TEN)], strict=True)


def test_several_sources_combine_conservatively():
    other = [0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 1.05, 1.15, 1.25]
    doc = C.compute_calibration([_sample(TEN), _sample(other, name="other")], targets=LOOSE)
    assert doc["thresholds"]["strong"] == _below(0.4)       # min(below 0.4, below 0.65)
    assert doc["thresholds"]["weak"] == _below(0.8)          # min(below 0.8, below 1.05)
    scheme = C.band_scheme_from_calibration(doc, "x.json")
    # The stored curve is the upper envelope: at each threshold it shows at most the target.
    for band, target in LOOSE.items():
        assert scheme.estimated_fmr(doc["thresholds"][band]) <= target + 1e-12
    assert scheme.estimated_fmr(0.41) == pytest.approx(0.4) and scheme.estimated_fmr(2.0) == 1.0


def test_bad_targets():
    with pytest.raises(InvalidArgument, match="strong <= possible <= weak"):
        C.compute_calibration([_sample(TEN)], targets={"strong": 0.5, "possible": 0.3, "weak": 0.7})
    with pytest.raises(InvalidArgument, match="must name the bands"):
        C.compute_calibration([_sample(TEN)], targets={"strong": 0.5})
    with pytest.raises(CalibrationError, match="no non-mated comparisons"):
        C.ScoreSample.from_distances("empty", "", [])


def test_pairwise_sample_matches_brute_force():
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(60, 8)) / 4).astype(np.float32)  # distances around 1, like descriptors
    labels = np.repeat(np.arange(20), 3)
    sample = C.pairwise_sample(x, labels, name="synthetic", description="", keep_fmr=0.3, block=16)
    i, j = np.triu_indices(60, k=1)
    d = np.linalg.norm(x[i].astype(np.float64) - x[j], axis=1)
    same = labels[i] == labels[j]
    assert sample.n_nonmated == int((~same).sum()) == 1770 - 60
    np.testing.assert_allclose(np.sort(sample.mated), np.sort(d[same]), rtol=1e-9)
    kept = np.sort(d[~same])[: sample.nonmated_low.size]
    np.testing.assert_allclose(sample.nonmated_low, kept, rtol=1e-9)
    assert sample.nonmated_low.size >= 0.3 * sample.n_nonmated  # everything up to the cap is exact
    assert sample.threshold(0.1) == pytest.approx(threshold_for_fmr(d[~same], 0.1), rel=1e-9)
    assert sample.fmr(10.0) == 1.0  # the tail histogram covers the rest


# ------------------------------------------------------------------------------------------ the file

def _write(tmp_path, **changes):
    doc = C.compute_calibration([_sample(TEN)], targets=LOOSE, dataset="hand-made",
                                created_at="2026-01-01T00:00:00Z")
    doc.update(changes)
    return C.write_calibration(doc, tmp_path / "cal.json"), doc


def test_file_round_trip_gives_a_calibrated_scheme(tmp_path):
    path, doc = _write(tmp_path)
    scheme = C.load_band_scheme(Settings(data_dir=tmp_path / "data", calibration_file=path))
    assert scheme.calibrated and scheme.source == f"calibration {path} (hand-made, 2026-01-01T00:00:00Z)"
    assert (scheme.thresholds.strong, scheme.thresholds.weak) == (_below(0.4), _below(0.8))
    assert dict(scheme.target_fmr) == LOOSE
    assert scheme.estimated_fmr(0.5) == pytest.approx(0.5)


def test_the_file_keeps_the_mated_curve_and_bands_say_what_they_reach(tmp_path):
    # mated (0.05, 0.35, 0.55): a third of the enrolled people come within 0.3, two thirds within 0.5
    path, doc = _write(tmp_path)
    assert doc["schema_version"] == C.SCHEMA_VERSION == 2
    assert doc["mated_curves"] == [{"source": "ten", "description": "hand-made", "n_mated": 3,
                                    "curve": [[0.05, 1 / 3], [0.35, 2 / 3], [0.55, 1.0]]}]
    scheme = C.load_band_scheme(Settings(calibration_file=path))
    assert scheme.mated_curves == (MatedCurve("ten", 3, ((0.05, 1 / 3), (0.35, 2 / 3), (0.55, 1.0))),)  # no qualities
    # ten non-mated comparisons support a per-face FMR >= 3/10: at three faces only weak (1 false, 1/3 per face)
    bands = scheme.for_gallery(3, 3)
    reach = {b.band: b.mated_reach for b in bands.bands}
    assert reach["strong"] == () and reach["possible"] == ()  # not supported: hold nothing, reach nothing
    weak = bands.bands[2]
    assert weak.threshold == _below(0.4)  # the curve's last point with FMR <= 1/3 (0.3)...
    assert weak.mated_reach == (MatedReach("ten", 3, 2 / 3),)  # ...and two of the three mated distances lie within it
    described = json.loads(json.dumps(bands.describe()))  # as the search JSON carries it
    assert described["bands"][2]["mated_reach"] == [{"source": "ten", "n_mated": 3, "fraction": 2 / 3,
                                                     "by_quality": []}]


def test_mated_curves_split_by_probe_quality_and_a_probe_reads_its_own_bin(tmp_path):
    # six mated searches: the three low-quality probes (10, 15, 30) lie far, the high-quality ones (50, 70, 90) near
    sample = C.ScoreSample.from_distances("cctv", "hand-made", TEN, (0.55, 0.65, 0.35, 0.05, 0.15, 0.25),
                                          mated_quality=(10, 15, 30, 50, 70, 90))
    doc = C.compute_calibration([sample], targets=LOOSE, created_at="2026-01-01T00:00:00Z")
    (entry,) = doc["mated_curves"]
    assert C.MATED_QUALITY_EDGES == (20.0, 40.0, 60.0)
    assert [(q["min_quality"], q["max_quality"], q["n_mated"]) for q in entry["by_quality"]] == [
        (0.0, 20.0, 2), (20.0, 40.0, 1), (40.0, 60.0, 1), (60.0, None, 2)]
    assert entry["by_quality"][0]["curve"] == [[0.55, 0.5], [0.65, 1.0]]
    path = C.write_calibration(doc, tmp_path / "q.json")
    bands = C.load_band_scheme(Settings(calibration_file=path)).for_gallery(3, 3).describe()["bands"]
    assert bands[2]["threshold"] == _below(0.4)  # only weak is supported here (see above)
    assert bands[2]["mated_reach"][0]["fraction"] == pytest.approx(4 / 6)
    assert reach_summary(bands) == ["cctv (6 mated comparisons): weak 67%"]
    assert reach_summary(bands, 12.0) == ["cctv, probe quality 0-20 (2 mated comparisons): weak 0%"]
    assert reach_summary(bands, 20.0) == ["cctv, probe quality 20-40 (1 mated comparisons): weak 100%"]
    assert reach_summary(bands, 95.0) == ["cctv, probe quality 60-100 (2 mated comparisons): weak 100%"]
    with pytest.raises(InvalidArgument, match="one quality score per mated distance"):
        C.ScoreSample.from_distances("cctv", "hand-made", TEN, (0.1, 0.2), mated_quality=(10,))


def test_schema_1_files_still_load_without_the_mated_side(tmp_path):
    _, doc = _write(tmp_path)
    del doc["mated_curves"]
    doc["schema_version"] = 1
    path = C.write_calibration(doc, tmp_path / "v1.json")
    scheme = C.load_band_scheme(Settings(calibration_file=path))
    assert scheme.calibrated and scheme.mated_curves == ()
    assert all(b.mated_reach == () for b in scheme.for_gallery(1, 1).bands)
    assert render.band_lines(scheme.for_gallery(1, 1).describe(), 0.5)[-1].startswith("Expected false")


def test_load_band_scheme_finds_the_data_dir_file(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert C.load_band_scheme(settings) == BandScheme.uncalibrated(settings.bands)
    C.write_calibration(_write(tmp_path)[1], tmp_path / "calibration.json")
    assert C.load_band_scheme(settings).calibrated


@pytest.mark.parametrize("changes, message", [
    ({"model": {"name": "other_model", "version": "1"}}, "was made for model other_model 1"),
    ({"schema": "something.else"}, "not a facematch calibration"),
    ({"thresholds": {"strong": 0.6, "possible": 0.5, "weak": 0.7}}, "bad thresholds"),
    ({"fmr_curve": [[0.5, 0.2], [0.4, 0.3]]}, "ascending in distance"),
    ({"schema_version": 3}, "schema version 3 is not supported"),
    ({"mated_curves": [{"source": "ten", "n_mated": 3, "curve": [[0.5, 0.6], [0.4, 0.9]]}]}, "mated curve of ten"),
    ({"mated_curves": [{"source": "ten", "curve": [[0.5, 1.0]]}]}, "bad mated curve"),
    ({"mated_curves": [{"source": "ten", "n_mated": 1, "curve": [[0.5, 1.0]],
                        "by_quality": [{"n_mated": 1, "curve": [[0.5, 1.0]]}]}]}, "bad quality bin .* of ten"),
    ({"mated_curves": [{"source": "ten", "n_mated": 1, "curve": [[0.5, 1.0]], "by_quality": [
        {"min_quality": 40, "max_quality": 20, "n_mated": 1, "curve": [[0.5, 1.0]]}]}]}, "quality bin 40-20 of ten"),
    ({"mated_curves": [{"source": "ten", "n_mated": 1, "curve": [[0.5, 1.0]], "by_quality": [
        {"min_quality": 0, "max_quality": None, "n_mated": 1, "curve": [[0.5, 2.0]]}]}]}, r"ten \(quality from 0\)"),
])
def test_bad_files_are_refused(tmp_path, changes, message):
    path, _ = _write(tmp_path, **changes)
    with pytest.raises(CalibrationError, match=message):
        C.load_band_scheme(Settings(calibration_file=path))


def test_calibration_of_another_alignment_is_refused(tmp_path):
    import dataclasses

    path, doc = _write(tmp_path)
    assert doc["model"]["version"].endswith("+align-5pt")  # the default alignment is recorded
    settings = Settings(calibration_file=path)
    assert C.load_band_scheme(settings).calibrated
    other = settings.replace(detection=dataclasses.replace(settings.detection, landmarks="68"))
    with pytest.raises(CalibrationError, match="align-5pt.*align-68pt"):
        C.load_band_scheme(other)


def test_missing_or_corrupt_file_is_refused(tmp_path):
    with pytest.raises(CalibrationError, match="does not exist"):
        C.load_band_scheme(Settings(calibration_file=tmp_path / "nope.json"))
    (tmp_path / "calibration.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="cannot read it"):
        C.load_band_scheme(Settings(data_dir=tmp_path))


# -------------------------------------------------------------------- real faces: search uses it

def _mugshot_protocol(mugshots) -> Protocol:
    """6 enrolled subjects (frontal view); probes: the 45-degree view of 8 people (2 not enrolled)."""
    enrolled = [f"{n:03d}" for n in range(40, 46)]
    gallery = [GalleryEntry(s, mugshots / s / "Img_33.jpg") for s in enrolled]
    probes = [ProbeEntry(f"{s}/{v}", mugshots / s / v, s if s in enrolled else None)
              for s in [f"{n:03d}" for n in range(40, 48)] for v in ("Img_43.jpg",)]
    return Protocol("mugshots-dev", "frmdb-dev mugshots, test split", gallery, probes, mugshots)


def test_calibration_on_dev_data_changes_search_bands(tmp_path):
    mugshots = require_data("frmdb-dev", "mugshots")
    # 2 enrolled faces: per-face FMR 0.01 (strong: needs 300 comparisons), 0.1 (30) and 0.3 (10)
    fm = make_facematch(tmp_path, band_targets=FalseCandidateTargets(strong=0.02, possible=0.2, weak=0.6))
    manifest = tmp_path / "custody.csv"
    manifest.write_text(f"path,subject_id\n{mugshots / '040' / 'Img_33.jpg'},040\n"
                        f"{mugshots / '041' / 'Img_33.jpg'},041\n")
    fm.ingest_custody(manifest)
    probe = mugshots / "040" / "Img_23.jpg"
    before = fm.search([probe], reason="test")
    assert not before.bands["calibrated"] and before.probes[0].subjects[0].estimated_fmr is None

    protocol, system, cache = _mugshot_protocol(mugshots), SystemSpec.facematch(fm.settings), \
        EmbeddingCache(tmp_path / "cache")
    sample = calibration_sample(protocol, system, name="mugshots-dev", cache=cache)
    found = [e.acquired for e in embed_images([p.path for p in protocol.probes], system, purpose="probe",
                                              cache=cache)]
    n_mated = sum(f for f, p in zip(found, protocol.probes) if p.subject)
    assert 6 <= sum(found) <= 8  # most 45-degree views have a detectable face
    assert (sample.n_nonmated, sample.mated.size) == (6 * sum(found) - n_mated, n_mated)
    targets = {"strong": 0.1, "possible": 0.2, "weak": 0.3}  # >= 3/n: supported by n >= 30 comparisons
    doc = C.compute_calibration([sample], targets=targets, settings=fm.settings, dataset="frmdb-dev mugshots")
    assert doc["warnings"] == []
    C.write_calibration(doc, fm.settings.data_dir / "calibration.json")

    after = fm.search([probe], reason="test")
    gallery = fm.band_scheme().for_gallery(2, 2)
    assert after.bands["calibrated"] and "frmdb-dev mugshots" in after.bands["source"]
    assert after.bands["target_fmr"] == targets and after.bands["max_false_candidates"]["possible"] == 0.2
    strong, possible, weak = gallery.bands
    assert (strong.supported, strong.threshold, strong.needs_nonmated) == (False, None, 300)
    assert possible.supported and weak.supported and possible.threshold <= weak.threshold
    assert possible.expected_false <= 0.2 + 1e-9 and weak.expected_false <= 0.6 + 1e-9
    assert after.bands["thresholds"] == {"strong": None, "possible": possible.threshold, "weak": weak.threshold}
    for cand in after.probes[0].subjects:
        assert cand.estimated_fmr == pytest.approx(gallery.estimated_fmr(cand.distance), rel=1e-3)  # rounded d
        assert cand.band == gallery.band(cand.distance) and cand.band != "strong"
    assert after.expected_false_candidates == pytest.approx(weak.expected_false)
    text = "\n".join(render.search_lines(after))
    assert "strong: not supported at this gallery size (2 subjects, 2 faces): needs >= 300 non-mated" in text
    assert (f"possible: at most 0.2 false candidates expected per search of someone not enrolled, among 2 "
            f"subjects; distance <= {possible.threshold:.3f}") in text
    assert "calibrated: calibration" in text and "uncalibrated" not in text
    assert json.loads(json.dumps(after.to_dict()))["bands"]["calibrated"] is True
    fm.close()


def test_a_calibration_of_other_settings_is_warned_about_once_naming_what_differs(caplog, tmp_path):
    """The committed dev calibration matches the default pipeline; searching with plain probe descriptors
    is warned about once per process (a service logs it once, not on every search), naming the settings."""
    from pathlib import Path

    from facematch.settings import EmbeddingSettings

    committed = Path(__file__).resolve().parents[1] / "docs" / "calibration-dev.json"
    assert committed.is_file()
    default = Settings(data_dir=tmp_path, calibration_file=committed)
    plain = default.replace(embedding=EmbeddingSettings(probe_jitters=1, probe_flip=False))
    C._WARNED.clear()  # what earlier tests in this process were warned about
    with caplog.at_level("WARNING", logger="facematch.search.calibration"):
        C.load_band_scheme(default)
        assert not caplog.records  # the committed calibration was made with the defaults
        for _ in range(3):
            C.load_band_scheme(plain)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "embedding.probe_jitters: 4 -> 1" in warnings[0] and "embedding.probe_flip: True -> False" in warnings[0]
    assert "detection" not in warnings[0]  # only what differs
