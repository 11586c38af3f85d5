"""Evaluation runner on small real protocols: facematch beside the baseline, FTA counted, cache reused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_data

from facematch.cli.evaluation_commands import calibrate, evaluate, protocol
from facematch.evaluation import embed_cache as E
from facematch.evaluation import runner as R
from facematch.evaluation.protocols import GalleryEntry, ProbeEntry, Protocol, load_lfw_pairs, save_protocol_json
from facematch.search.bands import BandScheme
from facematch.settings import DetectionSettings, Settings

CAMERAS = (1, 2)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One embedding cache for the module: later tests re-embed nothing."""
    return tmp_path_factory.mktemp("eval-cache")


@pytest.fixture(scope="module")
def cctv_protocol():
    """Subjects 040-043 enrolled (frontal mugshot) plus 2 LFW distractors; CCTV probes of 040-044 (044 not
    enrolled), cameras 1 and 2: 10 probes, several without a detectable face (real CCTV)."""
    data = require_data("frmdb-dev")
    lfw = require_data("lfw")
    enrolled = ["040", "041", "042", "043"]
    gallery = [GalleryEntry(f"frmdb-{s}", data / "mugshots" / s / "Img_33.jpg") for s in enrolled]
    gallery += [GalleryEntry(f"lfw-{n}", lfw / n / f"{n}_0001.jpg") for n in ("Aaron_Eckhart", "Abdullah_Gul")]
    probes = [ProbeEntry(f"{s}/Img_0{c}.jpg", data / "cctv_crops" / s / f"Img_0{c}.jpg",
                         f"frmdb-{s}" if s in enrolled else None, {"camera": str(c)})
              for s in enrolled + ["044"] for c in CAMERAS]
    return Protocol("cctv-mini", "test protocol", gallery, probes, data)


@pytest.fixture(scope="module")
def evaluation(cctv_protocol, cache_dir):
    systems = R.default_systems(Settings())
    return R.evaluate_protocol(cctv_protocol, systems, scheme=BandScheme.uncalibrated(),
                               cache=E.EmbeddingCache(cache_dir), n_boot=20)


def _embeddings(protocol, cache_dir, system):
    cache = E.EmbeddingCache(cache_dir)
    gallery = E.embed_images([g.path for g in protocol.gallery], system, purpose="custody", cache=cache)
    probes = E.embed_images([p.path for p in protocol.probes], system, purpose="probe", cache=cache)
    return gallery, probes


def test_every_probe_has_an_outcome_and_failures_are_counted(evaluation, cctv_protocol, cache_dir, monkeypatch):
    monkeypatch.setattr(E, "_run_jobs", lambda *a: pytest.fail("cached images must not be embedded again"))
    for system in R.default_systems(Settings()):
        outcomes = evaluation.outcomes[system.name]
        assert [o.probe_id for o in outcomes] == [p.id for p in cctv_protocol.probes]
        gallery, probes = _embeddings(cctv_protocol, cache_dir, system)
        failed = [not e.acquired for e in probes]
        assert [not o.acquired for o in outcomes] == failed
        ident = evaluation.result["systems"][system.name]["identification"]
        assert (ident["n_mated"], ident["n_nonmated"]) == (8, 2)
        assert ident["failures"]["fta"] == pytest.approx(sum(failed) / 10)
        assert ident["failures"]["fte"] == pytest.approx(sum(not e.acquired for e in gallery) / 6)
        rank1 = sum(bool(o.candidates) and o.candidates[0][0] == o.true_subject for o in outcomes if o.mated)
        assert ident["cmc"][0] == {"rank": 1, "hit_rate": pytest.approx(rank1 / 8), "ci": ident["cmc"][0]["ci"]}
        ver = evaluation.result["systems"][system.name]["verification"]
        assert (ver["n_mated"], ver["n_nonmated"]) == (8, 10 * 6 - 8)
        enrolled = {g.subject for g, e in zip(cctv_protocol.gallery, gallery) if e.acquired}
        assert ver["n_not_compared"] == sum(failed) * 6 + (10 - sum(failed)) * (6 - len(enrolled))


