"""A search restricted to the faces its user may see: filtering happens before ranking.

``FilteredIndex`` wraps a ``FaceIndex`` and answers only with allowed face ids, fetching more neighbours
from the whole index (x4 each round) until it holds ``k`` allowed ones or has seen every vector. The
ranking code sees nothing else, so a face outside the scope can neither be listed nor displace, fuse
with or be counted beside an allowed one.
"""

from __future__ import annotations

import numpy as np

from facematch.store.index import FaceIndex

__all__ = ["FilteredIndex"]

_FIRST_FETCH = 64


class FilteredIndex:
    """The ``search``/``ntotal`` surface of a ``FaceIndex``, limited to ``allowed`` face ids."""

    def __init__(self, index: FaceIndex, allowed: np.ndarray):
        self.index = index
        self.allowed = np.unique(np.asarray(allowed, dtype=np.int64))

    @property
    def ntotal(self) -> int:
        return min(len(self.allowed), self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances and ids ``(1, k)`` of the ``k`` nearest allowed faces (padded with inf and -1)."""
        queries = np.asarray(queries, dtype=np.float32).reshape(1, -1)
        out_d = np.full((1, k), np.inf, dtype=np.float32)
        out_i = np.full((1, k), -1, dtype=np.int64)
        full = self.index.ntotal
        if full == 0 or self.ntotal == 0 or k < 1:
            return out_d, out_i
        want = min(k, self.ntotal)
        fetch = min(full, max(4 * k, k + _FIRST_FETCH))
        while True:
            distances, ids = self.index.search(queries, fetch)
            keep = (ids[0] >= 0) & np.isin(ids[0], self.allowed)
            if keep.sum() >= want or fetch >= full:
                break
            fetch = min(full, fetch * 4)
        found_d, found_i = distances[0][keep][:k], ids[0][keep][:k]
        out_d[0, :len(found_d)], out_i[0, :len(found_i)] = found_d, found_i
        return out_d, out_i
