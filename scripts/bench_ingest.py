"""Ingestion throughput: facematch's ingest against the naive face_recognition loop, same images, one run.

The naive loop is face_recognition used as its README shows, in a pool of the same number of
processes: ``load_image_file``, ``face_locations(image, number_of_times_to_upsample=1)`` (HOG), then
``face_encodings(image, boxes)``. facematch ingests the same files (as custody images, read in place
through a manifest) into a temporary catalogue and index. Each side runs in its own child process, so
its CPU time (its processes and their workers, from ``getrusage``) and peak memory (``ru_maxrss``) are
its own. Printed per side: wall seconds, images/s, CPU seconds, images per CPU-second, images with a
face, peak RSS, and per-stage CPU times; then the ratios. On a shared machine wall times depend on the
other load (the load average is printed); CPU seconds much less so.

``--variant KEY=VALUE,...`` adds a facematch side with those ``DetectionSettings`` fields changed
(Python literals: ``custody_mtcnn_cnn_fallback=True,custody_rescue_turns=()``), in the same run;
``--no-naive`` leaves out the naive side (ratios are then to the first side).

``--dask`` adds a third side: facematch with the analysis on a Dask local cluster of the same number
of worker processes (``facematch.ingest.dask_backend.DaskAnalyser``; needs the ``dask`` extra).

``--ablation N`` also measures each change on its own, in this process, on the first N images:
detection (naive HOG upsample 1; facematch's previous custody cascade, upsample 1 then an upsample-2
retry on a miss; the current custody stages) and the descriptor network (dlib's against NumPy's).

Examples:
  nice -n 10 .venv/bin/python scripts/bench_ingest.py --images ../shared/data/frmdb-dev/mugshots --workers 2
  nice -n 10 .venv/bin/python scripts/bench_ingest.py --lfw 1000 --workers 2 --ablation 200
  nice -n 10 .venv/bin/python scripts/bench_ingest.py --images ../shared/data/frmdb-lowres/custody_photos \
      --no-naive --variant custody_mtcnn_cnn_fallback=True
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import multiprocessing
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIDES = ("naive", "facematch", "facematch-dask", "facematch-variant")
LABELS = {"naive": "naive (f_r)", "facematch": "facematch", "facematch-dask": "facematch+dask",
          "facematch-variant": "variant"}
DATA = Path(os.environ.get("FACEMATCH_TEST_DATA", REPO.parent / "shared" / "data"))


# -- the image set -------------------------------------------------------------------------------------


def write_manifest(args, folder: Path) -> Path:
    """A custody manifest (path,subject_id) of the chosen images, read in place."""
    from facematch.ingest.sources import custody_items

    if args.lfw:
        people = sorted(p for p in (DATA / "lfw").iterdir() if p.is_dir())
        files = sorted(f for person in people for f in person.glob("*.jpg"))
        random.Random(0).shuffle(files)
        rows = [(f, f.parent.name) for f in files[:args.lfw]]
    else:
        rows = [(i.path, i.subject_ref) for i in custody_items(args.images)]
    rows = [(Path(p).resolve(), s) for p, s in (rows[:args.limit] if args.limit else rows)]
    manifest = folder / "images.csv"
    manifest.write_text("path,subject_id\n" + "".join(f"{p},{s}\n" for p, s in rows))
    return manifest


def manifest_paths(manifest: Path) -> list[str]:
    return [line.split(",")[0] for line in manifest.read_text().splitlines()[1:]]


# -- one side, in a child process ------------------------------------------------------------------------


def _usage() -> dict:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
            "peak_rss_main_mib": me.ru_maxrss / 1024, "peak_rss_worker_mib": kids.ru_maxrss / 1024}


def _naive_init():
    global face_recognition
    import face_recognition  # loads its five models, as any user of its API does


def _naive_one(path: str):
    clock = time.thread_time
    t0 = clock()
    image = face_recognition.load_image_file(path)
    t1 = clock()
    boxes = face_recognition.face_locations(image, number_of_times_to_upsample=1)
    t2 = clock()
    face_recognition.face_encodings(image, boxes)
    t3 = clock()
    return path, len(boxes), (t1 - t0, t2 - t1, t3 - t2)


def run_naive(manifest: Path, workers: int) -> dict:
    paths = manifest_paths(manifest)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_naive_init) as pool:
        results = list(pool.imap_unordered(_naive_one, paths, chunksize=1))
        pool.close()
        pool.join()
    wall = time.perf_counter() - started
    stages = {name: [len(paths), sum(r[2][i] for r in results)]
              for i, name in enumerate(("decode", "detect", "landmarks+encode"))}
    return {"wall_s": wall, "images": len(paths), "found": {p: n for p, n, _ in results},
            "stages": {k: {"calls": c, "cpu_s": round(s, 3), "cpu_ms_per_call": round(1000 * s / c, 2)}
                       for k, (c, s) in stages.items()}}


def detection_changes(text: str) -> dict:
    """``DetectionSettings`` changes from "key=value,..." (values are Python literals; commas inside
    brackets belong to the value)."""
    from facematch.settings import DetectionSettings

    changes, depth, item = {}, 0, ""
    for char in text + ",":
        depth += (char in "([") - (char in ")]")
        if char == "," and depth == 0:
            if item:
                key, value = item.split("=", 1)
                changes[key.strip()] = ast.literal_eval(value.strip())
            item = ""
        else:
            item += char
    dataclasses.replace(DetectionSettings(), **changes)  # an unknown field fails here, before any run
    return changes


def run_facematch(manifest: Path, workers: int, *, dask: bool = False, detection: dict | None = None) -> dict:
    """facematch ingest; with ``dask`` the analysis runs in a Dask local cluster of ``workers`` processes
    (its start-up included, as the pool's is); ``detection`` changes ``DetectionSettings`` fields."""
    from facematch.api import Facematch
    from facematch.ingest.bulk import ingest
    from facematch.ingest.sources import custody_items
    from facematch.settings import Settings

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp, contextlib.ExitStack() as stack:
        settings = Settings(data_dir=Path(tmp) / "data", index_dir=Path(tmp) / "indexes", workers=workers)
        if detection:
            settings = settings.replace(detection=dataclasses.replace(settings.detection, **detection))
        started = time.perf_counter()
        fm = stack.enter_context(Facematch(settings=settings))
        analyse = _dask_analyser(stack, workers) if dask else None
        summary = ingest(fm.catalogue, fm.index_store, custody_items(manifest), kind="custody",
                         settings=fm.settings, user="bench", source=str(manifest), analyse=analyse)
        wall = time.perf_counter() - started
        rows = fm.catalogue.conn.execute(
            "SELECT i.original_path, COUNT(f.id) FROM images i LEFT JOIN faces f ON f.image_id = i.id "
            "GROUP BY i.id").fetchall()
    if summary.processed != len(manifest_paths(manifest)):
        raise SystemExit(f"facematch processed {summary.processed} of the images: {summary.to_dict()}")
    return {"wall_s": wall, "images": summary.processed, "found": {p: n for p, n in rows},
            "outcomes": summary.outcomes, "stages": summary.stages.report()}


def _dask_analyser(stack: contextlib.ExitStack, workers: int):
    import distributed

    from facematch.ingest.dask_backend import DaskAnalyser

    cluster = stack.enter_context(distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None))
    return DaskAnalyser(stack.enter_context(distributed.Client(cluster)))


