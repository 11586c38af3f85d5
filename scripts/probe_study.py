"""Probe study: how well facematch finds and matches CCTV probe faces, one configuration at a time.

Runs the dev CCTV protocol (``../shared/data/protocols/frmdb-dev-cctv.json``: 105 gallery images of 21
FRMDB subjects, five eye-level views each, plus 1,000 LFW distractors; 140 CCTV crop probes, 35 of them
non-mated) and prints, per probe variant and per matching option:

- FTA: failure-to-acquire rate over all probes (no face found);
- rank-1/10/20 hit rates over the mated probes (a failure to acquire is a miss);
- FNIR at FPIR 0.05 (rank 1; the threshold is set on the non-mated searches' top distances);
- per-probe time: CPU seconds of ``FacePipeline.analyse`` (one core; robust to other load on the
  machine) and wall seconds.

Probe variants:

- ``full``: the crops as stored (163-1,119 px, the face about half the crop's width);
- ``coarse``: each crop shrunk (``cv2.INTER_AREA``) so its longer side is 80 px, which puts the face
  at about 30-50 px wide, the size of faces in 352x288 CCTV frames (``COARSE_SIDE``).

Gallery features (the custody cascade's largest face; 68- and 5-point chips, each described plain and
mirrored) are computed once per custody setting and cached under ``.cache/probe-study/``; probe
features are cached per variant and pipeline settings. Delete the folder to start afresh.

Examples::

    .venv/bin/python scripts/probe_study.py                       # default settings, both variants
    .venv/bin/python scripts/probe_study.py --variant coarse --no-cnn
    .venv/bin/python scripts/probe_study.py --stages              # recall and cost of each stage
    .venv/bin/python scripts/probe_study.py --timing              # FTA, stage of each face, CPU per probe
    .venv/bin/python scripts/probe_study.py --timing --no-mtcnn   # the same without the MTCNN stage
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from facematch.evaluation import metrics as M
from facematch.evaluation.protocols import load_protocol_json
from facematch.faces.detection import detect_faces, probe_stage_names, run_probe_stage
from facematch.faces.embedding import aligned_chips, chip_descriptors
from facematch.faces.imaging import load_image
from facematch.faces.pipeline import FacePipeline
from facematch.settings import DetectionSettings, EmbeddingSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEMATCH_TEST_DATA", ROOT.parent / "shared" / "data"))
PROTOCOL = DATA / "protocols" / "frmdb-dev-cctv.json"
CACHE = ROOT / ".cache" / "probe-study"
COARSE_SIDE = 80
#: Descriptor options compared on the same detections: (landmark model, mirrored-average, probe jitters).
DESCRIPTORS = {"68": ("68", False, 1), "68+flip": ("68", True, 1), "5": ("5", False, 1),
               "5+flip": ("5", True, 1), "5+jitter10": ("5", False, 10)}
FUSIONS = ("min", "top2-mean", "mean")
#: Median place of the HOG face box inside FRMDB's head crops (left, top, right, bottom as fractions of
#: the crop), over the 33 full-size crops where HOG at upsample 1 finds a face.
HEAD_TO_FACE = (0.23, 0.48, 0.73, 0.95)
_VERSION = 2  # bump when what is cached changes meaning

log = logging.getLogger("probe_study")


# ----------------------------------------------------------------------------------------- inputs

def coarse(pixels: np.ndarray, side: int = COARSE_SIDE) -> np.ndarray:
    """The image shrunk so its longer side is ``side`` px (area interpolation); unchanged if smaller."""
    h, w = pixels.shape[:2]
    if max(h, w) <= side:
        return pixels
    r = side / max(h, w)
    size = (max(1, round(w * r)), max(1, round(h * r)))
    return np.ascontiguousarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA))


VARIANTS = {"full": lambda p: p, "coarse": coarse}


def _key(*parts) -> str:
    text = json.dumps([_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached(name: str, key: str, compute):
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# probe study cache: never commit\n*\n")
    path = CACHE / f"{name}-{key}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    value = compute()
    path.write_bytes(pickle.dumps(value))
    return value


# ------------------------------------------------------------------------------------- features

def _descriptor_set(models, pixels, box, padding: float, *, jitters: bool = False) -> dict[str, np.ndarray]:
    """The descriptor options of :data:`DESCRIPTORS` for one face box (``jitters``: also "5+jitter10",
    which costs ten network passes; the gallery side uses "5" for it)."""
    out = {}
    for points in ("68", "5"):
        _, chips = aligned_chips(models, pixels, [box], landmark_points=points, padding=padding)
        both = chip_descriptors(models, chips + [c[:, ::-1].copy() for c in chips])
        out[points] = both[0]
        out[points + "+flip"] = (both[0] + both[1]) / 2
        if points == "5" and jitters:
            out["5+jitter10"] = chip_descriptors(models, chips, num_jitters=10)[0]
    return out


def gallery_features(protocol, settings: Settings) -> dict:
    """Per gallery image: acquired flag and every descriptor option (custody cascade, largest face)."""
    det = settings.detection
    custody = {k: v for k, v in dataclasses.asdict(det).items()
               if k.startswith(("custody", "retry")) or k == "upsample"}

    def compute():
        pipe = FacePipeline(settings)
        models = pipe._models
        ok, descs, detectors = [], {k: [] for k in DESCRIPTORS}, []
        started = time.perf_counter()
        for n, entry in enumerate(protocol.gallery):
            pixels = load_image(entry.path, max_pixels=settings.max_pixels).pixels
            found = detect_faces(models, pixels, det, purpose="custody")
            ok.append(bool(found))
            detectors.append(found[0].detector if found else None)
            d = _descriptor_set(models, pixels, found[0].box, settings.embedding.padding,
                                ) if found else {}
            for k in DESCRIPTORS:
                key = "5" if k == "5+jitter10" else k
                descs[k].append(d.get(key, np.zeros(128, np.float32)))
            if n % 100 == 99:
                log.info("gallery %d/%d (%.0f s)", n + 1, len(protocol.gallery), time.perf_counter() - started)
        return {"ok": np.array(ok), "detectors": detectors,
                "desc": {k: np.array(v, dtype=np.float32) for k, v in descs.items()}}

    return _cached("gallery", _key(custody, settings.embedding.padding), compute)


def probe_features(protocol, settings: Settings, variant: str, *, marked: bool = False,
                   jitters: bool = False) -> dict:
    """Per probe: the pipeline's own result (timed) and every descriptor option for its face.

    ``marked``: the whole crop is given as an investigator-marked box (the ``--box`` path); FRMDB's
    crops were drawn around the head by the dataset's authors, as an investigator would.
    """
    from facematch.faces import pipeline as pipeline_module
    from facematch.types import FaceBox

    def compute():
        pipe = FacePipeline(settings)
        pipe.analyse(np.zeros((64, 64, 3), np.uint8), purpose="probe")  # load models outside the timing
        rows = []
        for entry in protocol.probes:
            pixels = VARIANTS[variant](load_image(entry.path, max_pixels=settings.max_pixels).pixels)
            cpu, wall = time.process_time(), time.perf_counter()
            box = FaceBox(0, 0, pixels.shape[1], pixels.shape[0]) if marked else None
            faces = pipe.analyse(pixels, purpose="probe", box=box)
            row = {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "shape": pixels.shape}
            if faces:
                face = faces[0]
                row.update(box=face.box, detector=face.detector, quality=face.quality_score,
                           embedding=face.embedding,
                           desc=_descriptor_set(pipe._models, pixels, face.box, settings.embedding.padding,
                                                jitters=jitters))
                if marked and face.detector == "marked":  # the drawn box, moved to where faces sit in it
                    h, w = pixels.shape[:2]
                    l, t, r, b = HEAD_TO_FACE
                    inner = FaceBox(round(l * w), round(t * h), round(r * w), round(b * h))
                    row["desc_head_to_face"] = _descriptor_set(pipe._models, pixels, inner,
                                                               settings.embedding.padding)
            rows.append(row)
            log.debug("%s %s: %s %.2f s", variant, entry.id, row.get("detector"), row["cpu"])
        return rows

    key = _key(variant, settings.describe_pipeline(), marked and (0.0, 0.0, 1.0, 1.0),
               marked and pipeline_module.BOX_DETECT_PX, jitters)
    return _cached(f"probes-{variant}{'-marked' if marked else ''}", key, compute)


# -------------------------------------------------------------------------------------- scoring

def fuse(distances: np.ndarray, codes: np.ndarray, n_subjects: int, rule: str) -> np.ndarray:
    """Subject distances ``(n_subjects,)`` from one probe's image distances ``(g,)`` (inf = no template).

    ``rule``: "min" (closest image), "top2-mean" (mean of the two closest), "mean" (all images).
    """
    out = np.full(n_subjects, np.inf)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for group in np.split(order, bounds):
        d = np.sort(distances[group])
        d = d[np.isfinite(d)]
        if d.size:
            out[codes[group[0]]] = {"min": d[0], "top2-mean": d[:2].mean(), "mean": d.mean()}[rule]
    return out


def outcomes_for(protocol, gallery: dict, probes: list[dict], descriptor: str, rule: str,
                 *, tnorm: bool = False, gallery_descriptor: str | None = None) -> list[M.SearchOutcome]:
    """Search outcomes of every probe with one descriptor option, fusion rule and score normalisation.

    ``tnorm``: each probe's subject distances are standardised by the mean and standard deviation of
    its distances to all subjects (a per-probe cohort), which changes thresholds, not ranks.
    """
    subjects, codes = np.unique([g.subject for g in protocol.gallery], return_inverse=True)
    if gallery_descriptor is None:
        gallery_descriptor = "5" if descriptor == "5+jitter10" else descriptor
    g = gallery["desc"][gallery_descriptor].astype(np.float64)
    out = []
    for entry, row in zip(protocol.probes, probes):
        if "desc" not in row:
            out.append(M.SearchOutcome(entry.id, entry.subject, (), acquired=False))
            continue
        d = np.linalg.norm(g - row["desc"][descriptor].astype(np.float64), axis=1)
        d[~gallery["ok"]] = np.inf
        fused = fuse(d, codes, len(subjects), rule)
        if tnorm:
            finite = fused[np.isfinite(fused)]
            fused = (fused - finite.mean()) / (finite.std() or 1.0)
        order = np.argsort(fused, kind="stable")[:50]
        out.append(M.SearchOutcome(entry.id, entry.subject,
                                   tuple((subjects[j], float(fused[j])) for j in order if np.isfinite(fused[j]))))
    return out


def summarise(outcomes: list[M.SearchOutcome]) -> dict:
    """FTA, rank-1/10/20 and FNIR at FPIR 0.05 of one run."""
    ranks = M.cmc(outcomes, (1, 10, 20))
    point = M.fnir_at_fpir(outcomes, (0.05,))[0]
    return {"fta": float(np.mean([not o.acquired for o in outcomes])), "rank1": ranks[1], "rank10": ranks[10],
            "rank20": ranks[20], "fnir@fpir0.05": point.fnir}


def _line(name: str, s: dict) -> str:
    return (f"{name:<34} FTA {100 * s['fta']:5.1f}%  rank-1 {100 * s['rank1']:5.1f}%  rank-10 "
            f"{100 * s['rank10']:5.1f}%  rank-20 {100 * s['rank20']:5.1f}%  FNIR@FPIR.05 "
            f"{100 * s['fnir@fpir0.05']:5.1f}%")


# ---------------------------------------------------------------------------------------- stages

def stage_study(protocol, settings: Settings, variants: list[str]) -> None:
    """Recall (share of probes where the stage alone finds a face) and mean CPU seconds of each stage."""
    from facematch.faces.models import DlibModels

    models = DlibModels()
    for variant in variants:
        print(f"\n== stages, {variant} probes ==")
        for name in probe_stage_names(settings.detection):
            found, cpu = 0, []
            for entry in protocol.probes:
                pixels = VARIANTS[variant](load_image(entry.path, max_pixels=settings.max_pixels).pixels)
                started = time.process_time()
                hits = run_probe_stage(name, models, pixels, settings.detection)
                cpu.append(time.process_time() - started)
                found += bool(hits)
            print(f"{name:<16} finds a face in {found:3d}/{len(protocol.probes)} "
                  f"({100 * found / len(protocol.probes):5.1f}%), mean {np.mean(cpu):.3f} s CPU, "
                  f"max {np.max(cpu):.3f} s")


def timing_study(protocol, settings: Settings, variants: list[str]) -> None:
    """The probe side as an investigator runs it (``FacePipeline.analyse``, models loaded): failure to
    acquire, which stage found each face, and CPU seconds per probe (mean, 95th percentile, max)."""
    for variant in variants:
        pipe = FacePipeline(settings)
        pipe.analyse(np.zeros((64, 64, 3), np.uint8), purpose="probe")  # load models outside the timing
        cpu, stages = [], {}
        for entry in protocol.probes:
            pixels = VARIANTS[variant](load_image(entry.path, max_pixels=settings.max_pixels).pixels)
            started = time.process_time()
            faces = pipe.analyse(pixels, purpose="probe")
            cpu.append(time.process_time() - started)
            stage = faces[0].detector if faces else "no face"
            stages[stage] = stages.get(stage, 0) + 1
        cpu_s = np.array(cpu)
        print(f"== {variant} probes: failure to acquire {stages.get('no face', 0)}/{len(cpu)} "
              f"({100 * stages.get('no face', 0) / len(cpu):.1f}%); CPU per probe mean {cpu_s.mean():.2f} s, "
              f"p95 {np.quantile(cpu_s, 0.95):.2f} s, max {cpu_s.max():.2f} s")
        print(f"   faces by stage: {dict(sorted(stages.items(), key=lambda kv: -kv[1]))}")


# -------------------------------------------------------------------------------- coarse protocol

def write_coarse_protocol(protocol, folder: Path) -> Path:
    """The dev protocol with its probes shrunk by :func:`coarse` (lossless PNG files under ``folder``),
    for ``facematch evaluate``; gallery entries and probe ids are unchanged. Returns the JSON's path."""
    from facematch.evaluation.protocols import ProbeEntry, Protocol, save_protocol_json

    probes = []
    for entry in protocol.probes:
        out = folder / "probes" / Path(entry.id).with_suffix(".png")
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            pixels = coarse(load_image(entry.path, max_pixels=10**8).pixels)
            cv2.imwrite(str(out), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        probes.append(ProbeEntry(entry.id, out, entry.subject, entry.attributes))
    coarse_protocol = Protocol(f"{protocol.name}-coarse{COARSE_SIDE}",
                               f"{protocol.description} Probes shrunk (area interpolation) so their longer side "
                               f"is {COARSE_SIDE} px: faces about 30-50 px wide, as in 352x288 CCTV frames.",
                               protocol.gallery, probes, protocol.root)
    return save_protocol_json(coarse_protocol, folder / f"frmdb-dev-cctv-coarse{COARSE_SIDE}.json")


# ------------------------------------------------------------------------------------------ main

def settings_from(args) -> Settings:
    det = DetectionSettings(**{k: v for k, v in (("cnn_fallback", args.cnn), ("landmarks", args.landmarks),
                                                 ("mtcnn", args.mtcnn)) if v is not None})
    emb = EmbeddingSettings(**{k: v for k, v in (("probe_flip", args.flip), ("probe_jitters", args.probe_jitters))
                               if v is not None})
    return Settings(detection=det, embedding=emb)


def report(protocol, settings: Settings, variant: str, gallery: dict, *, marked: bool = False,
           jitters: bool = False) -> None:
    probes = probe_features(protocol, settings, variant, marked=marked, jitters=jitters)
    cpu = np.array([r["cpu"] for r in probes])
    wall = np.array([r["wall"] for r in probes])
    detectors: dict[str, int] = {}
    for r in probes:
        detectors[r.get("detector", "none")] = detectors.get(r.get("detector", "none"), 0) + 1
    print(f"\n== {variant} probes{' (whole crop marked as the face box)' if marked else ''}: per-probe time {cpu.mean():.3f} s CPU (max {cpu.max():.2f}), "
          f"{wall.mean():.3f} s wall; faces by stage {detectors}")
    subjects, codes = np.unique([g.subject for g in protocol.gallery], return_inverse=True)
    pipeline_rows = [{**r, "desc": {"pipeline": r["embedding"]}} if "embedding" in r else r for r in probes]
    gal = {"ok": gallery["ok"], "desc": {"pipeline": gallery["desc"][settings.detection.landmarks]}}
    print(_line("pipeline as configured (min)", summarise(outcomes_for(protocol, gal, pipeline_rows,
                                                                        "pipeline", "min"))))
    for descriptor in [d for d in DESCRIPTORS if d in probes_desc_keys(probes)]:
        for rule in FUSIONS:
            print(_line(f"{descriptor}, {rule}", summarise(outcomes_for(protocol, gallery, probes, descriptor,
                                                                       rule))))
    for points in ("68", "5"):
        print(_line(f"{points}+flip on the probe only, min", summarise(outcomes_for(
            protocol, gallery, probes, f"{points}+flip", "min", gallery_descriptor=points))))
    if marked:
        fallback = [dict(r, desc=r.get("desc_head_to_face", r.get("desc"))) for r in probes]
        for descriptor in ("68", "5"):
            print(_line(f"{descriptor}, fallback box moved to the face", summarise(
                outcomes_for(protocol, gallery, fallback, descriptor, "min"))))
    for descriptor in ("68", "68+flip", "5", "5+flip"):
        print(_line(f"{descriptor}, min, t-norm", summarise(outcomes_for(protocol, gallery, probes, descriptor,
                                                                        "min", tnorm=True))))


def probes_desc_keys(probes: list[dict]) -> set[str]:
    return next((set(r["desc"]) for r in probes if "desc" in r), set())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=[*VARIANTS, "both"], default="both")
    parser.add_argument("--cnn", action=argparse.BooleanOptionalAction, default=None,
                        help="CNN stage of the probe cascade (default: settings default)")
    parser.add_argument("--mtcnn", action=argparse.BooleanOptionalAction, default=None,
                        help="MTCNN stage of the probe cascade (default: settings default)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="probe flip: average each probe descriptor with its mirror image's")
    parser.add_argument("--landmarks", choices=["68", "5"], default=None)
    parser.add_argument("--probe-jitters", type=int, default=None)
    parser.add_argument("--marked", action="store_true",
                        help="give each probe's whole crop as an investigator-marked box (the --box path)")
    parser.add_argument("--jitter-study", action="store_true",
                        help="also describe probes with 10 jitters (ten network passes per probe)")
    parser.add_argument("--stages", action="store_true", help="recall and cost of each probe stage alone")
    parser.add_argument("--timing", action="store_true",
                        help="only the probe cascade as configured: failure to acquire, faces by stage, CPU per probe")
    parser.add_argument("--write-coarse-protocol", metavar="DIR", type=Path,
                        help="write the coarse probes and a protocol JSON for facematch evaluate, then stop")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not PROTOCOL.exists():
        print(f"no protocol at {PROTOCOL}: set FACEMATCH_TEST_DATA", file=sys.stderr)
        return 2
    protocol = load_protocol_json(PROTOCOL)
    if args.write_coarse_protocol:
        print(write_coarse_protocol(protocol, args.write_coarse_protocol))
        return 0
    settings = settings_from(args)
    variants = list(VARIANTS) if args.variant == "both" else [args.variant]
    print(f"settings: {json.dumps(settings.describe_pipeline())}")
    if args.stages:
        stage_study(protocol, settings, variants)
        return 0
    if args.timing:
        timing_study(protocol, settings, variants)
        return 0
    gallery = gallery_features(protocol, settings)
    print(f"gallery: {int(gallery['ok'].sum())}/{len(gallery['ok'])} images enrolled")
    for variant in variants:
        report(protocol, settings, variant, gallery, marked=args.marked, jitters=args.jitter_study)
    return 0


if __name__ == "__main__":
    sys.exit(main())
