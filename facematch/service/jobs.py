"""Ingest jobs started by operators: each runs in its own spawned process, with progress the page polls.

A job ingests custody images into an agency collection, or crime-scene images into a case of the
operator's agency (``kind="scene"``): the case, created when new, is that agency's alone.

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
from facematch.store.catalogue import utc_now

__all__ = ["INGEST_PAGE", "IngestJob", "IngestJobs", "job_list"]

#: Ingests listed per page (the API's default and the ingest page's).
INGEST_PAGE = 50

#: Seconds the relay thread waits for a message before checking that the child is still alive.
_POLL_S = 1.0


@dataclass
class IngestJob:
    id: int
    agency_id: int
    user: str
    source: str
    collection: str | None
    kind: str = "custody"      # custody (into ``collection``) or scene (into ``case`` of the agency)
    case: str | None = None
    done: int = 0
    total: int = 0
    state: str = "running"     # running, finished, failed
    error: str | None = None
    summary: dict = field(default_factory=dict)
    run_id: int | None = None  # the catalogue's run, once the child has recorded it
    started_at: str = field(default_factory=utc_now)

    def to_dict(self) -> dict:
        return {"id": self.id, "run_id": self.run_id, "kind": self.kind, "user": self.user,
                "collection": self.collection, "case": self.case, "started_at": self.started_at,
                "finished_at": None, "done": self.done, "total": self.total, "state": self.state,
                "error": self.error, "summary": self.summary,
                "processed": self.summary.get("processed", 0), "faces_stored": self.summary.get("faces_stored", 0),
                "failures": None,
                "percent": round(100 * self.done / self.total, 1) if self.total else (100.0 if self.state != "running" else 0.0)}


def job_list(runs: list[dict], jobs: list[IngestJob], *, limit: int = 50) -> list[dict]:
    """An agency's ingest list, newest first: its catalogue ``runs`` (``Catalogue.ingest_runs``: they
    outlive the server) merged with this server's ``jobs`` of that agency (live progress, or the error of
    a job that failed). A job whose run is recorded shows as that run with the job's id and progress; a
    job with no run (not started yet, or failed before it) shows on its own."""
    by_run = {j.run_id: j for j in jobs if j.run_id is not None}
    entries = []
    for run in runs:
        entry = {"id": None, "run_id": run["id"], "kind": run["kind"], "user": run["user"],
                 "collection": run["collection"], "case": run["case_ref"], "started_at": run["started_at"],
                 "finished_at": run["finished_at"], "done": run["processed"],
                 "total": run["total"] if run["total"] is not None else run["processed"], "state": run["state"],
                 "error": run.get("error"), "summary": {}, "processed": run["processed"],
                 "faces_stored": run["faces_stored"],
                 "failures": run["failures"], "percent": 100.0 if run["state"] == "finished" else None}
        job = by_run.pop(run["id"], None)
        if job is not None:  # this server's job: its live progress (or its error) wins over the record
            live = job.to_dict()
            entry.update(id=job.id, collection=job.collection, case=job.case, error=job.error, summary=job.summary,
                         percent=live["percent"])
            if job.state == "running" or run["state"] != "finished":
                entry.update(state=job.state, done=job.done, total=job.total)
        entries.append(entry)
    entries += [j.to_dict() for j in jobs if j.run_id is None or j.run_id in by_run]
    entries.sort(key=lambda e: (e["started_at"], e["run_id"] or 0, e["id"] or 0), reverse=True)
    return entries[:limit]


def _ingest_process(settings: Settings, job: IngestJob, agency: str | None, workers: int, out) -> None:
    """The child: one ingest (custody into ``job.collection``, or scene into ``agency``'s ``job.case``),
    reporting ("run", run_id) once the catalogue records the run, ("progress", done, total), then
    ("finished", summary) or ("failed", message) on ``out``."""
    fm = Facematch(settings=settings)
    progress = lambda done, total: out.put(("progress", done, total))  # noqa: E731
    on_run = lambda run_id: out.put(("run", run_id))  # noqa: E731
    try:
        if job.kind == "scene":
            summary = fm.ingest_scene(Path(job.source), case=job.case, workers=workers, user=job.user,
                                      agency=agency, progress=progress, on_run=on_run)
        else:
            summary = fm.ingest_custody(Path(job.source), workers=workers, user=job.user,
                                        collection=job.collection, progress=progress, on_run=on_run)
        out.put(("finished", summary.to_dict()))
    except FacematchError as exc:
        out.put(("failed", str(exc)))
    except Exception as exc:  # noqa: BLE001 - a job must end in a state the page can show
        out.put(("failed", f"internal error: {type(exc).__name__}"))
    finally:
        fm.close()


class IngestJobs:
    """Runs ingests into an agency's collection or case: one spawned process per job (``workers`` analysis
    processes inside it: 1 analyses in that process), one relay thread per job in this process."""

    def __init__(self, fm: Facematch, workers: int):
        self.settings: Settings = fm.settings
        self.workers = workers
        self.jobs: dict[int, IngestJob] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")  # the server has threads: never fork

    def start(self, source: Path, *, collection: str | None = None, user: str, agency_id: int,
              case: str | None = None, agency: str | None = None) -> IngestJob:
        """A custody job (``collection``) or, with ``case`` and ``agency`` (its name), a crime-scene job."""
        kind = "scene" if case else "custody"
        if kind == "scene" and not agency:
            raise ValueError("a crime-scene job needs the agency that owns the case")
        job = IngestJob(next(self._ids), agency_id, user, str(source), collection, kind=kind, case=case)
        with self._lock:
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, agency), daemon=True, name=f"ingest-{job.id}").start()
        return job

    def get(self, job_id: int, agency_id: int) -> IngestJob | None:
        job = self.jobs.get(job_id)
        return job if job and job.agency_id == agency_id else None

    def for_agency(self, agency_id: int) -> list[IngestJob]:
        return [j for j in self.jobs.values() if j.agency_id == agency_id]

    def listing(self, catalogue, agency_id: int, *, limit: int = INGEST_PAGE, before: int | None = None) -> list[dict]:
        """The agency's last ``limit`` ingests: the catalogue's runs with this server's live jobs. With
        ``before`` (a run id), the older page: runs recorded before that one, with the live progress of any
        of them that is this server's job (jobs not recorded yet belong to the newest page)."""
        runs = catalogue.ingest_runs(agency_id, limit=limit, before=before)
        jobs = self.for_agency(agency_id)
        if before is not None:
            ids = {r["id"] for r in runs}
            jobs = [j for j in jobs if j.run_id in ids]
        return job_list(runs, jobs, limit=limit)

    def _run(self, job: IngestJob, agency: str | None) -> None:
        out = self._context.Queue()
        try:
            with _single_threaded_children():  # one native thread per analysis process
                child = self._context.Process(target=_ingest_process, name=f"facematch-ingest-{job.id}", daemon=True,
                                              args=(self.settings, job, agency, self.workers, out))
                child.start()
            while job.state == "running":
                try:
                    message = out.get(timeout=_POLL_S)
                except queue.Empty:
                    if not child.is_alive():
                        job.state, job.error = "failed", f"internal error: the ingest process exited ({child.exitcode})"
                    continue
                if message[0] == "run":
                    job.run_id = message[1]
                elif message[0] == "progress":
                    job.done, job.total = message[1], message[2]
                elif message[0] == "finished":
                    job.summary, job.state = message[1], "finished"
                    job.run_id = job.run_id or job.summary.get("run_id")
                else:
                    job.state, job.error = "failed", message[1]
            child.join(30)
        except Exception as exc:  # noqa: BLE001 - a job must end in a state the page can show
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}"
        finally:
            out.close()
