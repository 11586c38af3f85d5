"""Ingest jobs started by operators: one background thread each, with progress the page polls."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from pathlib import Path

from facematch.api import Facematch
from facematch.errors import FacematchError

__all__ = ["IngestJob", "IngestJobs"]


@dataclass
class IngestJob:
    id: int
    agency_id: int
    user: str
    source: str
    collection: str
    done: int = 0
    total: int = 0
    state: str = "running"     # running, finished, failed
    error: str | None = None
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "user": self.user, "collection": self.collection, "done": self.done,
                "total": self.total, "state": self.state, "error": self.error, "summary": self.summary,
                "percent": round(100 * self.done / self.total, 1) if self.total else (100.0 if self.state != "running" else 0.0)}


class IngestJobs:
    """Runs custody ingests into an agency collection, one thread per job (ingest uses its own processes)."""

    def __init__(self, fm: Facematch, workers: int):
        self.fm, self.workers = fm, workers
        self.jobs: dict[int, IngestJob] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, source: Path, *, collection: str, user: str, agency_id: int) -> IngestJob:
        job = IngestJob(next(self._ids), agency_id, user, str(source), collection)
        with self._lock:
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, source), daemon=True, name=f"ingest-{job.id}").start()
        return job

    def get(self, job_id: int, agency_id: int) -> IngestJob | None:
        job = self.jobs.get(job_id)
        return job if job and job.agency_id == agency_id else None

    def for_agency(self, agency_id: int) -> list[IngestJob]:
        return [j for j in self.jobs.values() if j.agency_id == agency_id]

    def _run(self, job: IngestJob, source: Path) -> None:
        def progress(done, total):
            job.done, job.total = done, total

        try:
            summary = self.fm.ingest_custody(source, workers=self.workers, user=job.user, progress=progress,
                                             collection=job.collection)
            job.summary, job.state = summary.to_dict(), "finished"
        except FacematchError as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # a job must end in a state the page can show
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}"
        finally:
            self.fm.close()