def test_candidates_are_subjects_fused_by_their_closest_image(evaluation, cctv_protocol, cache_dir):
    system = E.SystemSpec.facematch(Settings())
    gallery, probes = _embeddings(cctv_protocol, cache_dir, system)
    for outcome, probe in zip(evaluation.outcomes["facematch"], probes):
        if not probe.acquired:
            continue
        expected = {}
        for g, e in zip(cctv_protocol.gallery, gallery):
            if e.acquired:
                d = float(np.linalg.norm(e.embedding.astype(np.float64) - probe.embedding))
                expected[g.subject] = min(expected.get(g.subject, math.inf), d)
        assert dict(outcome.candidates) == pytest.approx(expected, rel=1e-9)
        assert [s for s, _ in outcome.candidates] == sorted(expected, key=lambda s: (expected[s], s))


def test_baseline_is_face_recognition_as_its_readme_shows(cctv_protocol, cache_dir):
    import face_recognition

    gallery, _ = _embeddings(cctv_protocol, cache_dir, E.SystemSpec.baseline())
    path, entry = next((g.path, e) for g, e in zip(cctv_protocol.gallery, gallery) if e.acquired)
    readme = face_recognition.face_encodings(face_recognition.load_image_file(str(path)))[0]
    np.testing.assert_array_equal(entry.embedding, readme.astype(np.float32))


def test_report_has_both_systems_and_breakdowns(evaluation, tmp_path):
    paths = evaluation.write(tmp_path)
    doc = json.loads(paths["json"].read_text())
    assert set(doc["systems"]) == {"facematch", "baseline"}
    groups = doc["systems"]["baseline"]["identification"]["by_group"]
    assert set(groups) == {"camera", "probe quality (facematch)"}
    assert groups["camera"]["n_mated"] == {"1": 4, "2": 4}
    assert sum(groups["probe quality (facematch)"]["n_mated"].values()) == 8
    labels = [p["label"] for p in doc["systems"]["facematch"]["identification"]["at_thresholds"]]
    assert labels == ["face_recognition tolerance 0.6", "strong band", "possible band", "weak band"]
    for name in ("facematch", "baseline"):  # the 2 LFW distractors removed: ranked among 040-043 only
        ident, alone = (doc["systems"][name][k] for k in ("identification", "identification_without_distractors"))
        assert (alone["n_subjects"], alone["n_distractor_subjects"], alone["n_mated"]) == (4, 2, 8)
        assert alone["chance_rank1"] == 0.25
        full = {c["rank"]: c["hit_rate"] for c in ident["cmc"]}
        assert alone["cmc"][0]["rank"] == 1 and alone["cmc"][0]["hit_rate"] >= full[1]  # fewer to beat
    markdown = paths["markdown"].read_text()
    assert "| metric | facematch | baseline |" in markdown and "Rank-1 hit rate by camera" in markdown
    assert "Rank among the probed subjects only (distractors removed)" in markdown
    assert {p.name for p in paths["plots"]} >= {"det.png", "cmc.png", "search_scores_baseline.png"}


def test_quality_bins_are_tertiles():
    bins = R.quality_bins([10, 20, 30, 40, 50, 60, None], list("abcdefg"))
    assert bins == {"a": "1 low (<= 27)", "b": "1 low (<= 27)", "c": "2 mid (27-43]", "d": "2 mid (27-43]",
                    "e": "3 high (> 43)", "f": "3 high (> 43)", "g": "no face"}


def _mini_pairs(tmp_path):
    """2 folds x (2 mated + 2 non-mated) pairs, the first ones of LFW View 2 folds 1 and 2."""
    lfw = require_data("lfw")
    lines = (lfw / "pairs.txt").read_text().splitlines()[1:]
    chosen = [ln for fold in (0, 1) for start in (fold * 600, fold * 600 + 300) for ln in lines[start:start + 2]]
    path = tmp_path / "pairs.txt"
    path.write_text("2\t2\n" + "\n".join(chosen) + "\n")
    return load_lfw_pairs(path, lfw)