def child_main(side: str, manifest: Path, workers: int, variant: str = "") -> None:
    load = os.getloadavg()[0]
    if side == "naive":
        result = run_naive(manifest, workers)
    else:
        result = run_facematch(manifest, workers, dask=side == "facematch-dask",
                               detection=detection_changes(variant) if side == "facematch-variant" else None)
    result.update(_usage(), side=side, load_before=load, load_after=os.getloadavg()[0])
    print(json.dumps(result))


def run_side(side: str, manifest: Path, workers: int, variant: str = "") -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--manifest", str(manifest),
           "--workers", str(workers), "--variant", variant]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- per-change ablation, in this process -----------------------------------------------------------------


def ablation(paths: list[str]) -> None:
    """Detection and encoding, before and after each change, image by image, one process (CPU time)."""
    import dlib
    import numpy as np
    from threadpoolctl import threadpool_limits

    from facematch.faces.descriptor_net import DescriptorNet
    from facematch.faces.detection import detect_faces
    from facematch.faces.imaging import downscale_for_detection, load_image
    from facematch.faces.models import DlibModels
    from facematch.settings import DetectionSettings

    models, settings, net = DlibModels(), DetectionSettings(), DescriptorNet().load()
    hog = models.hog_detector

    def previous_custody(pixels):  # facematch before this change: upsample 1 at <= 800 px, retry at 2
        small, scale = downscale_for_detection(pixels, 800)
        found = hog(small, 1 if scale == 1.0 else 0)
        return found if len(found) or max(pixels.shape[:2]) > 640 else hog(pixels, 2)

    variants = {"naive HOG upsample 1": lambda px: hog(px, 1),
                "previous custody cascade": previous_custody,
                "custody stages now": lambda px: detect_faces(models, px, settings, purpose="custody")}
    cpu = dict.fromkeys(variants, 0.0)
    found = {name: set() for name in variants}
    enc = {"dlib descriptor": 0.0, "NumPy descriptor": 0.0}
    faces, worst = 0, 0.0
    for path in paths:
        pixels = load_image(path).pixels
        for name, detect in variants.items():
            t = time.process_time()
            hits = detect(pixels)
            cpu[name] += time.process_time() - t
            if len(hits):
                found[name].add(path)
        rects = hog(pixels, 1)
        if len(rects):
            shapes = dlib.full_object_detections([models.landmarks_68(pixels, rects[0])])
            t = time.process_time()
            a = np.asarray(models.dlib_encoder.compute_face_descriptor(pixels, shapes, 1, 0.25)[0])
            enc["dlib descriptor"] += time.process_time() - t
            t = time.process_time()
            with threadpool_limits(1, "blas"):
                b = net.compute_face_descriptor(pixels, shapes, 1, 0.25)[0]
            enc["NumPy descriptor"] += time.process_time() - t
            faces, worst = faces + 1, max(worst, float(np.abs(a - b).max()))
    n, naive = len(paths), found["naive HOG upsample 1"]
    print(f"\nablation on {n} images, one process, CPU time")
    for name in variants:
        f = found[name]
        print(f"  detect  {name:28s} {1000 * cpu[name] / n:7.1f} ms/image   images with a face {len(f):5d}"
              f"   (vs naive: {len(naive - f)} lost, {len(f - naive)} gained)")
    for name, seconds in enc.items():
        print(f"  encode  {name:28s} {1000 * seconds / max(faces, 1):7.1f} ms/face    ({faces} faces)")
    print(f"  largest difference between the two descriptors: {worst:.2e} (per component)")


