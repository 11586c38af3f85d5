"""Bulk ingestion: hash, skip what is stored, analyse in parallel workers, write in batches.

Idempotent by content *within the owning agency*: an image whose SHA-256 is already stored for its kind
by the same agency (``Owner``) is skipped; another agency's copy of the same file is neither consulted
nor reported, and this agency gets its own record (nothing about another agency shows, not even "already
stored"). Each batch is one transaction, the images' ownership (collection or case) written in it, and the
index is saved after the catalogue commits, so the index never holds a face the catalogue lacks. Killed at
any moment, a re-run skips what was committed (owned already), catches the index up and goes on.

The analysis (decode, detect, embed) is pluggable: ``ingest(..., analyse=...)`` takes any callable that
turns jobs into ``ItemResult``s, in any order. The default runs a local process pool
(:func:`analyse_locally`); ``facematch.ingest.dask_backend`` runs the same :func:`analyse_job` on a Dask cluster.
Either way this process alone writes the catalogue and the index, through the same batched path.
Each worker keeps one pipeline (models loaded once) and times its stages (``facematch.faces.profiling``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from facematch.errors import FacematchError, ImageTooLarge
from facematch.faces.imaging import load_image, sha256_file
from facematch.faces.models import embedding_model, embedding_version
from facematch.faces.pipeline import FacePipeline
from facematch.faces.profiling import StageClock, TimedModels
from facematch.faces.quality import FaceQuality, is_fit_for_enrolment
from facematch.ingest.labels import relabel, split_conflicts
from facematch.ingest.sources import IngestItem
from facematch.settings import Settings
from facematch.store.accounts import Accounts
from facematch.store.catalogue import Catalogue, utc_now
from facematch.store.index_store import IndexStore
from facematch.store.lock import hold_run
from facematch.types import EMBEDDING_DIM, MODEL_NAME, FaceRecord

__all__ = ["ItemResult", "IngestSummary", "Owner", "ProgressCallback", "Job", "Analyse", "ingest", "analyse_locally",
    "worker_pipeline", "analyse_job", "require_embedding_model"]

log = logging.getLogger(__name__)

#: Image outcomes recorded in the catalogue.
ENROLLED, ENROLLED_LARGEST, STORED, NO_FACE, UNREADABLE, TOO_LARGE, FAILED = (
    "enrolled", "enrolled_largest_of_several", "stored", "no_face", "unreadable", "too_large", "failed")


@dataclass
class ItemResult:
    """What a worker found in one file (``faces`` already reduced to those to store)."""

    item: IngestItem
    sha256: str | None
    outcome: str
    reason: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    notes: tuple = ()
    faces: list[FaceRecord] = field(default_factory=list)
    flags: list[list[str]] = field(default_factory=list)
    stages: dict = field(default_factory=dict)  # this image's StageClock stages (worker seconds)


@dataclass
class IngestSummary:
    """Counts of one ingest run; ``outcomes`` maps image outcome to count for images processed now."""

    run_id: int
    kind: str
    total: int
    already_stored: int = 0
    duplicates_in_source: int = 0
    unreadable_paths: int = 0
    invalid_rows: int = 0
    label_conflicts: int = 0
    relabelled: int = 0
    outcomes: dict = field(default_factory=dict)
    faces_stored: int = 0
    seconds: float = 0.0
    stages: StageClock = field(default_factory=StageClock, repr=False)

    @property
    def processed(self) -> int:
        return sum(self.outcomes.values())

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "kind": self.kind, "total": self.total,
                "already_stored": self.already_stored, "duplicates_in_source": self.duplicates_in_source,
                "unreadable_paths": self.unreadable_paths, "invalid_rows": self.invalid_rows,
                "label_conflicts": self.label_conflicts,
                "relabelled": self.relabelled, "outcomes": dict(self.outcomes),
                "faces_stored": self.faces_stored, "processed": self.processed,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 3),
                "stages": self.stages.report()}


@dataclass(frozen=True)
class Owner:
    """Whose images an ingest stores: the agency (the scope of "already stored"; 0: none, a command-line
    ingest without collection or agency) and, for custody images, the agency's collection they join.
    Crime-scene images join the agency's case of their ``case_ref`` (made when new)."""

    agency_id: int = 0
    collection_id: int | None = None