def test_lfw_pairs_verification_and_all_pairs_calibration_sample(tmp_path, cache_dir, monkeypatch):
    pairs = _mini_pairs(tmp_path)
    system = E.SystemSpec.facematch(Settings())
    cache = E.EmbeddingCache(cache_dir)
    ev = R.evaluate_pairs(pairs, [system], scheme=BandScheme.uncalibrated(), cache=cache, n_boot=0)
    ver = ev.result["systems"]["facematch"]["verification"]
    assert (ver["n_mated"], ver["n_nonmated"]) == (4, 4) and len(ver["lfw_accuracy"]["accuracies"]) == 2
    paths = list(dict.fromkeys(p for pair in pairs for p in (pair.path_a, pair.path_b)))
    entries = dict(zip(paths, E.embed_images(paths, system, purpose="probe", cache=cache)))
    d = [np.linalg.norm(entries[p.path_a].embedding - entries[p.path_b].embedding)
         if entries[p.path_a].acquired and entries[p.path_b].acquired else math.inf for p in pairs]
    assert ver["n_not_compared"] == sum(math.isinf(x) for x in d)
    np.testing.assert_allclose(np.sort(ev.plots["scores"]["facematch"]["mated"]),
                               np.sort([x for x, p in zip(d, pairs) if p.same and math.isfinite(x)]), rtol=1e-6)

    boxed = E.SystemSpec.facematch(Settings(), name="facematch+fixed-box", fallback_box=(67, 74, 182, 189))
    jobs = []
    monkeypatch.setattr(E, "_run_jobs", lambda j, *a: jobs.extend(j) or [(i, E.ImageEmbedding("no_face"))
                                                                          for i, _, _ in j])
    E.embed_images(paths, boxed, purpose="probe", cache=cache)  # only faces not found need the box
    assert sorted(path for _, path, _ in jobs) == sorted(str(p) for p in paths if not entries[p].acquired)
    monkeypatch.undo()

    sample = R.calibration_sample(pairs, system, name="mini", cache=cache)
    names = {p: n for pair in pairs for p, n in ((pair.path_a, pair.subject_a), (pair.path_b, pair.subject_b))}
    ok = [p for p in paths if entries[p].acquired]
    n_non = sum(names[a] != names[b] for i, a in enumerate(ok) for b in ok[i + 1:])
    assert sample.n_nonmated == n_non and sample.mated.size == len(ok) * (len(ok) - 1) // 2 - n_non


# ------------------------------------------------------------------------------------------------ CLI

def test_protocol_command_writes_a_seeded_split(tmp_path):
    orl = require_data("small", "orl")
    out = tmp_path / "orl.json"
    result = CliRunner().invoke(protocol, [str(orl), str(out), "--gallery-per-subject", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert len(doc["gallery"]) == 32 * 2 and len(doc["probes"]) == 32 * 8 + 8 * 10
    assert result.output == (f"Protocol written to {out}: 64 gallery images of 32 identities, 336 probes "
                             "(80 non-mated)\n")


def test_evaluate_and_calibrate_commands(tmp_path, cctv_protocol, cache_dir, evaluation):
    proto = save_protocol_json(cctv_protocol, tmp_path / "mini.json")
    common = ["--cache-dir", str(cache_dir), "--workers", "1"]
    result = CliRunner().invoke(evaluate, [str(proto), "-o", str(tmp_path / "report"), "--n-boot", "0", *common])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Report: {tmp_path / 'report' / 'report.md'}")
    assert "  facematch: rank-1 hit rate" in result.output and "  baseline: rank-1 hit rate" in result.output
    assert "rank-1 among the 4 probed subjects" in result.output and "(chance 25.0%)" in result.output

    strict = CliRunner().invoke(calibrate, [str(proto), "--strict", "-o", str(tmp_path / "c.json"), *common])
    assert strict.exit_code == 1 and not (tmp_path / "c.json").exists()
    assert strict.output.startswith("error: strong band: target FMR 0.0001 is below what")
    loose = CliRunner().invoke(calibrate, [str(proto), "-o", str(tmp_path / "c.json"), "--strong-fmr", "0.2",
                                           "--possible-fmr", "0.3", "--weak-fmr", "0.4", *common])
    assert loose.exit_code == 0, loose.output
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["sources"][0]["name"] == "mini.json" and doc["targets"]["weak"] == 0.4
    assert f"weak     FMR 0.4: distance <= {doc['thresholds']['weak']:.4f}" in loose.output
    # the mated side is kept: each acquired mated probe's distance to its own subject, as a curve
    (mated,) = doc["mated_curves"]
    assert mated["source"] == "mini.json" and mated["n_mated"] == doc["sources"][0]["n_mated"] >= 1
    assert mated["curve"][-1][1] == 1.0
    assert sum(q["n_mated"] for q in mated["by_quality"]) == mated["n_mated"]  # every acquired probe has a quality
    for band in doc["bands"]:
        within = [f for d, f in mated["curve"] if d <= band["threshold"]]
        reach = within[-1] if within else 0.0
        assert reach == pytest.approx(band["per_source"]["mini.json"]["tar_at_threshold"])
    # an evaluation with that calibration puts the FNIR the calibration predicts beside the one it observes
    env = {"FACEMATCH_CALIBRATION": str(tmp_path / "c.json")}
    result = CliRunner().invoke(evaluate, [str(proto), "-o", str(tmp_path / "calibrated"), "--n-boot", "0", *common],
                                env=env)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "calibrated" / "report.json").read_text())
    rows = [r for r in report["gallery_bands"]["bands"] if r["threshold"] is not None]
    assert rows and all(set(r["predicted_fnir"]) == {"mini.json"} for r in rows)
    for row in rows:  # the same probes: prediction and observation agree once probes without a face are set aside
        observed = row["observed"]["facematch"]
        failures_to_acquire = observed["n_mated"] - mated["n_mated"]
        misses_with_a_face = observed["fnir"] * observed["n_mated"] - failures_to_acquire
        assert row["predicted_fnir"]["mini.json"] == pytest.approx(misses_with_a_face / mated["n_mated"])
        # probe by probe from the quality bins: on the calibration's own probes the bins add up to the same
        matched = row["predicted_fnir_quality_matched"]["mini.json"]
        assert matched["n_mated"] == mated["n_mated"] and matched["fnir"] == pytest.approx(misses_with_a_face /
                                                                                            mated["n_mated"])
    assert "| predicted FNIR |" in (tmp_path / "calibrated" / "report.md").read_text()


