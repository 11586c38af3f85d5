"""The process pool that does the CPU-heavy part of a search (detection, descriptors, ranking).

Each worker process holds one ``Facematch`` whose models load once; the web process only parses
requests and renders. A search runs entirely in a worker, scoped to what its user may see.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from facematch.api import Facematch
from facematch.settings import Settings

__all__ = ["make_pool", "search_job", "search_for", "warm_up"]

_FM: Facematch | None = None


def _init(settings: Settings) -> None:
    global _FM
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # searches run serially here: this process is one of a pool already (no pool inside a pool)
    _FM = Facematch(settings=settings.replace(search_workers=1))


def make_pool(settings: Settings, workers: int) -> ProcessPoolExecutor:
    """Worker processes started with ``spawn`` (the server has threads; fork would copy their locks)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init, initargs=(settings,))


def warm_up() -> str:
    """Load the models now rather than on the first search."""
    _FM.pipeline.load_models()
    return "ready"


def search_job(user_id: int, paths: list[str], boxes: list, case: str, reason: str,
               collections: list[str] | None, top: int | None) -> int:
    """Run one search for ``user_id`` in this worker; returns the stored search's id."""
    return search_for(_FM, user_id, paths, boxes, case, reason, collections, top)


def search_for(fm: Facematch, user_id: int, paths: list[str], boxes: list, case: str, reason: str,
               collections: list[str] | None, top: int | None) -> int:
    """One search for ``user_id`` over what they may see, recorded as their agency's; returns its id."""
    accounts = fm.accounts
    user = accounts.user(user_id)
    scope = accounts.search_scope(user, collections)
    case_id = accounts.case_id(user.agency_id, case, create=True)
    result = fm.search(paths, case=case, top=top, user=user.username, reason=reason,
                        boxes=[tuple(b) if b else None for b in boxes], scope=scope)
    accounts.record_search_owner(result.search_id, user, case_id, scope.collections)
    return result.search_id