ProgressCallback = Callable[[int, int], None]
#: One unit of analysis: the item and its kind ("custody" or "scene").
Job = tuple[IngestItem, str]
#: An analysis backend: jobs and settings in, one ``ItemResult`` per job out (any order, streamed).
Analyse = Callable[[list[Job], Settings], Iterable[ItemResult]]


def ingest(catalogue: Catalogue, index_store: IndexStore, items: list[IngestItem], *, kind: str,
           settings: Settings, user: str, source: str, progress: ProgressCallback | None = None,
           analyse: Analyse | None = None, allow_relabel: bool = False, owner: Owner = Owner(),
           case_ref: str | None = None, on_run: Callable[[int], None] | None = None) -> IngestSummary:
    """Ingest ``items`` of ``kind`` ("custody" or "scene") into the catalogue and its index.

    The data directory's writer lock is held per batch (commit, index update, periodic save), not for the
    run: analysis, the slow part, runs unlocked, so a deletion or another ingest waits at most one batch
    commit and index save, never the whole run. ``analyse`` is the analysis backend (default
    :func:`analyse_locally`, ``settings.workers`` processes). Never raises for a bad file: each gets a
    recorded outcome or failure (an item with a ``problem``, or a custody image with conflicting labels:
    ``facematch.ingest.labels``; relabelling a stored image only when ``allow_relabel``). Returns the
    run's summary, with per-stage times in ``summary.stages``. ``owner``: whose images these are (each
    stored image is owned in the transaction that stores it; duplicates are looked for in its scope only).
    ``case_ref``: the one case of a crime-scene run (recorded with the run); ``on_run`` is told the run's
    id once it is recorded (the service's job list ties its live progress to the catalogue's run).
    """
    started = time.perf_counter()
    require_embedding_model(catalogue, kind, settings)
    with contextlib.ExitStack() as alive:
        with index_store.writer("ingest"):
            catalogue.mark_interrupted_runs()
            run_id = catalogue.start_ingest_run(kind, source, user, agency_id=owner.agency_id,
                                                collection_id=owner.collection_id, case_ref=case_ref)
            alive.enter_context(hold_run(catalogue.data_dir, run_id))
            index = index_store.load_for_write(kind)
            if index_store.token(kind) is None:  # a first index file, so readers never find none
                index_store.save(kind, index)
        if on_run:
            on_run(run_id)
        try:
            summary = IngestSummary(run_id=run_id, kind=kind, total=len(items))
            with summary.stages.time("hash"):  # wall time is the figure here: threads do the reading
                todo = _new_items(catalogue, items, kind, summary, run_id, user, allow_relabel, owner.agency_id)
            done = summary.total - len(todo)
            if progress:
                progress(done, summary.total)
            last_save = time.monotonic()
            results = (analyse or analyse_locally)([(item, kind) for item, _ in todo], settings)
            for batch in _chunks(results, settings.batch_size):
                with summary.stages.time("store"), index_store.writer("ingest"):
                    index = index_store.load_for_write(kind, index)  # reopened if another writer saved it
                    ids, vectors = _store_batch(catalogue, batch, kind, run_id, summary, settings, owner)
                    if len(ids):
                        index.add(ids, vectors)
                    if time.monotonic() - last_save > _SAVE_INTERVAL_S:
                        index_store.save(kind, index)
                        last_save = time.monotonic()
                done += len(batch)
                if progress:
                    progress(done, summary.total)
            with summary.stages.time("index_save"), index_store.writer("ingest"):
                index_store.save(kind, index_store.load_for_write(kind, index))
                summary.seconds = time.perf_counter() - started
                catalogue.finish_ingest_run(run_id, user, summary.to_dict())
        except Exception as exc:
            _record_failure(catalogue, index_store, run_id, user, exc)
            raise
    log.info("ingest run %d: %s", run_id, summary.to_dict())
    return summary


