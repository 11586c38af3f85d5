"""Benchmark facematch's FAISS index layer (facematch.store.index) on synthetic galleries shaped like dlib descriptors.

The synthetic descriptors come from a two-level Gaussian fitted to real dlib descriptors of LFW faces
(computed once with face_recognition and cached under build/bench/): identity centres ~ N(mean, B),
images of an identity ~ centre + N(0, W), with B and W the full between- and within-identity covariances,
so nearest-neighbour structure (same-person pairs closer than different-person pairs) is realistic.
Each gallery identity has 1 + Poisson(1) images (custody records: one or a few arrests per person).
Queries are new images of gallery identities (80%) and of unseen people (20%).

Per gallery size it reports, for the Flat baseline (where its raw vectors fit --flat-max-gb) and for the
index `choose_index_spec` picks (swept over nprobe and, for IVF-PQ, the shortlist factor): build and load
time, memory (RSS of anonymous memory added by loading the saved index, and file sizes), single-query
p50/p99 latency at k=50 with 1 faiss thread, batch QPS with --threads threads, and recall@1/10/50 against
exact search (ground truth by blockwise brute force in float64 for --queries queries).
Recall@k (R@k) = |returned top-k & true top-k| / k, averaged over queries (the strict "k-recall@k");
NN-in-top-10 = share of queries whose true nearest neighbour is among the 10 returned ("1-recall@10").

Example (quick):  nice -n 10 .venv/bin/python scripts/bench_search.py --sizes 1e5
Example (scale):  nice -n 10 .venv/bin/python scripts/bench_search.py --sizes 1e6,1e7 --flat-sweep
"""

from __future__ import annotations

import os

# Passive OpenMP waiting: on a shared 2-core machine, spinning threads at faiss's barriers steal the
# CPU their partner needs (measured: k-means 20.5 s spinning vs 12.6 s passive at load 11).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import ctypes
import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facematch.store.index import FaceIndex, IndexSpec, choose_index_spec, set_faiss_threads

log = logging.getLogger("bench_search")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LFW = REPO.parent / "shared" / "data" / "lfw"
DEFAULT_WORK = REPO / "build" / "bench"
CHUNK = 1 << 20  # gallery rows generated (and ground truth scanned) per block
K = 50


