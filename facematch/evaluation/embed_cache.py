"""Embedding evaluation images with one system, in parallel, cached on disk.

An evaluation over LFW embeds ~7,700 images at 0.15-0.3 s each per core, and the comparison with the
baseline and every calibration need the same embeddings again. :func:`embed_images` therefore keeps
what each system made of each image in a small SQLite file, keyed by the image's SHA-256 and a hash of
everything that changes the result (system, model name and version, pipeline settings, the source of
the pipeline's modules, detection purpose, fallback box, :data:`CACHE_VERSION`). Change any of them and
the images are embedded afresh.

Images are embedded in ``workers`` spawned processes, one pipeline per process (dlib objects are not
shared); results are written to the cache as they arrive, so an interrupted run resumes where it
stopped. The cache folder holds a ``.gitignore`` of ``*`` so nothing in it is ever committed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import multiprocessing
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facematch.errors import FacematchError, ImageUnreadable, InvalidArgument
from facematch.evaluation.baseline import BASELINE_NAME, baseline_description, baseline_version, readme_embedding
from facematch.faces.imaging import sha256_file
from facematch.faces.models import embedding_version, model_version
from facematch.settings import EvaluationSettings, Settings
from facematch.types import EMBEDDING_DIM, MODEL_NAME, FaceBox

__all__ = ["CACHE_VERSION", "DEFAULT_CACHE_DIR", "ImageEmbedding", "SystemSpec", "EmbeddingCache",
           "embed_images", "embedding_matrix", "summary", "with_jitters", "cached_hashes", "purge_hashes"]

log = logging.getLogger(__name__)

#: Bump when the code that turns an image into an embedding or quality score changes meaning.
CACHE_VERSION = 1
#: Default cache folder, relative to the working directory.
DEFAULT_CACHE_DIR = EvaluationSettings().cache_dir
_COMMIT_EVERY = 64
_LOG_EVERY_S = 30.0
PURPOSES = ("custody", "probe")
FACE_CHOICES = ("largest", "central")


#: Modules whose code decides what facematch makes of an image: their bytes are part of the cache key.
_PIPELINE_MODULES = ("faces.detection", "faces.mtcnn", "faces.embedding", "faces.pipeline", "faces.quality",
                     "faces.imaging", "faces.models", "types", "faces.descriptor_net", "faces.augment")


@functools.lru_cache(maxsize=1)
def pipeline_code_fingerprint() -> str:
    """Hash of the source of facematch's image-to-embedding modules (``_PIPELINE_MODULES``).

    Settings do not capture every change (a detector stage reordered, a budget rule rewritten), so the
    cache key includes the code too: any edit to these modules re-embeds, rather than mixing results of
    two versions in one evaluation.
    """
    digest = hashlib.sha256()
    for name in _PIPELINE_MODULES:
        spec = importlib.util.find_spec(f"facematch.{name}")
        digest.update(name.encode() + Path(spec.origin).read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ImageEmbedding:
    """What one system made of one image.

    ``status`` is "ok", "no_face" or "unreadable"; ``embedding`` is the ``(128,) float32`` descriptor of
    the face used (the largest for facematch, the first for the baseline), None unless "ok".
    ``quality_score`` (0-100) is facematch's; ``box`` is (left, top, right, bottom) in pixels.
    """

    status: str
    embedding: np.ndarray | None = None
    n_faces: int = 0
    quality_score: float | None = None
    detector: str | None = None
    box: tuple[int, int, int, int] | None = None
    seconds: float = 0.0

    @property
    def acquired(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class SystemSpec:
    """One system under evaluation: facematch's pipeline with given settings, or the README baseline.

    ``fallback_box`` (facematch only; an LFW-specific protocol option): when no face is detected, the
    face is taken from this fixed box (left, top, right, bottom), as for an investigator-marked box.
    ``face_choice`` (facematch only): which detected face stands for the labelled person, "largest" (what
    search would rank first) or "central" (the face nearest the image centre: LFW's own definition of
    the labelled face, whose images are cropped around it).
    """

    name: str
    kind: str  # "facematch" or "face_recognition-readme"
    settings: Settings | None = None
    fallback_box: tuple[int, int, int, int] | None = None
    face_choice: str = "largest"

    @classmethod
    def facematch(cls, settings: Settings, *, name: str = "facematch",
                  fallback_box: tuple[int, int, int, int] | None = None,
                  face_choice: str = "largest") -> "SystemSpec":
        if face_choice not in FACE_CHOICES:
            raise InvalidArgument(f"face_choice must be one of {FACE_CHOICES}, got {face_choice!r}")
        return cls(name, "facematch", settings, tuple(fallback_box) if fallback_box else None, face_choice)

    @classmethod
    def baseline(cls) -> "SystemSpec":
        baseline_version()  # raises InvalidArgument at once when face_recognition is missing
        return cls(BASELINE_NAME, "face_recognition-readme")

    def describe(self) -> dict:
        """Everything that changes what this system makes of an image (recorded and hashed)."""
        if self.kind == "facematch":
            return {"kind": self.kind, "model": MODEL_NAME,
                    "model_version": embedding_version(self.settings.detection.landmarks),
                    "pipeline": self.settings.describe_pipeline(), "fallback_box": self.fallback_box,
                    **({"face_choice": self.face_choice} if self.face_choice != "largest" else {}),
                    "code": pipeline_code_fingerprint(), "cache_version": CACHE_VERSION}
        if self.kind == "face_recognition-readme":
            return {"kind": self.kind, "package": baseline_version(), "model_version": model_version(),
                    "cache_version": CACHE_VERSION}
        raise InvalidArgument(f"unknown system kind {self.kind!r}")

    def description(self) -> str:
        """One sentence for the report."""
        if self.kind != "facematch":
            return baseline_description()
        from facematch.faces.detection import probe_stage_names

        det, emb = self.settings.detection, self.settings.embedding
        probe_jitters = getattr(emb, "probe_jitters", emb.num_jitters)
        jitters = f"{emb.num_jitters} jitter(s) at enrolment, {probe_jitters} on probes"
        text = (f"facematch pipeline ({MODEL_NAME}): probe cascade {' > '.join(probe_stage_names(det))} "
                f"(stages run only while nothing is found and the CPU budget allows), custody cascade for "
                f"gallery images; {det.landmarks}-point alignment, {jitters}"
                f"{', mirrored chip averaged' if getattr(emb, 'probe_flip', False) else ''}; "
                f"{'the face nearest the image centre' if self.face_choice == 'central' else 'largest face'}")
        if self.fallback_box:
            text += f"; when no face is detected, the fixed box {self.fallback_box} (LFW-specific option)"
        return text

    def cache_key(self, purpose: str) -> str:
        text = json.dumps({**self.describe(), "purpose": purpose}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class EmbeddingCache:
    """A SQLite file of :class:`ImageEmbedding` keyed by (system cache key, image SHA-256).

    Only the process that calls :func:`embed_images` opens it (workers return results to it).
    """

    def __init__(self, folder: str | Path = DEFAULT_CACHE_DIR):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        ignore = self.folder / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# facematch evaluation cache: never commit\n*\n", encoding="utf-8")
        self.path = self.folder / "embeddings.sqlite3"
        self._conn = sqlite3.connect(self.path)
        self._conn.executescript(
            "CREATE TABLE IF NOT EXISTS systems (key TEXT PRIMARY KEY, description TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS embeddings (key TEXT NOT NULL, sha256 TEXT NOT NULL, status TEXT NOT NULL,"
            " n_faces INTEGER, quality REAL, detector TEXT, box TEXT, seconds REAL, embedding BLOB,"
            " PRIMARY KEY (key, sha256));")

    def close(self) -> None:
        self._conn.close()

    def register(self, key: str, description: dict) -> None:
        with self._conn:
            self._conn.execute("INSERT OR IGNORE INTO systems VALUES (?, ?)",
                               (key, json.dumps(description, sort_keys=True)))

    def get_many(self, key: str, shas: Sequence[str]) -> dict[str, ImageEmbedding]:
        """Cached entries of ``shas`` for system ``key`` (absent ones are left out)."""
        found: dict[str, ImageEmbedding] = {}
        unique = list(dict.fromkeys(shas))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            rows = self._conn.execute(
                f"SELECT sha256, status, n_faces, quality, detector, box, seconds, embedding FROM embeddings "
                f"WHERE key = ? AND sha256 IN ({','.join('?' * len(chunk))})", [key, *chunk])
            for sha, status, n_faces, quality, detector, box, seconds, blob in rows:
                vector = None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()
                found[sha] = ImageEmbedding(status, vector, n_faces, quality, detector,
                                            tuple(json.loads(box)) if box else None, seconds)
        return found

    def put_many(self, key: str, entries: dict[str, ImageEmbedding]) -> None:
        rows = [(key, sha, e.status, e.n_faces, e.quality_score, e.detector,
                 json.dumps(list(e.box)) if e.box else None, e.seconds,
                 None if e.embedding is None else np.asarray(e.embedding, dtype=np.float32).tobytes())
                for sha, e in entries.items()]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _existing_cache(folder: str | Path) -> Path | None:
    path = Path(folder) / "embeddings.sqlite3"
    return path if path.exists() else None


def cached_hashes(folder: str | Path = DEFAULT_CACHE_DIR) -> set[str]:
    """Every image SHA-256 the cache in ``folder`` holds an entry for (empty when there is no cache)."""
    path = _existing_cache(folder)
    if path is None:
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM embeddings")}
    finally:
        conn.close()


def purge_hashes(folder: str | Path, shas: Sequence[str]) -> int:
    """Delete every system's entries for these image hashes (retention); returns rows removed.

    The freed pages are overwritten (``secure_delete``) and the file compacted, so the deleted
    embeddings do not linger in the cache file.
    """
    path = _existing_cache(folder)
    if path is None or not shas:
        return 0
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA secure_delete = ON")
        removed = 0
        with conn:
            for start in range(0, len(shas), 500):
                chunk = list(shas[start:start + 500])
                removed += conn.execute(f"DELETE FROM embeddings WHERE sha256 IN ({','.join('?' * len(chunk))})",
                                        chunk).rowcount
        if removed:
            conn.execute("VACUUM")
        return removed
    finally:
        conn.close()


def with_jitters(embedding, num_jitters: int):
    """``EmbeddingSettings`` with ``num_jitters`` for enrolment and probes alike (an evaluation option)."""
    fields = {f.name for f in dataclasses.fields(embedding)}
    changes = {k: num_jitters for k in ("num_jitters", "probe_jitters") if k in fields}
    return dataclasses.replace(embedding, **changes)


# ------------------------------------------------------------------------------------------ workers

_worker: dict = {}


def _init_worker(system: SystemSpec) -> None:
    """One pipeline per process; dlib models load on first use and stay loaded (also across calls)."""
    if _worker.get("system") == system:
        return
    _worker.clear()
    _worker["system"] = system
    if system.kind == "facematch":
        from facematch.faces.pipeline import FacePipeline

        _worker["pipeline"] = FacePipeline(system.settings)


def _embed_one(job: tuple[int, str, str]) -> tuple[int, ImageEmbedding]:
    index, path, purpose = job
    system: SystemSpec = _worker["system"]
    if system.kind != "facematch":
        return index, ImageEmbedding(**{k: v for k, v in readme_embedding(path).items() if k != "reason"})
    from facematch.faces.imaging import load_image

    started = time.perf_counter()
    try:
        image = load_image(path, max_pixels=system.settings.max_pixels)
    except FacematchError:
        return index, ImageEmbedding("unreadable", seconds=time.perf_counter() - started)
    pipeline = _worker["pipeline"]
    faces = pipeline.analyse(image.pixels, purpose=purpose)
    if not faces and system.fallback_box:
        faces = pipeline.analyse(image.pixels, purpose=purpose, box=FaceBox(*system.fallback_box))
    seconds = time.perf_counter() - started
    if not faces:
        return index, ImageEmbedding("no_face", seconds=seconds)
    face = _central_face(faces, image.pixels.shape) if system.face_choice == "central" else faces[0]
    box = face.box
    return index, ImageEmbedding("ok", np.asarray(face.embedding, dtype=np.float32), len(faces),
                                 face.quality_score, face.detector, (box.left, box.top, box.right, box.bottom),
                                 seconds)


def _central_face(faces, shape):
    """The face whose box centre is nearest the centre of an image of ``shape`` (H, W, ...)."""
    cy, cx = shape[0] / 2, shape[1] / 2
    return min(faces, key=lambda f: ((f.box.left + f.box.right) / 2 - cx) ** 2
               + ((f.box.top + f.box.bottom) / 2 - cy) ** 2)


def _run_jobs(jobs: list[tuple[int, str, str]], system: SystemSpec, workers: int):
    if workers == 1 or len(jobs) < 2:
        _init_worker(system)
        yield from map(_embed_one, jobs)
        return
    context = multiprocessing.get_context("spawn")  # fork after faiss/OpenMP threads can deadlock
    with context.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(system,)) as pool:
        yield from pool.imap_unordered(_embed_one, jobs, chunksize=4)


def _hash_all(paths: Sequence[Path]) -> list[str | None]:
    shas: list[str | None] = []
    for path in paths:
        try:
            shas.append(sha256_file(path))
        except ImageUnreadable:
            shas.append(None)
    return shas


def embed_images(paths: Sequence[str | Path], system: SystemSpec, *, purpose: str,
                 cache: EmbeddingCache | None = None, workers: int = 1,
                 progress: Callable[[int, int], None] | None = None) -> list[ImageEmbedding]:
    """What ``system`` makes of each image of ``paths`` (same order), embedding only what is not cached.

    ``purpose`` ("custody" for gallery images, "probe" for searched ones) picks facematch's detection
    cascade. Identical files are embedded once. A missing or unreadable file gives status "unreadable".
    ``progress(done, total)`` is called as images finish. Raises InvalidArgument for a bad purpose.
    """
    if purpose not in PURPOSES:
        raise InvalidArgument(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    if workers < 1:
        raise InvalidArgument(f"workers must be at least 1, got {workers}")
    paths = [Path(p) for p in paths]
    shas = _hash_all(paths)
    key = system.cache_key(purpose)
    known = cache.get_many(key, [s for s in shas if s]) if cache else {}
    if cache and system.fallback_box:
        known = {**_found_without_fallback(cache, system, purpose, shas), **known}
    todo: dict[str, int] = {}
    for i, sha in enumerate(shas):
        if sha and sha not in known and sha not in todo:
            todo[sha] = i
    log.info("%s (%s): %d images, %d cached, %d to embed with %d worker(s)", system.name, purpose, len(paths),
             len(paths) - len(todo), len(todo), workers)
    if todo:
        if cache:
            cache.register(key, {**system.describe(), "purpose": purpose})
        known.update(_embed_missing(paths, shas, todo, system, purpose, cache, key, workers, progress))
    missing = ImageEmbedding("unreadable")
    return [known[s] if s else missing for s in shas]


def _found_without_fallback(cache: EmbeddingCache, system: SystemSpec, purpose: str,
                            shas: Sequence[str | None]) -> dict[str, ImageEmbedding]:
    """Cached faces of the same system without its fallback box: the box is only used when no face is
    detected, so where a face was found the result is the same and need not be computed again."""
    plain = SystemSpec(system.name, system.kind, system.settings, None)
    found = cache.get_many(plain.cache_key(purpose), [s for s in shas if s])
    return {sha: e for sha, e in found.items() if e.acquired}


def _embed_missing(paths, shas, todo, system, purpose, cache, key, workers, progress) -> dict[str, ImageEmbedding]:
    jobs = [(i, str(paths[i]), purpose) for i in todo.values()]
    done: dict[str, ImageEmbedding] = {}
    pending: dict[str, ImageEmbedding] = {}
    started = last_log = time.perf_counter()
    for n, (i, result) in enumerate(_run_jobs(jobs, system, workers), start=1):
        done[shas[i]] = pending[shas[i]] = result
        if cache and len(pending) >= _COMMIT_EVERY:
            cache.put_many(key, pending)
            pending = {}
        if progress:
            progress(n, len(jobs))
        now = time.perf_counter()
        if now - last_log >= _LOG_EVERY_S or n == len(jobs):
            rate = n / (now - started)
            log.info("%s (%s): embedded %d/%d (%.2f images/s, about %.0f s left)", system.name, purpose, n,
                     len(jobs), rate, (len(jobs) - n) / rate if rate else 0)
            last_log = now
    if cache and pending:
        cache.put_many(key, pending)
    return done


def embedding_matrix(entries: Sequence[ImageEmbedding]) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 128) float32`` descriptors (zeros where not acquired) and the ``(n,) bool`` acquired mask."""
    matrix = np.zeros((len(entries), EMBEDDING_DIM), dtype=np.float32)
    ok = np.array([e.acquired for e in entries], dtype=bool)
    for i, e in enumerate(entries):
        if e.acquired:
            matrix[i] = e.embedding
    return matrix, ok


def summary(entries: Sequence[ImageEmbedding]) -> dict:
    """Counts by status and mean seconds per embedded image (for provenance)."""
    statuses: dict[str, int] = {}
    for e in entries:
        statuses[e.status] = statuses.get(e.status, 0) + 1
    seconds = [e.seconds for e in entries if e.seconds]
    return {"n_images": len(entries), "by_status": statuses,
            "mean_seconds": float(np.mean(seconds)) if seconds else None}