def _record_failure(catalogue: Catalogue, index_store: IndexStore, run_id: int, user: str, exc: Exception) -> None:
    """Mark the run failed with the error its user sees (a kill leaves it to be marked interrupted)."""
    message = str(exc) if isinstance(exc, FacematchError) else f"internal error: {type(exc).__name__}"
    try:
        with index_store.writer("ingest"):
            catalogue.fail_ingest_run(run_id, user, message)
    except Exception:  # the original error is the one to raise
        log.exception("could not record ingest run %d as failed", run_id)


#: Seconds between index saves during an ingest (and one at the end). Between saves the file lags the
#: catalogue by added faces only, which every open catches up.
_SAVE_INTERVAL_S = 60


def _new_items(catalogue: Catalogue, items: list[IngestItem], kind: str, summary: IngestSummary,
               run_id: int, user: str, allow_relabel: bool, agency_id: int) -> list[tuple[IngestItem, str]]:
    """Hash every file; drop those ``agency_id`` already stores, or repeated; record files that cannot be read.

    Files are read by a few threads (hashlib and file reads release the GIL): on a network file system
    the latency of opening each file, not the hashing, sets the pace.
    """
    hashed, failures = [], []
    with ThreadPoolExecutor(max_workers=_HASH_THREADS) as pool:
        for item, digest, reason in pool.map(_hash_or_reason, items):
            if digest is None:
                failures.append((str(item.path), reason))
            else:
                hashed.append((item, digest))
    summary.invalid_rows = sum(1 for item in items if item.problem)
    unreadable = len(failures) - summary.invalid_rows
    if kind == "custody":
        hashed, refused, moves = split_conflicts(catalogue, hashed, allow_relabel=allow_relabel, agency_id=agency_id)
        failures += refused
        summary.label_conflicts, summary.relabelled = len(refused), len(moves)
        relabel(catalogue, moves, user=user, run_id=run_id, agency_id=agency_id)
    if failures:
        with catalogue.atomic():
            catalogue.conn.executemany(
                "INSERT INTO ingest_failures (run_id, path, reason, at) VALUES (?, ?, ?, ?)",
                [(run_id, p, r, utc_now()) for p, r in failures])
        summary.unreadable_paths = unreadable
    stored = catalogue.stored_hashes([h for _, h in hashed], kind, owner_agency=agency_id)
    todo, seen = [], set()
    for item, digest in hashed:
        if digest in stored:
            summary.already_stored += 1
        elif digest in seen:
            summary.duplicates_in_source += 1
        else:
            seen.add(digest)
            todo.append((item, digest))
    return todo


#: Threads that read and hash files before analysis.
_HASH_THREADS = 8


def _hash_or_reason(item: IngestItem) -> tuple[IngestItem, str | None, str | None]:
    if item.problem:
        return item, None, item.problem
    try:
        return item, sha256_file(item.path), None
    except FacematchError as exc:
        return item, None, str(exc)


def analyse_locally(jobs: list[Job], settings: Settings) -> Iterator[ItemResult]:
    """Analyse jobs in ``settings.workers`` processes (in this one when 1), yielding as they finish.

    Workers are spawned (fork after faiss/OpenMP threads can deadlock) with native thread pools
    (OpenBLAS, OpenMP) limited to one thread: one worker per core, no oversubscription.
    """
    if settings.workers == 1 or len(jobs) < 2:
        yield from (analyse_job(job, settings) for job in jobs)
        return
    context = multiprocessing.get_context("spawn")
    with _single_threaded_children():
        pool = context.Pool(min(settings.workers, len(jobs)), initializer=_init_worker, initargs=(settings,))
    with pool:
        yield from pool.imap_unordered(_analyse_in_pool, jobs, chunksize=1)