# -- real descriptors and the fitted model -----------------------------------------------------------
def embed_lfw(lfw_dir: Path, n_images: int, per_identity: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """dlib descriptors of LFW faces: identities with >= 2 images, evenly spread over the sorted names,
    up to `per_identity` images each, about `n_images` in all. Returns ((n, 128) float32, labels (n,))."""
    import face_recognition  # heavy import, only when the cache is missing

    people = [p for p in sorted(lfw_dir.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2]
    n_people = min(len(people), max(1, n_images // per_identity))
    chosen = [people[i] for i in np.linspace(0, len(people) - 1, n_people).round().astype(int)]
    vectors, labels = [], []
    t0 = time.perf_counter()
    for label, person in enumerate(chosen):
        for image_path in sorted(person.glob("*.jpg"))[:per_identity]:
            image = face_recognition.load_image_file(image_path)
            boxes = face_recognition.face_locations(image, number_of_times_to_upsample=1)
            if not boxes:
                continue
            centre = np.array(image.shape[:2]) / 2  # LFW is centred on its labelled face
            box = min(boxes, key=lambda b: np.hypot((b[0] + b[2]) / 2 - centre[0], (b[1] + b[3]) / 2 - centre[1]))
            vectors.append(face_recognition.face_encodings(image, [box])[0])
            labels.append(label)
        if label % 50 == 0:
            log.info("embedded %d faces of %d identities (%.0f s)", len(vectors), label + 1,
                     time.perf_counter() - t0)
    return np.asarray(vectors, dtype=np.float32), np.asarray(labels, dtype=np.int64)


def real_descriptors(lfw_dir: Path, work_dir: Path, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Real descriptors from the cache `work_dir/lfw_descriptors_<n>.npz`, computing it on first use."""
    cache = work_dir / f"lfw_descriptors_{n_images}.npz"
    if not cache.exists():
        if not lfw_dir.is_dir():
            raise SystemExit(f"LFW not found at {lfw_dir} (needed once to fit the descriptor distribution)")
        vectors, labels = embed_lfw(lfw_dir, n_images)
        work_dir.mkdir(parents=True, exist_ok=True)
        np.savez(cache, vectors=vectors, labels=labels)
    data = np.load(cache)
    return data["vectors"], data["labels"]


@dataclass(frozen=True)
class DescriptorModel:
    """Two-level Gaussian: centre = mean + z @ between.T, image = centre + z @ within.T (z standard normal)."""

    mean: np.ndarray  # (dim,)
    between: np.ndarray  # (dim, dim) square-root factor of the between-identity covariance
    within: np.ndarray  # (dim, dim) square-root factor of the within-identity covariance

    def centres(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.mean + rng.standard_normal((n, len(self.mean)), np.float32) @ self.between.T

    def images(self, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal(centres.shape, np.float32) @ self.within.T
        return (centres + noise).astype(np.float32)


def _sqrt_psd(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    return (vectors * np.sqrt(np.clip(values, 0, None))).astype(np.float32)


def fit_model(vectors: np.ndarray, labels: np.ndarray) -> DescriptorModel:
    """Fit between/within covariances on identities with >= 2 descriptors (method of moments: the
    covariance of identity means, less the within-covariance share that the mean of n_i images keeps)."""
    x = vectors.astype(np.float64)
    groups = [np.flatnonzero(labels == u) for u in np.unique(labels)]
    groups = [g for g in groups if len(g) >= 2]
    means = np.array([x[g].mean(0) for g in groups])
    deviations = np.concatenate([(x[g] - x[g].mean(0)) * np.sqrt(len(g) / (len(g) - 1)) for g in groups])
    within = deviations.T @ deviations / len(deviations)
    between = np.cov(means.T) - within * np.mean([1 / len(g) for g in groups])
    return DescriptorModel(means.mean(0).astype(np.float32), _sqrt_psd(between), _sqrt_psd(within))


def _pair_stats(x: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Mean same-identity and different-identity distances, and the rate at which the nearest other
    descriptor belongs to the same identity (among descriptors whose identity has another)."""
    x = x.astype(np.float64)
    sq = (x**2).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    np.fill_diagonal(d, np.inf)
    has_mate = same.any(1)
    nn_same = (labels[d.argmin(1)] == labels)[has_mate].mean()
    return d[same].mean(), d[~same & np.isfinite(d)].mean(), nn_same


def check_fit(model: DescriptorModel, vectors: np.ndarray, labels: np.ndarray) -> None:
    """Print real vs synthetic statistics for samples with the same identity structure."""
    rng = np.random.default_rng(7)
    _, label_index = np.unique(labels, return_inverse=True)
    synthetic = model.images(rng, model.centres(rng, label_index.max() + 1)[label_index])
    for name, x in (("real LFW", vectors), ("synthetic", synthetic)):
        same, diff, nn = _pair_stats(x, labels)
        print(f"  {name:10s}: norm {np.linalg.norm(x, axis=1).mean():.3f}  same-person {same:.3f}  "
              f"different-person {diff:.3f}  nearest-other-is-same-person {nn:.2f}  (n={len(x)})")


# -- synthetic gallery and queries ---------------------------------------------------------------------
def _chunk_identities(model: DescriptorModel, seed: int, chunk: int, rows: int):
    """Identity of each of `rows` gallery rows of a chunk, and the identities' centres (deterministic)."""
    rng = np.random.default_rng([seed, chunk, 0])
    sizes = 1 + rng.poisson(1.0, rows)  # more identities than needed; the tail is cut
    labels = np.repeat(np.arange(rows), sizes)[:rows]
    return labels, model.centres(rng, labels[-1] + 1)


def gallery(model: DescriptorModel, n: int, seed: int, work_dir: Path) -> np.ndarray:
    """(n, dim) float32 synthetic gallery (row number = face id), memory-mapped from a cached .npy file."""
    path = work_dir / f"gallery_{n}_{seed}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, len(model.mean)))
    t0 = time.perf_counter()
    for chunk, start in enumerate(range(0, n, CHUNK)):
        rows = min(CHUNK, n - start)
        labels, centres = _chunk_identities(model, seed, chunk, rows)
        out[start : start + rows] = model.images(np.random.default_rng([seed, chunk, 1]), centres[labels])
    out.flush()
    del out
    tmp.rename(path)
    log.info("generated %d gallery vectors in %.0f s", n, time.perf_counter() - t0)
    return np.load(path, mmap_mode="r")


def queries(model: DescriptorModel, n: int, seed: int, count: int, mated: float = 0.8) -> np.ndarray:
    """(count, dim) float32 probes: new images of random gallery identities, then of unseen people."""
    rng = np.random.default_rng([seed, 99])
    n_mated = int(round(count * mated))
    rows = np.sort(rng.choice(n, n_mated, replace=False))
    centres = [model.centres(rng, count - n_mated)]
    for chunk in np.unique(rows // CHUNK):
        labels, chunk_centres = _chunk_identities(model, seed, chunk, min(CHUNK, n - chunk * CHUNK))
        centres.insert(-1, chunk_centres[labels[rows[rows // CHUNK == chunk] - chunk * CHUNK]])
    centres = np.concatenate(centres)
    return model.images(rng, centres.astype(np.float32))


def exact_knn(base: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Ids (m, k) of the exact k nearest rows of `base` (n, dim), scanned in blocks: a float32 expansion
    shortlists 2k per block, then float64 distances decide. Row number = id."""
    m = len(q)
    best_d = np.full((m, 2 * k), np.inf)
    best_i = np.full((m, 2 * k), -1, np.int64)
    q64 = q.astype(np.float64)
    for start in range(0, len(base), CHUNK):
        block = np.asarray(base[start : start + CHUNK], dtype=np.float32)
        approx = (block**2).sum(1)[None, :] - 2 * q @ block.T
        take = min(2 * k, len(block))
        cand = np.argpartition(approx, take - 1, axis=1)[:, :take]
        exact = np.linalg.norm(block[cand].astype(np.float64) - q64[:, None, :], axis=2)
        all_d = np.concatenate([best_d, exact], axis=1)
        all_i = np.concatenate([best_i, cand + start], axis=1)
        order = np.argsort(all_d, axis=1)[:, : 2 * k]
        best_d, best_i = np.take_along_axis(all_d, order, 1), np.take_along_axis(all_i, order, 1)
    return best_i[:, :k]


# -- measurements --------------------------------------------------------------------------------------
def _rss_mb() -> tuple[float, float]:
    """(anonymous, file-backed) resident memory of this process in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["RssAnon"].split()[0]) / 1024, int(fields["RssFile"].split()[0]) / 1024


def _release_memory() -> None:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def latency_ms(index: FaceIndex, q: np.ndarray, budget_s: float, **knobs) -> dict:
    """Single-query k=50 latency over the queries, stopping after `budget_s` (>= 20 queries): wall-clock
    p50/p99 and the calling thread's CPU time p50/p99 (faiss runs in it with 1 thread; on a busy shared
    machine CPU time estimates the latency on an idle core, wall-clock includes waiting for the CPU)."""
    wall, cpu, t_start = [], [], time.perf_counter()
    for i in range(len(q)):
        t0, c0 = time.perf_counter(), time.thread_time()
        index.search(q[i : i + 1], K, **knobs)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        if i >= 19 and time.perf_counter() - t_start > budget_s:
            break
    pct = lambda xs, p: float(np.percentile(xs, p) * 1e3)  # noqa: E731
    return {"p50_ms": pct(wall, 50), "p99_ms": pct(wall, 99), "cpu50_ms": pct(cpu, 50), "cpu99_ms": pct(cpu, 99),
            "n_latency": len(wall)}


def measure_settings(index: FaceIndex, q: np.ndarray, truth: np.ndarray, args, settings: list[dict]) -> list[dict]:
    """Latency, batch QPS and recall of one index for each search setting (nprobe, shortlist_factor)."""
    rows = []
    for knobs in settings:
        set_faiss_threads(1)
        lat = latency_ms(index, q, args.latency_budget, **knobs)
        set_faiss_threads(args.threads)
        t0 = time.perf_counter()
        found = {k: index.search(q, k, **knobs)[1] for k in (1, 10, K)}
        qps = 3 * len(q) / (time.perf_counter() - t0)
        rows.append({**knobs, **lat, "qps": qps,
                     **{f"r@{k}": recall(found[k], truth, k) for k in (1, 10, K)},
                     "nn@10": float(np.mean(found[10] == truth[:, :1]) * 10)})
    return rows


def bench_index(name: str, spec: IndexSpec, base: np.ndarray, q: np.ndarray, truth: np.ndarray, args,
                settings: list[dict]) -> dict:
    """Build, save, reload and measure one index; returns its figures."""
    _release_memory()
    set_faiss_threads(args.threads)
    anon0, _ = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    index = FaceIndex.build(np.arange(len(base), dtype=np.int64), base, spec=spec)
    build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    build_mb = _rss_mb()[0] - anon0
    path = args.work_dir / f"bench_{name}.faiss"
    index.save(path, {"bench": name})
    del index
    _release_memory()
    anon0, file0 = _rss_mb()
    t0 = time.perf_counter()
    index, _ = FaceIndex.load(path)
    load_s = time.perf_counter() - t0
    load_mb = _rss_mb()[0] - anon0
    rows = measure_settings(index, q, truth, args, settings)
    files = {p.suffix: p.stat().st_size / 2**20 for p in (path, path.with_suffix(".vectors")) if p.exists()}
    result = {"name": name, "spec": spec, "build_s": build_s, "build_cpu": build_cpu, "build_mb": build_mb,
              "load_s": load_s,
              "load_mb": load_mb, "page_cache_mb": _rss_mb()[1] - file0, "files_mb": files, "rows": rows}
    del index
    for p in path.parent.glob(f"bench_{name}.*"):
        p.unlink()
    return result


def print_result(n: int, r: dict) -> None:
    spec = r["spec"]
    files = ", ".join(f"{suffix} {mb:.0f} MB" for suffix, mb in r["files_mb"].items())
    print(f"\n[{n:,}] {r['name']}: {spec.kind} {spec.params}")
    print(f"  build {r['build_s']:.1f} s wall, {r['build_cpu']:.1f} s CPU (+{r['build_mb']:.0f} MB RAM while "
          f"building); load {r['load_s']:.1f} s; "
          f"RAM after load +{r['load_mb']:.0f} MB anonymous (+{r['page_cache_mb']:.0f} MB mapped file pages "
          f"touched while searching); files: {files}")
    print(f"  load average now {os.getloadavg()[0]:.1f}")
    print("   nprobe shortlist | wall p50   p99 | CPU p50   p99 (n)  | batch QPS | R@1   R@10  R@50  NN-in-top-10")
    for row in r["rows"]:
        print(f"  {row.get('nprobe') or '-':>7} {row.get('shortlist_factor') or '-':>9} | {row['p50_ms']:8.2f} "
              f"{row['p99_ms']:5.1f} | {row['cpu50_ms']:7.2f} {row['cpu99_ms']:5.1f} ({row['n_latency']:3d}) | "
              f"{row['qps']:9.0f} | {row['r@1']:.3f} {row['r@10']:.3f} {row['r@50']:.3f} {row['nn@10']:.3f}")


def flat_sweep(model: DescriptorModel, args) -> None:
    """Single-query Flat p50 (1 thread, k=50) against gallery size: where exact search passes ~5 ms."""
    set_faiss_threads(1)
    rng = np.random.default_rng(5)
    q = model.images(rng, model.centres(rng, 100))
    print("\nFlat single-query latency (1 thread, k=50):")
    for n in (25_000, 50_000, 75_000, 100_000, 150_000, 200_000, 400_000):
        x = model.images(rng, model.centres(rng, n))
        index = FaceIndex.build(np.arange(n), x, spec=IndexSpec("flat"))
        lat = latency_ms(index, q, 10.0)
        print(f"  n={n:>7,}  wall p50 {lat['p50_ms']:6.2f} ms  p99 {lat['p99_ms']:6.2f} ms | "
              f"CPU p50 {lat['cpu50_ms']:6.2f} ms  p99 {lat['cpu99_ms']:6.2f} ms")


def settings_for(spec: IndexSpec, args) -> list[dict]:
    """Search settings to sweep: nprobe as fractions of nlist (and shortlist factors for IVF-PQ)."""
    if spec.kind == "flat":
        return [{}]
    probes = {max(1, round(f * spec.params["nlist"])) for f in args.probe_fractions}
    probes = sorted(probes | {spec.params["nprobe"]})  # the fractions swept, and the spec's own default
    if spec.kind == "ivf_flat":
        return [{"nprobe": p} for p in probes]
    return [{"nprobe": p, "shortlist_factor": f} for p in probes for f in args.shortlist]


def run_size(model: DescriptorModel, n: int, args) -> None:
    t0 = time.perf_counter()
    base = gallery(model, n, args.seed, args.work_dir)
    q = queries(model, n, args.seed, args.queries)
    truth = exact_knn(base, q, K)
    log.info("ground truth for %d queries over %d vectors in %.0f s", len(q), n, time.perf_counter() - t0)
    print(f"\n[{n:,}] load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    if n * base.shape[1] * 4 <= args.flat_max_gb * 2**30:
        print_result(n, bench_index("flat", IndexSpec("flat"), base, q, truth, args, [{}]))
    specs = {"auto": choose_index_spec(n, dim=base.shape[1])}
    nlist = specs["auto"].params.get("nlist", 1024)
    alternatives = {"ivf_flat": IndexSpec("ivf_flat", {"nlist": nlist}),
                    "ivf_pq8": IndexSpec("ivf_pq", {"nlist": nlist, "m": 32, "nbits": 8})}
    specs.update({kind: alternatives[kind] for kind in args.also})
    for name, spec in specs.items():
        if spec.kind != "flat":
            print_result(n, bench_index(name, spec, base, q, truth, args, settings_for(spec, args)))
    if not args.keep_gallery:
        (args.work_dir / f"gallery_{n}_{args.seed}.npy").unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    floats = lambda s: [int(float(v)) for v in s.split(",") if v]  # noqa: E731
    parser.add_argument("--sizes", type=floats, default=[100_000], help="gallery sizes, e.g. 1e6,1e7")
    parser.add_argument("--queries", type=int, default=200, help="queries with exact ground truth")
    parser.add_argument("--probe-fractions", type=lambda s: [float(v) for v in s.split(",")],
                        default=[0.25, 0.3125, 0.375, 0.5], help="shares of IVF cells scanned, swept")
    parser.add_argument("--shortlist", type=floats, default=[10, 20], help="IVF-PQ shortlist factors, swept")
    parser.add_argument("--also", type=lambda s: s.split(","), default=[],
                        help="other kinds to measure besides the chosen one: ivf_flat, ivf_pq8")
    parser.add_argument("--threads", type=int, default=2, help="faiss threads for building and batch search")
    parser.add_argument("--flat-max-gb", type=float, default=6.0, help="largest Flat baseline (raw GB)")
    parser.add_argument("--latency-budget", type=float, default=20.0, help="seconds of single queries per setting")
    parser.add_argument("--flat-sweep", action="store_true", help="also measure Flat latency vs size")
    parser.add_argument("--keep-gallery", action="store_true", help="keep the generated gallery files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW)
    parser.add_argument("--lfw-images", type=int, default=1500)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    vectors, labels = real_descriptors(args.lfw_dir, args.work_dir, args.lfw_images)
    model = fit_model(vectors, labels)
    print(f"Descriptor model fitted to {len(vectors)} LFW descriptors of {len(np.unique(labels))} people:")
    check_fit(model, vectors, labels)
    if args.flat_sweep:
        flat_sweep(model, args)
    for n in args.sizes:
        run_size(model, n, args)


if __name__ == "__main__":
    main()