# -- report ----------------------------------------------------------------------------------------------


def report(runs: list[dict]) -> None:
    sides = [s for s in SIDES if any(r["side"] == s for r in runs)]
    by_side = {s: [r for r in runs if r["side"] == s] for s in sides}
    print(f"\n{'':34s}" + "".join(f"{LABELS[s]:>16s}" for s in sides) + f"   ratio to {LABELS[sides[0]]}")

    def row(label, key, fmt="{:.1f}", ratio=True):
        values = [_median([key(r) for r in by_side[s]]) for s in sides]
        text = "".join(f"{fmt.format(v):>16s}" for v in values)
        if ratio and values[0]:
            text += "   " + "  ".join(f"{v / values[0]:.2f}x" for v in values[1:])
        print(f"{label:34s}{text}")

    row("images", lambda r: r["images"], "{:.0f}", ratio=False)
    row("wall seconds", lambda r: r["wall_s"], ratio=False)
    row("images/s (wall)", lambda r: r["images"] / r["wall_s"])
    row("CPU seconds (all its processes)", lambda r: r["cpu_s"], ratio=False)
    row("images per CPU-second", lambda r: r["images"] / r["cpu_s"], "{:.2f}")
    row("images with a face", lambda r: sum(1 for n in r["found"].values() if n), "{:.0f}")
    row("faces stored / found", lambda r: sum(r["found"].values()), "{:.0f}")
    row("peak RSS, main process (MiB)", lambda r: r["peak_rss_main_mib"], "{:.0f}", ratio=False)
    row("peak RSS, largest worker (MiB)", lambda r: r["peak_rss_worker_mib"], "{:.0f}", ratio=False)
    row("load average before/after", lambda r: (r["load_before"] + r["load_after"]) / 2, "{:.1f}", ratio=False)
    fm = by_side["facematch"][-1]
    b = {p for p, n in fm["found"].items() if n}
    for other in (s for s in sides if s != "facematch"):
        a = {p for p, n in by_side[other][-1]["found"].items() if n}
        print(f"images with a face found only by {other}: {len(a - b)}, only by facematch: {len(b - a)}")
        changed = sorted(p for p in set(a) | set(b)
                         if by_side[other][-1]["found"].get(p, 0) != fm["found"].get(p, 0))
        if other == "facematch-variant":
            print(f"  images whose face count differs ({len(changed)}): {' '.join(changed)}")
    if fm.get("outcomes"):
        print(f"facematch outcomes: {fm['outcomes']}")
    for side in sides:
        run = by_side[side][-1]
        print(f"{side} stages (CPU ms per call, calls):  " + ",  ".join(
            f"{k} {v['cpu_ms_per_call']:.1f} ({v['calls']})" for k, v in run["stages"].items()))


