"""The standard evaluations of docs/evaluation.md, by name, over the shared face data.

    python scripts/evaluate.py frmdb                 # frmdb-dev CCTV protocol: facematch vs baseline
    python scripts/evaluate.py lfw                   # LFW View 2, 10 folds: facematch vs baseline
    python scripts/evaluate.py lfw --folds 3         # the first 3 folds only (a partial run)
    python scripts/evaluate.py lfw --fixed-box --no-baseline   # LFW-only fixed-box fallback
    python scripts/evaluate.py lfw-boxes             # median detected box on LFW (for --fixed-box)
    python scripts/evaluate.py calibrate             # frmdb-dev + LFW calibration -> docs/calibration-dev.json
    python scripts/evaluate.py view-offset           # the FMR-equalising offset of profile gallery views
    python scripts/evaluate.py probe-shift           # are MTCNN's probe faces closer to everyone's?
    python scripts/evaluate.py frmdb --calibration docs/calibration-dev.json --n-boot 0   # bands in use
    python scripts/evaluate.py frmdb --protocol ../shared/data/protocols/frmdb-lowres-cctv.json   # + person-level
    python scripts/evaluate.py person-fusion --protocol ../shared/data/protocols/frmdb-lowres-cctv.json
                                                     # person-level fusion rules side by side

Everything is done by the library (facematch.evaluation.runner, facematch.search.calibration); this script only
names the data and the output folders. Embeddings are cached in .cache/facematch-eval, so a second run,
or a calibration after an evaluation, re-embeds nothing. Run long ones with `nice -n 10`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from facematch.evaluation import runner
from facematch.evaluation.embed_cache import DEFAULT_CACHE_DIR, EmbeddingCache, SystemSpec, embed_images, with_jitters
from facematch.search.bands import BandScheme
from facematch.search.calibration import compute_calibration, write_calibration
from facematch.settings import EvaluationSettings, Settings

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("evaluate")
DATA = Path(os.environ.get("FACEMATCH_TEST_DATA", REPO.parent / "shared" / "data"))
FRMDB_PROTOCOL = DATA / "protocols" / "frmdb-dev-cctv.json"
LFW_PAIRS = DATA / "lfw" / "pairs.txt"
#: Median (left, top, right, bottom) of the HOG boxes facematch finds on the 7,701 LFW pair images
#: (`evaluate.py lfw-boxes`, 7,644 HOG boxes, width 109 px for the middle 90%): the fixed-box fallback
#: of the LFW-specific protocol option.
LFW_FIXED_BOX = (67, 80, 176, 188)


def _settings(args) -> Settings:
    settings = Settings.from_env(workers=args.workers)
    if args.num_jitters:
        settings = settings.replace(embedding=with_jitters(settings.embedding, args.num_jitters))
    if args.landmarks:
        settings = settings.replace(detection=dataclasses.replace(settings.detection, landmarks=args.landmarks))
    return settings


def _variant(text: str, settings: Settings) -> SystemSpec:
    """A facematch system from "key=value,..." changes to ``settings``: face (largest|central),
    landmarks (5|68), jitters (both sides), probe_jitters, probe_flip (0|1), custody_cnn (0|1),
    mtcnn (0|1: the MTCNN probe stage), mtcnn_after (hog|cnn|rotated), nonfrontal_offset (distance added to
    profile views)."""
    changes = dict(item.split("=", 1) for item in text.split(",") if item)
    det, emb = settings.detection, settings.embedding
    if "landmarks" in changes:
        det = dataclasses.replace(det, landmarks=changes["landmarks"])
    if "custody_cnn" in changes:
        det = dataclasses.replace(det, custody_cnn=changes["custody_cnn"] == "1")
    if "mtcnn" in changes:
        det = dataclasses.replace(det, mtcnn=changes["mtcnn"] == "1")
    if "mtcnn_after" in changes:
        det = dataclasses.replace(det, mtcnn_after=changes["mtcnn_after"])
    if "jitters" in changes:
        emb = with_jitters(emb, int(changes["jitters"]))
    if "probe_jitters" in changes:
        emb = dataclasses.replace(emb, probe_jitters=int(changes["probe_jitters"]))
    if "probe_flip" in changes:
        emb = dataclasses.replace(emb, probe_flip=changes["probe_flip"] == "1")
    changed = settings.replace(detection=det, embedding=emb)
    if "nonfrontal_offset" in changes:
        changed = dataclasses.replace(changed, nonfrontal_offset=float(changes["nonfrontal_offset"]))
    return SystemSpec.facematch(changed, name=f"facematch[{text}]",
                                face_choice=changes.get("face", "largest"))


def _systems(args, settings: Settings) -> list[SystemSpec]:
    if args.baseline_only:
        return [SystemSpec.baseline()]
    systems = runner.default_systems(settings, baseline=not args.no_baseline,
                                     fallback_box=LFW_FIXED_BOX if getattr(args, "fixed_box", False) else None,
                                     face_choice=args.face)
    for variant in args.variant or []:  # extra facematch columns in the same report
        systems.insert(len(systems) - (0 if args.no_baseline else 1), _variant(variant, settings))
    return systems


def _progress(what: str, done: int, total: int) -> None:
    if done == total or done % 500 == 0:
        log.info("%s: %d/%d", what, done, total)


def run_frmdb(args, cache: EmbeddingCache) -> None:
    args.face = args.face or "largest"
    settings = _settings(args)
    protocol = runner.load_source(args.protocol or FRMDB_PROTOCOL)
    evaluation = runner.evaluate_protocol(protocol, _systems(args, settings), scheme=_scheme(args), cache=cache,
                                          workers=settings.workers, n_boot=args.n_boot, progress=_progress,
                                          group_by=args.group_by, person=settings.person)
    print(evaluation.write(args.output or REPO / "reports" / "frmdb-dev-cctv")["markdown"])


#: The person-level fusion rules compared by ``person-fusion`` (facematch.search.person).
FUSION_VARIANTS = [("min", {"fusion": "min"}), ("mean-2", {"fusion": "mean-k", "fusion_k": 2}),
                   ("mean-3", {"fusion": "mean-k", "fusion_k": 3}), ("quality-mean", {"fusion": "quality-mean"}),
                   ("quality-min 0.1", {"fusion": "quality-min", "quality_penalty": 0.1}),
                   ("quality-min 0.2", {"fusion": "quality-min", "quality_penalty": 0.2})]


def run_person_fusion(args, cache: EmbeddingCache) -> None:
    """Person-level rank-1/10/20 and FNIR at FPIR 5% of each fusion rule, facematch and baseline."""
    args.face = args.face or "largest"
    settings = _settings(args)
    protocol = runner.load_source(args.protocol or FRMDB_PROTOCOL)
    systems = _systems(args, settings)
    print(f"{protocol.name} (group by {args.group_by}): person-level hits / mated groups; FNIR (rank 1) at FPIR 5% "
          "(n/a: too few non-mated groups) and at FPIR 0")
    print(f"{'rule':<16}" + "".join(f"{s.name:>48}" for s in systems))
    for label, change in FUSION_VARIANTS:
        person = dataclasses.replace(settings.person, **change)
        ev = runner.evaluate_protocol(protocol, systems, scheme=_scheme(args), cache=cache, workers=settings.workers,
                                      n_boot=0, group_by=args.group_by, person=person)
        cells = []
        for s in systems:
            sec = ev.result["systems"][s.name]["person_identification"]
            hits = {c["rank"]: round(c["hit_rate"] * sec["n_mated"]) for c in sec["cmc"]}
            fnir = next((p["fnir"] for p in sec["fnir_at_fpir"] if p["fpir_target"] == 0.05), None)
            zero = sec["fnir_at_zero_fpir"]["fnir"]
            cells.append(f"r1 {hits[1]:>2} r10 {hits[10]:>2} r20 {hits[20]:>2} /{sec['n_mated']} FNIR@5% "
                         + ("n/a" if fnir is None or fnir != fnir else f"{100 * fnir:.0f}%") + f" @0 {100 * zero:.0f}%")
        print(f"{label:<16}" + "".join(f"{c:>48}" for c in cells))


def run_lfw(args, cache: EmbeddingCache) -> None:
    args.face = args.face or "central"
    settings = _settings(args)
    pairs = runner.load_source(LFW_PAIRS)
    if args.folds:
        pairs = [p for p in pairs if p.fold < args.folds]
    name = f"LFW View 2 pairs ({args.folds or 10} folds{', fixed-box fallback' if args.fixed_box else ''})"
    evaluation = runner.evaluate_pairs(pairs, _systems(args, settings), scheme=_scheme(args), name=name,
                                       cache=cache, workers=settings.workers, n_boot=args.n_boot,
                                       progress=_progress)
    suffix = ("-fixed-box" if args.fixed_box else "") + (f"-jitter{args.num_jitters}" if args.num_jitters else "") \
        + (f"-{args.landmarks}pt" if args.landmarks else "") + ("-baseline" if args.baseline_only else "") \
        + ("-largest-face" if args.face == "largest" else "")
    print(evaluation.write(args.output or REPO / "reports" / f"lfw{suffix}")["markdown"])


def run_lfw_boxes(args, cache: EmbeddingCache) -> None:
    """Median (left, top, right, bottom) of the faces facematch detects on the LFW pair images."""
    import numpy as np

    settings = _settings(args)
    pairs = runner.load_source(LFW_PAIRS)
    paths = list(dict.fromkeys([p.path_a for p in pairs] + [p.path_b for p in pairs]))
    entries = embed_images(paths, SystemSpec.facematch(settings), purpose="probe", cache=cache,
                           workers=settings.workers)
    boxes = np.array([e.box for e in entries if e.acquired and e.detector == "hog"])
    print(f"{len(boxes)} HOG boxes of {len(paths)} images; median (left, top, right, bottom): "
          f"{tuple(int(v) for v in np.median(boxes, axis=0))}; "
          f"IQR of width: {np.percentile(boxes[:, 2] - boxes[:, 0], [25, 75])}")


def run_view_offset(args, cache: EmbeddingCache) -> None:
    """The FMR-equalising offset for CNN-only custody views (Settings.nonfrontal_offset), non-mated only."""
    settings = _settings(args)
    protocol = runner.load_source(args.protocol or FRMDB_PROTOCOL)
    estimate = runner.view_offset_estimate(protocol, SystemSpec.facematch(settings), cache=cache,
                                           workers=settings.workers, progress=_progress)
    print(f"{protocol.name}: {estimate['n_nonfrontal_gallery']} gallery faces only the CNN found, "
          f"{estimate['n_subjects']} subjects with both views; non-mated "
          f"comparisons {estimate['n_frontal']:,} frontal / {estimate['n_nonfrontal']:,} non-frontal")
    print("shift at quantile: " + ", ".join(f"{q}: {v:.3f}" for q, v in estimate["shifts"].items()))
    print(f"FMR-equalising offset: {estimate['offset']:.3f} (in use: {settings.nonfrontal_offset})")


def run_probe_shift(args, cache: EmbeddingCache) -> None:
    """How much closer to other people's faces the probes of one detector stage lie (non-mated only)."""
    settings = _settings(args)
    protocol = runner.load_source(args.protocol or FRMDB_PROTOCOL)
    shift = runner.probe_stage_shift(protocol, SystemSpec.facematch(settings), args.stage, cache=cache,
                                     workers=settings.workers, progress=_progress)
    print(f"{protocol.name}: {shift['n_probes']} probes found by {shift['stage']} ({shift['n_comparisons']:,} "
          f"non-mated comparisons), {shift['n_other_probes']} by other stages ({shift['n_other_comparisons']:,})")
    print("other stages' distance minus this stage's, at quantile: "
          + ", ".join(f"{q}: {v:.3f}" for q, v in shift["shifts"].items()))


