"""Ingest jobs started by operators: each runs in its own spawned process, with progress the page polls.

The analysis (detection, descriptors) never runs in the web process: native model calls hold the GIL
for tenths of a second each, which would stall the server's event loop and every page and API answer
behind it while an ingest runs. A thread in the web process only relays the child's progress.
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

from facematch.api import Facematch
from facematch.errors import FacematchError
from facematch.ingest.bulk import _single_threaded_children
from facematch.settings import Settings

__all__ = ["IngestJob", "IngestJobs"]

#: Seconds the relay thread waits for a message before checking that the child is still alive.
_POLL_S = 1.0


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


def _ingest_process(settings: Settings, source: str, collection: str, user: str, workers: int, out) -> None:
    """The child: one ingest into ``collection``, reporting ("progress", done, total), then
    ("finished", summary) or ("failed", message) on ``out``."""
    fm = Facematch(settings=settings)
    try:
        summary = fm.ingest_custody(Path(source), workers=workers, user=user, collection=collection,
                                    progress=lambda done, total: out.put(("progress", done, total)))
        out.put(("finished", summary.to_dict()))
    except FacematchError as exc:
        out.put(("failed", str(exc)))
    except Exception as exc:  # noqa: BLE001 - a job must end in a state the page can show
        out.put(("failed", f"internal error: {type(exc).__name__}"))
    finally:
        fm.close()


class IngestJobs:
    """Runs custody ingests into an agency collection: one spawned process per job (``workers`` analysis
    processes inside it: 1 analyses in that process), one relay thread per job in this process."""

    def __init__(self, fm: Facematch, workers: int):
        self.settings: Settings = fm.settings
        self.workers = workers
        self.jobs: dict[int, IngestJob] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")  # the server has threads: never fork

    def start(self, source: Path, *, collection: str, user: str, agency_id: int) -> IngestJob:
        job = IngestJob(next(self._ids), agency_id, user, str(source), collection)
        with self._lock:
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), daemon=True, name=f"ingest-{job.id}").start()
        return job

    def get(self, job_id: int, agency_id: int) -> IngestJob | None:
        job = self.jobs.get(job_id)
        return job if job and job.agency_id == agency_id else None

    def for_agency(self, agency_id: int) -> list[IngestJob]:
        return [j for j in self.jobs.values() if j.agency_id == agency_id]

    def _run(self, job: IngestJob) -> None:
        out = self._context.Queue()
        try:
            with _single_threaded_children():  # one native thread per analysis process
                child = self._context.Process(target=_ingest_process, name=f"facematch-ingest-{job.id}", daemon=True,
                                              args=(self.settings, job.source, job.collection, job.user,
                                                    self.workers, out))
                child.start()
            while job.state == "running":
                try:
                    message = out.get(timeout=_POLL_S)
                except queue.Empty:
                    if not child.is_alive():
                        job.state, job.error = "failed", f"internal error: the ingest process exited ({child.exitcode})"
                    continue
                if message[0] == "progress":
                    job.done, job.total = message[1], message[2]
                elif message[0] == "finished":
                    job.summary, job.state = message[1], "finished"
                else:
                    job.state, job.error = "failed", message[1]
            child.join(30)
        except Exception as exc:  # noqa: BLE001 - a job must end in a state the page can show
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}"
        finally:
            out.close()