def test_bad_pairs_file_is_a_clean_error(tmp_path):
    bad = tmp_path / "pairs.txt"
    bad.write_text("1\t1\nSomeone\t1\t2\n")
    result = CliRunner().invoke(evaluate, [str(bad), "--no-baseline"])
    assert result.exit_code == 1
    assert result.output.startswith("error: pairs.txt: expected 2 pair lines for 1 folds of 1 + 1, found 1")


def test_central_face_is_the_one_nearest_the_image_centre():
    """LFW's labelled face is the one its image is cropped around, not always the largest."""
    from types import SimpleNamespace

    from facematch.types import FaceBox

    big_corner = SimpleNamespace(box=FaceBox(0, 0, 120, 120))  # largest, centred at (60, 60)
    small_centre = SimpleNamespace(box=FaceBox(100, 110, 150, 160))  # centred at (125, 135)
    assert E._central_face([big_corner, small_centre], (250, 250, 3)) is small_centre
    assert E._central_face([big_corner], (250, 250, 3)) is big_corner
    from facematch.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        E.SystemSpec.facematch(Settings(), face_choice="leftmost")
    central = E.SystemSpec.facematch(Settings(), face_choice="central")
    assert central.cache_key("probe") != E.SystemSpec.facematch(Settings()).cache_key("probe")


def test_probe_stage_shift_splits_non_mated_comparisons_by_the_probe_s_stage(cctv_protocol, cache_dir, evaluation):
    """Every acquired probe lands in one group; only other subjects' gallery faces count (non-mated).
    With dlib's CNN before MTCNN, so that these ten probes come from more than one stage."""
    system = R.default_systems(Settings(detection=DetectionSettings(mtcnn_after="cnn")))[0]
    gallery, probes = _embeddings(cctv_protocol, cache_dir, system)
    stages = [p.detector for p in probes if p.acquired]
    stage = max(set(stages), key=stages.count)
    shift = R.probe_stage_shift(cctv_protocol, system, stage, cache=E.EmbeddingCache(cache_dir))
    assert shift["n_probes"] == stages.count(stage) and shift["n_other_probes"] == len(stages) - stages.count(stage)
    g_subjects = [g.subject for g, e in zip(cctv_protocol.gallery, gallery) if e.acquired]
    expected = sum(sum(s != p.subject for s in g_subjects)
                   for p, e in zip(cctv_protocol.probes, probes) if e.acquired and e.detector == stage)
    assert shift["n_comparisons"] == expected
    assert set(shift["shifts"]) == {"0.005", "0.01", "0.02", "0.05", "0.1"}
    with pytest.raises(ValueError, match="need probes"):
        R.probe_stage_shift(cctv_protocol, system, "no-such-stage", cache=E.EmbeddingCache(cache_dir))