def run_calibrate(args, cache: EmbeddingCache) -> None:
    settings = _settings(args)
    system = SystemSpec.facematch(settings)
    pairs = runner.load_source(LFW_PAIRS)
    lfw_name = "lfw-pair-images" + (f"-folds-1-{args.folds}" if args.folds else "")
    if args.folds:
        pairs = [p for p in pairs if p.fold < args.folds]
    samples = [
        runner.calibration_sample(runner.load_source(FRMDB_PROTOCOL), system, name="frmdb-dev-cctv", cache=cache,
                                  workers=settings.workers, progress=_progress),
        runner.calibration_sample(pairs, SystemSpec.facematch(settings, face_choice="central"), name=lfw_name,
                                  cache=cache, workers=settings.workers, progress=_progress),
    ]
    doc = compute_calibration(samples, settings=settings, dataset=f"frmdb-dev-cctv + {lfw_name} (dev)")
    path = write_calibration(doc, args.output or REPO / "docs" / "calibration-dev.json")
    print(f"wrote {path}: thresholds {doc['thresholds']}")
    for band in doc["bands"]:
        print(f"  {band['band']}: target FMR {band['target_fmr']:g} -> distance <= {band['threshold']:.4f} "
              f"(supported: {band['supported']}); per source {band['per_source']}")
    for w in doc["warnings"]:
        print(f"  warning: {w}")