#: Native thread-pool variables set for spawned workers (unless the user set them).
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _single_threaded_children():
    """Spawned children read these variables when their native libraries load; this process is unchanged."""
    added = [name for name in _THREAD_VARIABLES if name not in os.environ]
    os.environ.update({name: "1" for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


_worker_state: dict = {}


def _init_worker(settings: Settings) -> None:
    _worker_state["settings"] = settings


def _analyse_in_pool(job: Job) -> ItemResult:
    return analyse_job(job, _worker_state["settings"])


def worker_pipeline(settings: Settings) -> tuple[FacePipeline, StageClock]:
    """This process's pipeline for ``settings`` and its stage clock, created on first use and kept.

    The pipeline's models are timed (``TimedModels``) so each summary can say where the time went.
    """
    cached = _worker_state.get("pipeline")
    if cached is None or cached[0] != settings:
        clock = StageClock()
        pipeline = FacePipeline(settings, models=TimedModels(clock))
        cached = _worker_state["pipeline"] = (settings, pipeline, clock)
    return cached[1], cached[2]


def analyse_job(job: Job, settings: Settings) -> ItemResult:
    """Decode and analyse one item in this process (what every backend's workers run).

    Never raises for a bad file: returns an ``ItemResult`` with the outcome and reason.
    """
    pipeline, clock = worker_pipeline(settings)
    clock.take()
    started = time.perf_counter(), time.thread_time()
    result = _analyse_one(job, settings, pipeline, clock)
    wall, cpu = time.perf_counter() - started[0], time.thread_time() - started[1]
    stages = clock.take()
    timed = [stages.get(name, [0, 0.0, 0.0]) for name in ("load", "decode", "detect", "landmarks", "encode")]
    stages["quality+other"] = [1, wall - sum(t[1] for t in timed), cpu - sum(t[2] for t in timed)]
    result.stages = stages
    return result


def _analyse_one(job: Job, settings: Settings, pipeline: FacePipeline, clock: StageClock) -> ItemResult:
    item, kind = job
    try:
        with clock.time("decode"):
            image = load_image(item.path, max_pixels=settings.max_pixels)
    except FacematchError as exc:
        outcome = TOO_LARGE if isinstance(exc, ImageTooLarge) else UNREADABLE
        return ItemResult(item, _safe_hash(item), outcome, str(exc))
    base = dict(item=item, sha256=image.sha256, width=image.width, height=image.height,
                format=image.format, notes=tuple(image.notes))
    try:
        purpose = "custody" if kind == "custody" else "probe"
        faces = pipeline.analyse(image.pixels, purpose=purpose)
    except Exception as exc:  # a bad file must never abort the batch
        log.exception("analysis failed for %s", item.path)
        return ItemResult(**base, outcome=FAILED, reason=f"analysis failed: {type(exc).__name__}: {exc}")
    if not faces:
        return ItemResult(**base, outcome=NO_FACE, reason="no face detected")
    if kind == "scene":
        return ItemResult(**base, outcome=STORED, reason=f"{len(faces)} face(s) stored",
                          faces=faces, flags=[[] for _ in faces])
    return _custody_result(base, faces, settings)


def _custody_result(base: dict, faces: list[FaceRecord], settings: Settings) -> ItemResult:
    """Custody: the largest face is the subject; several faces or poor quality are flagged, not dropped."""
    face = faces[0]
    flags, reasons = [], []
    if len(faces) > 1:
        flags.append(f"several faces ({len(faces)}): largest enrolled")
        reasons.append(f"{len(faces)} faces found, the largest enrolled")
    fit, why = is_fit_for_enrolment(FaceQuality.from_dict(face.quality), settings.quality)
    if not fit:
        flags.append("unfit for enrolment: " + "; ".join(why))
        reasons.append("quality: " + "; ".join(why))
    outcome = ENROLLED_LARGEST if len(faces) > 1 else ENROLLED
    return ItemResult(**base, outcome=outcome, reason="; ".join(reasons) or None, faces=[face], flags=[flags])


def _safe_hash(item: IngestItem) -> str | None:
    try:
        return sha256_file(item.path)
    except FacematchError:
        return None


def require_embedding_model(catalogue: Catalogue, kind: str, settings: Settings) -> None:
    """Raise ``IncompatibleEmbeddings`` when ``kind`` faces were embedded otherwise than ``settings`` do.

    Checked before any image is analysed, so a mismatch costs nothing; each stored batch claims it again.
    """
    wanted = embedding_model(settings.detection.landmarks)
    if catalogue.embedding_model(kind) not in (None, wanted):
        with catalogue.atomic():
            catalogue.claim_embedding_model(kind, wanted)  # raises unless the kind holds no face


def _store_batch(catalogue: Catalogue, batch: list[ItemResult], kind: str, run_id: int,
                 summary: IngestSummary, settings: Settings, owner: Owner = Owner()):
    """Write one batch in one transaction, each new image owned by ``owner``; returns the new face ids and
    embeddings for the index."""
    import numpy as np

    accounts = Accounts(catalogue)
    ids, vectors = [], []
    version = embedding_version(settings.detection.landmarks)
    with catalogue.atomic():
        catalogue.claim_embedding_model(kind, embedding_model(settings.detection.landmarks))
        for result in batch:
            summary.stages.merge(result.stages)
            if result.sha256 is None:
                continue
            # every custody image belongs to its subject, those without a face too (deletion finds them)
            # ... of the owning agency: another agency's subject of the same reference is another person
            subject_id = (catalogue.subject_id(result.item.subject_ref, create=True, agency_id=owner.agency_id)
                          if kind == "custody" else None)
            item = result.item
            image_id = catalogue.add_image(
                sha256=result.sha256, kind=kind, original_path=str(item.path), outcome=result.outcome,
                reason=result.reason, subject_id=subject_id, custody_ref=item.custody_ref,
                case_ref=item.case_ref, captured_at=item.captured_at, source=item.source,
                width=result.width, height=result.height, format=result.format,
                notes=list(result.notes), run_id=run_id, not_convicted=item.not_convicted,
                owner_agency=owner.agency_id)
            if image_id is None:
                summary.already_stored += 1
                continue
            _own(accounts, image_id, kind, item, owner)
            summary.outcomes[result.outcome] = summary.outcomes.get(result.outcome, 0) + 1
            for face_no, (face, flags) in enumerate(zip(result.faces, result.flags)):
                face_id = catalogue.add_face(image_id, kind, face_no, face, model_name=MODEL_NAME,
                                             model_version=version, subject_id=subject_id, flags=flags)
                ids.append(face_id)
                vectors.append(face.embedding)
        summary.faces_stored += len(ids)
    return np.asarray(ids, dtype=np.int64), np.asarray(vectors, dtype=np.float32).reshape(len(ids), EMBEDDING_DIM)


def _own(accounts: Accounts, image_id: int, kind: str, item: IngestItem, owner: Owner) -> None:
    """Inside the batch's transaction: the new image joins the owner's collection (custody) or the
    owner's case of its reference (crime scene), so a crash never leaves a stored image unowned."""
    if kind == "custody" and owner.collection_id is not None:
        case_id = None
        collection_id = owner.collection_id
    elif kind == "scene" and owner.agency_id and item.case_ref:
        case_id, collection_id = accounts.case_id(owner.agency_id, item.case_ref, create=True), None
    else:
        return
    accounts.conn.execute("INSERT INTO image_owners (image_id, collection_id, case_id) VALUES (?, ?, ?)",
                          (image_id, collection_id, case_id))


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
    batch = []
    for element in iterable:
        batch.append(element)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
