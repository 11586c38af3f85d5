"""Bulk ingestion: hash, skip what is stored, analyse in parallel workers, write in batches.

Idempotent by content: an image whose SHA-256 is already stored for its kind is skipped. Each batch is one
transaction and the index is saved after the catalogue commits, so the index never holds a face the
catalogue lacks. Killed at any moment, a re-run skips what was committed, catches the index up and goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from .catalogue import Catalogue, utc_now
from .errors import FacematchError, ImageTooLarge
from .face_models import MODEL_NAME, model_version
from .imaging import load_image, sha256_file
from .index_store import IndexStore
from .pipeline import FacePipeline
from .quality import FaceQuality, QualitySettings, is_fit_for_enrolment
from .settings import Settings
from .sources import IngestItem
from .types import FaceRecord

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


@dataclass
class IngestSummary:
    """Counts of one ingest run; ``outcomes`` maps image outcome to count for images processed now."""

    run_id: int
    kind: str
    total: int
    already_stored: int = 0
    duplicates_in_source: int = 0
    unreadable_paths: int = 0
    outcomes: dict = field(default_factory=dict)
    faces_stored: int = 0
    seconds: float = 0.0

    @property
    def processed(self) -> int:
        return sum(self.outcomes.values())

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "kind": self.kind, "total": self.total,
                "already_stored": self.already_stored, "duplicates_in_source": self.duplicates_in_source,
                "unreadable_paths": self.unreadable_paths, "outcomes": dict(self.outcomes),
                "faces_stored": self.faces_stored, "processed": self.processed,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 3)}


ProgressCallback = Callable[[int, int], None]


def ingest(catalogue: Catalogue, index_store: IndexStore, items: list[IngestItem], *, kind: str,
           settings: Settings, user: str, source: str,
           progress: ProgressCallback | None = None) -> IngestSummary:
    """Ingest ``items`` of ``kind`` ("custody" or "scene") into the catalogue and its index.

    Never raises for a bad file: each gets a recorded outcome or failure. Returns the run's summary.
    """
    started = time.perf_counter()
    run_id = catalogue.start_ingest_run(kind, source, user)
    summary = IngestSummary(run_id=run_id, kind=kind, total=len(items))
    index = index_store.sync(kind)
    todo = _new_items(catalogue, items, kind, summary, run_id)
    done = summary.total - len(todo)
    if progress:
        progress(done, summary.total)
    last_save = time.monotonic()
    for batch in _chunks(_analyse_all(todo, kind, settings), settings.batch_size):
        ids, vectors = _store_batch(catalogue, batch, kind, run_id, summary)
        if len(ids):
            index.add(ids, vectors)
        done += len(batch)
        if progress:
            progress(done, summary.total)
        if time.monotonic() - last_save > 60:
            index_store.save(kind, index)
            last_save = time.monotonic()
    index_store.save(kind, index)
    summary.seconds = time.perf_counter() - started
    catalogue.finish_ingest_run(run_id, user, summary.to_dict())
    log.info("ingest run %d: %s", run_id, summary.to_dict())
    return summary


def _new_items(catalogue: Catalogue, items: list[IngestItem], kind: str, summary: IngestSummary,
               run_id: int) -> list[tuple[IngestItem, str]]:
    """Hash every file; drop those already stored or repeated; record files that cannot be read."""
    hashed, failures = [], []
    for item in items:
        try:
            hashed.append((item, sha256_file(item.path)))
        except FacematchError as exc:
            failures.append((str(item.path), str(exc)))
    if failures:
        with catalogue.atomic():
            catalogue.conn.executemany(
                "INSERT INTO ingest_failures (run_id, path, reason, at) VALUES (?, ?, ?, ?)",
                [(run_id, p, r, utc_now()) for p, r in failures])
        summary.unreadable_paths = len(failures)
    stored = catalogue.stored_hashes([h for _, h in hashed], kind)
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


def _analyse_all(todo: list[tuple[IngestItem, str]], kind: str, settings: Settings) -> Iterator[ItemResult]:
    """Analyse items in ``settings.workers`` processes (in this one when 1), yielding as they finish."""
    jobs = [(item, kind) for item, _ in todo]
    if settings.workers == 1 or len(jobs) < 2:
        _init_worker(settings)
        yield from map(_analyse_one, jobs)
        return
    context = multiprocessing.get_context("spawn")  # fork after faiss/OpenMP threads can deadlock
    with context.Pool(min(settings.workers, len(jobs)), initializer=_init_worker, initargs=(settings,)) as pool:
        yield from pool.imap_unordered(_analyse_one, jobs, chunksize=1)


_worker_pipeline: dict = {}


def _init_worker(settings: Settings) -> None:
    """Give this process one pipeline; its models load on first use and stay loaded."""
    _worker_pipeline["pipeline"] = FacePipeline(settings)
    _worker_pipeline["settings"] = settings


def _analyse_one(job: tuple[IngestItem, str]) -> ItemResult:
    item, kind = job
    settings: Settings = _worker_pipeline["settings"]
    try:
        image = load_image(item.path, max_pixels=settings.max_pixels)
    except FacematchError as exc:
        outcome = TOO_LARGE if isinstance(exc, ImageTooLarge) else UNREADABLE
        return ItemResult(item, _safe_hash(item), outcome, str(exc))
    base = dict(item=item, sha256=image.sha256, width=image.width, height=image.height,
                format=image.format, notes=tuple(image.notes))
    try:
        purpose = "custody" if kind == "custody" else "probe"
        faces = _worker_pipeline["pipeline"].analyse(image.pixels, purpose=purpose)
    except Exception as exc:  # a bad file must never abort the batch
        log.exception("analysis failed for %s", item.path)
        return ItemResult(**base, outcome=FAILED, reason=f"analysis failed: {type(exc).__name__}: {exc}")
    if not faces:
        return ItemResult(**base, outcome=NO_FACE, reason="no face detected")
    if kind == "scene":
        return ItemResult(**base, outcome=STORED, reason=f"{len(faces)} face(s) stored",
                          faces=faces, flags=[[] for _ in faces])
    return _custody_result(base, faces)


def _custody_result(base: dict, faces: list[FaceRecord]) -> ItemResult:
    """Custody: the largest face is the subject; several faces or poor quality are flagged, not dropped."""
    face = faces[0]
    flags, reasons = [], []
    if len(faces) > 1:
        flags.append(f"several faces ({len(faces)}): largest enrolled")
        reasons.append(f"{len(faces)} faces found, the largest enrolled")
    fit, why = is_fit_for_enrolment(FaceQuality.from_dict(face.quality), QualitySettings())
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


def _store_batch(catalogue: Catalogue, batch: list[ItemResult], kind: str, run_id: int,
                 summary: IngestSummary):
    """Write one batch in one transaction; returns the new face ids and embeddings for the index."""
    import numpy as np

    ids, vectors = [], []
    version = model_version()
    with catalogue.atomic():
        for result in batch:
            if result.sha256 is None:
                continue
            subject_id = (catalogue.subject_id(result.item.subject_ref, create=True)
                          if kind == "custody" and result.faces else None)
            item = result.item
            image_id = catalogue.add_image(
                sha256=result.sha256, kind=kind, original_path=str(item.path), outcome=result.outcome,
                reason=result.reason, subject_id=subject_id, custody_ref=item.custody_ref,
                case_ref=item.case_ref, captured_at=item.captured_at, source=item.source,
                width=result.width, height=result.height, format=result.format,
                notes=list(result.notes), run_id=run_id)
            if image_id is None:
                summary.already_stored += 1
                continue
            summary.outcomes[result.outcome] = summary.outcomes.get(result.outcome, 0) + 1
            for face_no, (face, flags) in enumerate(zip(result.faces, result.flags)):
                face_id = catalogue.add_face(image_id, kind, face_no, face, model_name=MODEL_NAME,
                                             model_version=version, subject_id=subject_id, flags=flags)
                ids.append(face_id)
                vectors.append(face.embedding)
        summary.faces_stored += len(ids)
    return np.asarray(ids, dtype=np.int64), np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
    batch = []
    for element in iterable:
        batch.append(element)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