def _scheme(args) -> BandScheme:
    if args.calibration:
        from facematch.search.calibration import load_band_scheme

        return load_band_scheme(Settings.from_env(calibration_file=Path(args.calibration)))
    return BandScheme.uncalibrated()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", choices=["frmdb", "lfw", "lfw-boxes", "calibrate", "view-offset", "probe-shift",
                                        "person-fusion"])
    parser.add_argument("--output", type=Path, help="Report folder (calibrate: the JSON file).")
    parser.add_argument("--workers", type=int, help="Worker processes (default: settings, the CPU cores).")
    parser.add_argument("--n-boot", type=int, default=EvaluationSettings().n_boot,
                        help="Bootstrap replicates (0: no intervals).")
    parser.add_argument("--folds", type=int, help="LFW: evaluate (calibrate: use) the first N folds only.")
    parser.add_argument("--fixed-box", action="store_true", help=f"LFW: fall back to the box {LFW_FIXED_BOX}.")
    parser.add_argument("--num-jitters", type=int, help="facematch: descriptor jitters (default: settings).")
    parser.add_argument("--face", choices=["largest", "central"],
                        help="Which detected face is the labelled one (default: central for LFW, which "
                        "defines it so; largest for the CCTV protocol).")
    parser.add_argument("--protocol", type=Path, help="frmdb: another protocol file (e.g. the coarse "
                        "variant written by probe_study.py --write-coarse-protocol).")
    parser.add_argument("--variant", action="append", help="Another facematch system in the same run, as "
                        "changes to the defaults, e.g. face=central,landmarks=68,jitters=10; repeatable.")
    parser.add_argument("--landmarks", choices=["5", "68"], help="facematch alignment (default: settings).")
    parser.add_argument("--no-baseline", action="store_true", help="Skip the face_recognition baseline.")
    parser.add_argument("--baseline-only", action="store_true", help="Run the face_recognition baseline alone.")
    parser.add_argument("--calibration", help="Calibration file whose bands the report uses.")
    parser.add_argument("--stage", default="mtcnn", help="probe-shift: the probe detector stage to compare "
                        "(default mtcnn; e.g. cnn-rotated+25).")
    parser.add_argument("--group-by", default="auto", help="frmdb, person-fusion: group probes into person-level "
                        "searches: auto (the 'person' attribute), subject, none, or an attribute.")
    parser.add_argument("--cache-dir", type=Path, default=REPO / DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)
    cache = EmbeddingCache(args.cache_dir)
    runs = {"frmdb": run_frmdb, "lfw": run_lfw, "lfw-boxes": run_lfw_boxes, "calibrate": run_calibrate,
            "view-offset": run_view_offset, "probe-shift": run_probe_shift, "person-fusion": run_person_fusion}
    runs[args.run](args, cache)


if __name__ == "__main__":
    main()
