"""A search's probe images analysed in parallel processes, with the same results as one after another.

The probe cascade costs 0.4-1.2 s of CPU per 352x288 CCTV still, so five stills of one person analysed
in turn were most of a person-level search's wall time. Here the calling process and ``workers - 1``
child processes each claim the next image not yet taken (a shared counter) and analyse it whole with
``ranking.analyse_probes``; the rows come back in the images' order, numbered as the serial path
numbers them: the same detections, descriptors and quality, bit for bit (same code, same models).

The children are forked after the caller loaded its models, so they inherit them (copy-on-write) and
start at once; a spawned child would first import facematch and load the models again (~1 s, about
two stills' analysis). Fork is used only where it is safe: the platform has it, no other Python thread
runs (a server's threads would be copied mid-lock), this process is not a daemonic pool worker, and no
image was analysed in this process yet: dlib starts a thread pool on its first detection, and a child
forked after that deadlocks on the pool's copied locks (seen). The CLI, one search per process, always
qualifies; otherwise (a long-lived caller's second search, one worker, one image) the images are
analysed serially here. The children never touch FAISS or the catalogue. The service's search
workers, a process pool already, are set to 1 (``Settings.search_workers``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from facematch.faces.pipeline import FacePipeline, analysed_in_this_process
from facematch.search.ranking import ProbeFace, analyse_probes
from facematch.settings import PersonSettings
from facematch.types import FaceBox

__all__ = ["probe_workers", "can_fork", "analyse_probes_parallel"]

log = logging.getLogger(__name__)

Rows = list[tuple[ProbeFace, "np.ndarray | None"]]

#: The pipeline forked children use: set by the caller just before it forks them, inherited by them.
_PIPELINE: FacePipeline | None = None

#: Seconds the caller waits for a child's next outcome before it ends that child and analyses the child's
#: images itself. One still costs at most a few CPU seconds (the probe cascade's budget is ~1.8 s), so a
#: child silent this long is hung (a copied lock), not slow; the search then completes serially.
CHILD_SILENCE_S = 120.0


def probe_workers(requested: int | None, images: int) -> int:
    """How many processes (the caller included) analyse ``images`` probe images: ``requested`` (None: one
    per image, at most the CPU cores), never more than there are images."""
    wanted = requested if requested is not None else (os.cpu_count() or 1)
    return max(1, min(wanted, images))


def can_fork() -> bool:
    """Whether this process may fork analysis workers now (the conditions: the module's docstring)."""
    if multiprocessing.current_process().daemon or threading.active_count() != 1:
        return False
    dlib_ran = analysed_in_this_process() or "face_recognition" in sys.modules  # the evaluation's baseline
    return "fork" in multiprocessing.get_all_start_methods() and not dlib_ran


def analyse_probes_parallel(pipeline: FacePipeline, paths: list[Path], *, workers: int | None, max_pixels: int,
                            boxes: list[FaceBox | None] | None = None, one_person: bool = False,
                            person: PersonSettings | None = None) -> Rows:
    """``ranking.analyse_probes`` on ``probe_workers(workers, len(paths))`` processes, this one included.

    Unreadable images and images without a face are reported on their rows as serially; an error the
    serial path raises (a box outside its image) is raised too, the first in the images' order. An image
    whose child died is analysed here.
    """
    jobs = list(zip(paths, boxes or [None] * len(paths)))
    options = {"max_pixels": max_pixels, "one_person": one_person, "person": person}
    count = probe_workers(workers, len(jobs))
    if count < 2 or not can_fork():
        if count > 1:
            log.info("%d probe images analysed serially: this process cannot fork workers now", len(jobs))
        return analyse_probes(pipeline, paths, boxes=[b for _, b in jobs], **options)
    context = multiprocessing.get_context("fork")
    counter = context.Value("i", 0)
    children = _start_children(context, count - 1, pipeline, counter, jobs, options)
    try:
        results = dict(_work(pipeline, counter, jobs, options))
        received = 0
        for child, receive in children:
            while True:
                try:
                    if not receive.poll(CHILD_SILENCE_S):
                        log.warning("a search worker sent nothing for %.0f s: ended, its images analysed here",
                                    CHILD_SILENCE_S)
                        child.terminate()
                        break
                    index, outcome = receive.recv()
                except EOFError:
                    break
                results[index] = outcome
                received += 1
            child.join()
    finally:
        for child, receive in children:
            receive.close()
            if child.is_alive():
                child.terminate()
    out: Rows = []
    for index, (path, box) in enumerate(jobs):
        if index not in results:
            log.warning("a search worker died before returning %s: analysing it here", path)
            results[index] = next(iter(_work(pipeline, None, [(path, box)], options)))[1]
        if isinstance(results[index], BaseException):
            raise results[index]
        for probe, embedding in results[index]:
            probe.probe_no = len(out) + 1
            out.append((probe, embedding))
    log.info("%d probe images analysed on %d processes: %d by the forked workers", len(jobs), count, received)
    return out


def _start_children(context, n: int, pipeline: FacePipeline, counter, jobs, options) -> list:
    """``n`` forked children sharing ``pipeline``'s loaded models, each with the receiving end of its pipe."""
    global _PIPELINE
    pipeline.load_models()  # once, here: the children inherit them
    _PIPELINE = pipeline
    children = []
    try:
        for _ in range(n):
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_child, args=(send, counter, jobs, options), daemon=True,
                                    name="facematch-probe-worker")
            child.start()
            send.close()
            children.append((child, receive))
    finally:
        _PIPELINE = None
    return children


def _child(send, counter, jobs, options) -> None:
    """A forked worker: analyses the images it claims with the inherited pipeline, sends the outcomes."""
    for index, outcome in _work(_PIPELINE, counter, jobs, options):
        try:
            send.send((index, outcome))
        except Exception:  # an error that does not pickle: the caller analyses that image itself
            log.debug("cannot return the outcome of image %d", index, exc_info=True)
    send.close()


def _work(pipeline: FacePipeline, counter, jobs, options):
    """(index, rows or the error raised) for each image this process claims (all of them without a counter)."""
    index = -1
    while True:
        if counter is None:
            index += 1
        else:
            with counter.get_lock():
                index = counter.value
                counter.value += 1
        if index >= len(jobs):
            return
        path, box = jobs[index]
        started = time.process_time()
        try:
            rows = analyse_probes(pipeline, [path], boxes=[box], **options)
        except Exception as exc:
            yield index, exc
            continue
        log.debug("%s analysed in %.2f s of CPU (process %d)", path, time.process_time() - started, os.getpid())
        yield index, rows