def _median(values: list[float]) -> float:
    ordered, middle = sorted(values), len(values) // 2
    if not ordered:
        return 0.0
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path,
                        help="custody folder <subject>/<image> (default frmdb-dev/mugshots)")
    source.add_argument("--lfw", type=int, metavar="N", help="N LFW images (seeded shuffle) instead")
    parser.add_argument("--workers", type=int, default=2, help="processes for both sides (default 2)")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side, alternating order; medians shown")
    parser.add_argument("--ablation", type=int, default=0, metavar="N",
                        help="also measure each change on N images")
    parser.add_argument("--dask", action="store_true", help="also run facematch on a Dask local cluster")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--variant", default="", metavar="KEY=VALUE,...",
                        help="also run facematch with these DetectionSettings fields changed (Python literals)")
    parser.add_argument("--no-naive", action="store_true", help="leave out the naive face_recognition side")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child_main(args.side, args.manifest, args.workers, args.variant)
        return
    if args.variant:
        print(f"variant: DetectionSettings fields {detection_changes(args.variant)}")
    if not args.lfw and not args.images:
        args.images = DATA / "frmdb-dev" / "mugshots"
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        manifest = write_manifest(args, Path(tmp))
        n = len(manifest_paths(manifest))
        print(f"{n} images from {'LFW' if args.lfw else args.images}, {args.workers} workers, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        runs = []
        sides = [s for s in SIDES if (s != "facematch-dask" or args.dask) and (s != "naive" or not args.no_naive)
                 and (s != "facematch-variant" or args.variant)]
        for i in range(args.repeat):
            for side in (sides if i % 2 == 0 else sides[::-1]):
                runs.append(run_side(side, manifest, args.workers, args.variant))
                r = runs[-1]
                print(f"  {side:9s} run {i + 1}: {r['images']} images in {r['wall_s']:.1f} s "
                      f"({r['images'] / r['wall_s']:.2f}/s), CPU {r['cpu_s']:.1f} s", flush=True)
        report(runs)
        if args.ablation:
            ablation(manifest_paths(manifest)[:args.ablation])
        if args.json:
            args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
