"""Ingestion beyond one machine: the analysis runs on a Dask cluster, this process writes the catalogue.

Optional extra: ``pip install "facematch[dask]"`` (``dask`` and ``distributed``). Why Dask and not Ray
Data is written down, with the measurements, in docs/ingest-performance.md.

The split is the local backend's: workers decode, detect and embed (``facematch.ingest.bulk.analyse_job``,
the very function the local process pool runs, each worker process keeping one pipeline with its
models loaded once); results stream back to this process, which alone writes them to the catalogue
and the index through ``ingest``'s batched transactions. So a cluster run gives the same catalogue
and index as a local one, keeps its idempotence (content hashes are checked here, before anything is
sent) and its resume after a kill. A task lost with a worker is rerun by Dask; each job's result is
stored once.

Workers open the images by path: every worker must see the same paths (a shared file system or the
same object-store mount). Run workers with one thread each (``--nthreads 1``), one per core: the
analysis is CPU-bound and a pipeline serialises calls made from several threads.

Example (a scheduler already running at tcp://scheduler:8786)::

    from distributed import Client
    from facematch.api import Facematch
    from facematch.ingest.dask_backend import DaskAnalyser
    from facematch.ingest.bulk import ingest
    from facematch.ingest.sources import custody_items

    fm = Facematch("facematch-data")
    with Client("tcp://scheduler:8786") as client:
        ingest(fm.catalogue, fm.index_store, custody_items("manifest.csv"), kind="custody",
               settings=fm.settings, user="ingest-bot", source="manifest.csv",
               analyse=DaskAnalyser(client))
"""

from __future__ import annotations

import itertools
import logging
from typing import Iterator

from facematch.errors import InvalidArgument
from facematch.ingest.bulk import ItemResult, Job, analyse_job
from facematch.settings import Settings

__all__ = ["DaskAnalyser", "analyse_chunk"]

log = logging.getLogger(__name__)


class DaskAnalyser:
    """An ``ingest(..., analyse=...)`` backend that runs the analysis on a Dask ``distributed.Client``.

    Parameters: ``client``; ``chunk_size`` jobs per task (amortises the scheduler's ~1 ms per task);
    ``tasks_per_worker`` tasks queued per worker thread at most (bounds the memory of results in
    flight, and what is redone when the driver dies). Results are yielded as tasks finish.
    """

    def __init__(self, client, *, chunk_size: int = 8, tasks_per_worker: int = 2):
        if chunk_size < 1 or tasks_per_worker < 1:
            raise InvalidArgument("chunk_size and tasks_per_worker must be at least 1")
        self.client = client
        self.chunk_size = chunk_size
        self.tasks_per_worker = tasks_per_worker

    def __call__(self, jobs: list[Job], settings: Settings) -> Iterator[ItemResult]:
        from distributed import as_completed

        chunks = [jobs[i:i + self.chunk_size] for i in range(0, len(jobs), self.chunk_size)]
        if not chunks:
            return
        limit = max(1, self._threads() * self.tasks_per_worker)
        queued = iter(chunks)
        running = as_completed([self._submit(chunk, settings) for chunk in itertools.islice(queued, limit)])
        for future in running:
            yield from future.result()
            future.release()
            following = next(queued, None)
            if following is not None:
                running.add(self._submit(following, settings))

    def _submit(self, chunk: list[Job], settings: Settings):
        return self.client.submit(analyse_chunk, chunk, settings, pure=False)

    def _threads(self) -> int:
        threads = sum(self.client.nthreads().values())
        if threads == 0:
            log.warning("the Dask cluster has no workers yet; tasks wait until one joins")
        return threads


def analyse_chunk(jobs: list[Job], settings: Settings) -> list[ItemResult]:
    """Run on a worker: ``analyse_job`` for each job (the worker process keeps its pipeline)."""
    return [analyse_job(job, settings) for job in jobs]
