"""FAISS index of face embeddings keyed by face id: a derived artefact, always rebuildable from the catalogue.

Three kinds (`choose_index_spec` picks one from the gallery size and a memory budget):

- ``flat``: exact search over every vector (``IDMap2,Flat``); O(n) per query.
- ``ivf_flat``: inverted file over k-means cells holding the raw vectors (``IVF<nlist>,Flat``); a query
  scans ``nprobe`` cells, so recall depends on ``nprobe``; distances are exact.
- ``ivf_pq``: inverted file of product-quantised codes in RAM (``nbits=4``: SIMD "fast-scan" codes,
  ``IVF<nlist>,PQ<m>x4fs``; ``nbits=8``: ``IVF<nlist>,PQ<m>x8``). The raw float32 vectors live in a file
  beside the index (memory-mapped once saved) and re-rank a shortlist of
  ``shortlist_factor * max(k, 10)`` candidates, so the distances returned are exact and recall is limited
  only by the shortlist.

Every kind returns exact Euclidean (not squared) distances and supports removal (retention deletion;
HNSW is avoided because it cannot remove). Measured figures behind the selection rule: docs/scale.md.
Faiss's thread count is process-wide: set it with `set_faiss_threads`, never implicitly here. The file
format (atomic writes, checksums, the raw-vector file) lives in `facematch/index_files.py`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from facematch.errors import IndexMissing, IndexStale, InvalidArgument
from facematch.store.index_files import (
    CHUNK,
    RawVectors,
    content_digest,
    fault_point,
    fsync_and_hash,
    fsync_dir,
    ids_digest,
    open_vectors,
    temp_beside,
    write_vectors,
)

log = logging.getLogger(__name__)

__all__ = ["IndexSpec", "FaceIndex", "choose_index_spec", "set_faiss_threads", "INDEX_TYPES"]

INDEX_TYPES = ("flat", "ivf_flat", "ivf_pq")
#: Largest gallery searched exhaustively: one Flat query cost 1.3-3.4 ms of CPU at 50k and 2.6-7.6 ms at
#: 100k, depending on how busy the shared machine was (docs/scale.md).
FLAT_MAX_VECTORS = 50_000
#: RAM allowed for an index when the caller gives no budget (the 10M-vector target of docs/scale.md).
DEFAULT_MEMORY_BUDGET_BYTES = 4 * 2**30
#: Share of IVF cells scanned by default: dlib descriptors have little cluster structure, so recall@50
#: >= 0.99 needed 31% of the cells at 1M (25% sufficed at 10M, where the shortlist limits recall; docs/scale.md).
PROBE_FRACTION = 0.3125
#: ... and at least this many vectors' cells: smaller galleries need a larger share (recall@50 with 31% of
#: the cells: 0.984 at 200k, 0.987 at 500k, 0.993 at 1M), and 200k codes cost about 2 ms of CPU.
MIN_SCANNED_VECTORS = 200_000
_DEFAULTS = {
    "flat": {},
    "ivf_flat": {"nlist": 1024, "nprobe": 320, "train_size": None, "seed": 1234},
    "ivf_pq": {"nlist": 1024, "nprobe": 320, "m": 64, "nbits": 4, "shortlist_factor": 20,
               "train_size": None, "seed": 1234},
}
_FORMAT = 1
_MIN_SHORTLIST_K = 10  # an ivf_pq search re-ranks at least shortlist_factor * 10 candidates, even for k=1


@dataclass(frozen=True)
class IndexSpec:
    """How to build an index: ``kind``: the index type (one of `INDEX_TYPES`) and its ``params``.

    Params (missing ones take defaults): ``nlist`` k-means cells, ``nprobe`` cells scanned per query,
    ``m`` PQ sub-vectors (must divide dim) of ``nbits`` bits (4 or 8), ``shortlist_factor`` PQ candidates
    re-ranked per wanted neighbour (k below 10 counts as 10), ``train_size`` training sample (default
    max(64 * nlist, 65536)), ``seed``.
    Raises InvalidArgument for an unknown kind or parameter, or an out-of-range value.
    """

    kind: str
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in INDEX_TYPES:
            raise InvalidArgument(f"unknown index kind {self.kind!r}; expected one of {', '.join(INDEX_TYPES)}")
        unknown = set(self.params) - set(_DEFAULTS[self.kind])
        if unknown:
            raise InvalidArgument(f"unknown parameter(s) for {self.kind} index: {', '.join(sorted(unknown))}")
        merged = {**_DEFAULTS[self.kind], **self.params}
        for name in ("nlist", "nprobe", "m", "nbits", "shortlist_factor"):
            if name in merged and not (isinstance(merged[name], int) and merged[name] >= 1):
                raise InvalidArgument(f"index parameter {name} must be a positive integer, got {merged[name]!r}")
        if merged.get("nbits", 4) not in (4, 8):
            raise InvalidArgument(f"PQ nbits must be 4 (fast-scan) or 8, got {merged['nbits']}")
        object.__setattr__(self, "params", merged)


def _pq_bytes_per_vector(m: int, nbits: int) -> int:
    """RAM per vector of an ivf_pq index: code, faiss id, and FaceIndex's sorted id and row arrays."""
    return m * nbits // 8 + 8 + 16


def choose_index_spec(n_vectors: int, *, dim: int = 128, memory_budget_bytes: int | None = None) -> IndexSpec:
    """Pick the index for a gallery of `n_vectors` embeddings of `dim` float32 values.

    Rule (from figures measured on the 2-core development machine, docs/scale.md): exact ``flat`` up to
    FLAT_MAX_VECTORS (a query costs up to 3.4 ms of CPU at 50k, up to 7.6 ms at 100k); beyond,
    ``ivf_pq`` with 4-bit fast-scan codes and exact re-ranking: recall@50 0.993 at 3.5-3.9 ms of CPU per
    query for 1M vectors, 0.99 at 18-25 ms for 10M; ``ivf_flat`` needed 4-6 times longer for that recall.
    m is dim/2 (32 bytes a vector for 128-d), halved while the index RAM, about n * (m/2 + 24) bytes,
    would exceed `memory_budget_bytes` (default 4 GiB). nlist is the power of two nearest sqrt(n), within
    [256, 2048] (k-means and assignment cost grow with nlist); nprobe scans PROBE_FRACTION of the cells,
    and cells holding at least MIN_SCANNED_VECTORS vectors.
    """
    if n_vectors < 0 or dim < 1:
        raise InvalidArgument(f"n_vectors must be >= 0 and dim >= 1, got {n_vectors}, {dim}")
    budget = DEFAULT_MEMORY_BUDGET_BYTES if memory_budget_bytes is None else memory_budget_bytes
    if n_vectors <= FLAT_MAX_VECTORS:
        return IndexSpec("flat")
    nlist = int(min(2048, max(256, 2 ** round(math.log2(math.sqrt(n_vectors))))))
    m = dim // 2 if dim % 2 == 0 else dim
    while m % 2 == 0 and dim % (m // 2) == 0 and n_vectors * _pq_bytes_per_vector(m, 4) > budget and m > 8:
        m //= 2
    if n_vectors * _pq_bytes_per_vector(m, 4) > budget:
        log.warning("an ivf_pq index of %d vectors needs ~%.1f GiB, over the %.1f GiB budget", n_vectors,
                    n_vectors * _pq_bytes_per_vector(m, 4) / 2**30, budget / 2**30)
    nprobe = max(round(PROBE_FRACTION * nlist), math.ceil(nlist * min(1.0, MIN_SCANNED_VECTORS / n_vectors)))
    return IndexSpec("ivf_pq", {"nlist": nlist, "nprobe": nprobe, "m": m})


def set_faiss_threads(n: int) -> None:
    """Set the number of OpenMP threads faiss uses, process-wide (1 is best for single queries on 2 cores)."""
    if n < 1:
        raise InvalidArgument(f"thread count must be >= 1, got {n}")
    faiss.omp_set_num_threads(n)


def _exact_topk(queries: np.ndarray, cand_ids: np.ndarray, cand_vecs: np.ndarray, k: int):
    """Re-rank candidates by exact Euclidean distance (float32 differences, float64 sums).

    queries (m, dim); cand_ids (m, s) int64 with -1 for none; cand_vecs (m, s, dim).
    Returns D (m, k) float32 ascending with inf padding, I (m, k) int64 with -1 padding.
    """
    m, s = cand_ids.shape
    diff = cand_vecs - queries[:, None, :]  # direct differences: no |x|^2 + |y|^2 - 2xy cancellation
    dist = np.sqrt(np.einsum("msd,msd->ms", diff, diff, dtype=np.float64))
    dist[cand_ids < 0] = np.inf
    if s > k:  # partial sort: only the k best need ordering
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(part, np.argsort(np.take_along_axis(dist, part, 1), axis=1), 1)
    else:
        order = np.argsort(dist, axis=1)
    D = np.full((m, k), np.inf, np.float32)
    I = np.full((m, k), -1, np.int64)
    D[:, : order.shape[1]] = np.take_along_axis(dist, order, axis=1)
    I[:, : order.shape[1]] = np.take_along_axis(cand_ids, order, axis=1)
    I[~np.isfinite(D)] = -1
    return D, I


class FaceIndex:
    """Embeddings keyed by int64 face id. Distances returned are EXACT Euclidean (not squared), even for
    approximate index kinds (the shortlist is re-ranked with the raw vectors).

    Concurrent `search` calls from several threads are safe while nothing calls add/remove/save.
    """

    def __init__(self, dim: int = 128, spec: IndexSpec | None = None):
        if not (isinstance(dim, int) and dim >= 1):
            raise InvalidArgument(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.spec = spec if spec is not None else IndexSpec("flat")
        if self.spec.kind == "ivf_pq" and dim % self.spec.params["m"]:
            raise InvalidArgument(f"PQ m={self.spec.params['m']} does not divide dim={dim}")
        self._index_ = None  # faiss index, created on first train/add
        self._ids_ = np.empty(0, np.int64)  # sorted ids of stored vectors
        self._rows_ = np.empty(0, np.int64)  # ivf_pq: raw-vector row of each id in _ids_
        self._raw_ = RawVectors(dim) if self.spec.kind == "ivf_pq" else None

    def __repr__(self) -> str:
        return f"FaceIndex(dim={self.dim}, kind={self.spec.kind!r}, ntotal={self.ntotal})"

    @property
    def ntotal(self) -> int:
        """Number of stored vectors."""
        return len(self._ids_)

    @property
    def is_trained(self) -> bool:
        """False for an IVF index that has not been trained yet (use `FaceIndex.build`)."""
        return self.spec.kind == "flat" or (self._index_ is not None and self._index_.is_trained)

    def ids(self) -> np.ndarray:
        """All stored face ids, sorted (n,) int64 (a copy)."""
        return self._ids_.copy()

    def vectors(self, ids) -> np.ndarray:
        """The stored vectors (n, dim) float32 of face ids (n,) int64; raises InvalidArgument for an id
        not stored. Exact: what was added, bit for bit, whatever the kind."""
        ids = self._check_ids(ids)
        pos = np.searchsorted(self._ids_, ids)
        if len(ids) and (pos.max() >= len(self._ids_) or not np.array_equal(self._ids_[pos], ids)):
            raise InvalidArgument("vectors asked for face ids the index does not hold")
        if not len(ids):
            return np.empty((0, self.dim), np.float32)
        if self.spec.kind == "flat":
            return self._index_.reconstruct_batch(np.ascontiguousarray(ids))
        if self.spec.kind == "ivf_pq":
            return self._raw_.take(self._rows_[pos])
        return _ivf_flat_vectors(self._index_, ids)

    def content(self) -> dict:
        """What the index holds: ``count``, ``ids_sha256`` (its sorted id set) and ``content_sha256``
        (ids then vectors in id order; `index_files.content_digest`)."""
        return {"count": self.ntotal, "ids_sha256": ids_digest(self._ids_),
                "content_sha256": content_digest(self._ids_, self.vectors)}

    # -- building -------------------------------------------------------------------------------------
    def _factory(self) -> faiss.Index:
        p = self.spec.params
        pq = f"PQ{p.get('m')}x4fs" if p.get("nbits") == 4 else f"PQ{p.get('m')}x{p.get('nbits')}np"
        key = {"flat": "IDMap2,Flat", "ivf_flat": f"IVF{p.get('nlist')},Flat",
               "ivf_pq": f"IVF{p.get('nlist')},{pq}"}[self.spec.kind]
        index = faiss.index_factory(self.dim, key, faiss.METRIC_L2)  # "np": no polysemous training (slow)
        if self.spec.kind != "flat":
            index.cp.seed = p["seed"]
            if self.spec.kind == "ivf_pq":
                index.pq.cp.seed = p["seed"]
        return index

    def train(self, vectors: np.ndarray) -> None:
        """Train an IVF index (k-means cells, PQ codebooks) on a seeded sample of (n, dim) vectors.

        Raises InvalidArgument if the index is not empty or there are fewer vectors than cells.
        """
        if self.spec.kind == "flat":
            return
        if self.ntotal:
            raise InvalidArgument("cannot retrain an index that holds vectors; build a new one")
        vectors = self._check_vectors(vectors)
        p = self.spec.params
        if len(vectors) < p["nlist"]:
            raise InvalidArgument(f"{self.spec.kind} needs at least nlist={p['nlist']} training vectors, "
                                  f"got {len(vectors)}")
        size = min(len(vectors), p["train_size"] or max(64 * p["nlist"], 65536))
        rows = np.sort(np.random.default_rng(p["seed"]).choice(len(vectors), size, replace=False))
        sample = np.ascontiguousarray(vectors[rows], dtype=np.float32)
        t0 = time.perf_counter()
        self._index_ = self._factory()
        self._index_.train(sample)
        log.info("trained %s on %d vectors in %.1f s", self.spec.kind, size, time.perf_counter() - t0)

    @classmethod
    def build(cls, ids, vectors, *, spec: IndexSpec | None = None) -> "FaceIndex":
        """Index (n,) int64 `ids` with (n, dim) float32 `vectors`: train (IVF kinds) then add.

        The spec defaults to `choose_index_spec(n, dim=dim)`. Deterministic for a given spec (fixed seed).
        Raises InvalidArgument on malformed input or duplicate ids.
        """
        vectors = np.asarray(vectors) if not isinstance(vectors, np.ndarray) else vectors
        if vectors.ndim != 2:
            raise InvalidArgument(f"vectors must be (n, dim), got shape {vectors.shape}")
        spec = spec if spec is not None else choose_index_spec(len(vectors), dim=vectors.shape[1])
        index = cls(vectors.shape[1], spec)
        index.train(vectors)
        index.add(ids, vectors)
        return index

    def _check_vectors(self, vectors) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InvalidArgument(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        if not np.issubdtype(vectors.dtype, np.floating):
            raise InvalidArgument(f"vectors must be floating point, got {vectors.dtype}")
        return vectors

    def _check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
            raise InvalidArgument(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
        return ids.astype(np.int64, copy=False)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (n, dim) float32 `vectors` under (n,) int64 face `ids` (>= 0).

        Raises InvalidArgument on a shape mismatch, non-finite values, a negative id, an id repeated in
        `ids` or already stored, or an untrained IVF index.
        """
        ids, vectors = self._check_ids(ids), self._check_vectors(vectors)
        if len(ids) != len(vectors):
            raise InvalidArgument(f"{len(ids)} ids for {len(vectors)} vectors")
        if not len(ids):
            return
        if ids.min() < 0:
            raise InvalidArgument("face ids must be >= 0 (-1 marks padding in search results)")
        order = np.argsort(ids, kind="stable")
        sorted_new = ids[order]
        repeated = sorted_new[1:][sorted_new[1:] == sorted_new[:-1]]
        existing = sorted_new[np.isin(sorted_new, self._ids_)]
        if len(repeated) or len(existing):
            dup = np.unique(np.concatenate([repeated, existing]))
            raise InvalidArgument(f"duplicate face id(s) {dup[:5].tolist()} ({len(dup)} in all)")
        if not self.is_trained:
            raise InvalidArgument(f"{self.spec.kind} index is not trained; create it with FaceIndex.build")
        if self._index_ is None:
            self._index_ = self._factory()
        if not all(np.isfinite(vectors[s : s + CHUNK]).all() for s in range(0, len(ids), CHUNK)):
            raise InvalidArgument("vectors contain NaN or infinity")
        t0, rows = time.perf_counter(), [np.empty(0, np.int64)]
        for start in range(0, len(ids), CHUNK):
            block = np.ascontiguousarray(vectors[start : start + CHUNK], dtype=np.float32)
            self._index_.add_with_ids(block, np.ascontiguousarray(ids[start : start + CHUNK]))
            if self._raw_ is not None:
                rows.append(self._raw_.append(block, reserve=self._raw_.n_tail_ + len(ids) - start))
        pos = np.searchsorted(self._ids_, sorted_new)
        if self._raw_ is not None:
            self._rows_ = np.insert(self._rows_, pos, np.concatenate(rows)[order])
        self._ids_ = np.insert(self._ids_, pos, sorted_new)
        log.info("added %d vectors to %s index in %.1f s", len(ids), self.spec.kind, time.perf_counter() - t0)

    def remove(self, ids: np.ndarray) -> int:
        """Remove the vectors of (n,) int64 face `ids`; ids not stored are ignored. Returns the number removed."""
        ids = np.unique(self._check_ids(ids))
        present = ids[np.isin(ids, self._ids_)]
        if not len(present):
            return 0
        fast_scan = isinstance(self._index_, faiss.IndexIVFFastScan)
        sizes = _list_sizes(self._index_) if fast_scan else None
        removed = self._index_.remove_ids(faiss.IDSelectorBatch(len(present), faiss.swig_ptr(present)))
        if fast_scan:
            _clear_stale_slots(self._index_, np.flatnonzero(_list_sizes(self._index_) != sizes))
        if removed != len(present):  # would mean faiss and _ids_ disagree: never silently continue
            raise IndexStale(f"faiss removed {removed} of {len(present)} ids; run `facematch index rebuild`")
        keep = ~np.isin(self._ids_, present)
        self._ids_ = self._ids_[keep]
        if self._raw_ is not None:
            self._rows_ = self._rows_[keep]  # the raw rows become tombstones, dropped at the next save
        return int(removed)

    # -- searching ------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, *, nprobe: int | None = None,
               shortlist_factor: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest stored vectors of each of (m, dim) float32 `queries`.

        Returns D (m, k) float32 exact Euclidean distances ascending and I (m, k) int64 face ids; rows
        with fewer than k results are padded with D=inf, I=-1. `nprobe` and `shortlist_factor` override
        the spec's values for this call (IVF kinds; for tuning). Raises InvalidArgument on bad input.
        """
        queries = np.ascontiguousarray(self._check_vectors(queries), dtype=np.float32)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgument(f"k must be a positive integer, got {k!r}")
        if not np.isfinite(queries).all():
            raise InvalidArgument("queries contain NaN or infinity")
        k, m, p = int(k), len(queries), self.spec.params
        D = np.full((m, k), np.inf, np.float32)
        I = np.full((m, k), -1, np.int64)
        if self.ntotal == 0 or m == 0:
            return D, I
        params = None
        if self.spec.kind != "flat":
            probe = nprobe if nprobe is not None else p["nprobe"]
            if probe < 1:
                raise InvalidArgument(f"nprobe must be >= 1, got {probe}")
            params = faiss.SearchParametersIVF(nprobe=min(probe, p["nlist"]))
        if self.spec.kind == "ivf_flat":  # the IVF-Flat scanner computes each distance directly: exact
            D2, I = self._index_.search(queries, k, params=params)
            D = np.sqrt(np.maximum(D2, 0)).astype(np.float32)
            D[I < 0] = np.inf
            return D, I
        factor = 1 if self.spec.kind == "flat" else (shortlist_factor or p["shortlist_factor"])
        if shortlist_factor is not None and shortlist_factor < 1:
            raise InvalidArgument(f"shortlist_factor must be >= 1, got {shortlist_factor}")
        s = min(factor * max(k, _MIN_SHORTLIST_K), self.ntotal)
        step = max(1, 2**21 // (s * self.dim))  # bounds the float64 re-ranking block to ~16 MB
        for start in range(0, m, step):
            block = queries[start : start + step]
            _, cand = self._index_.search(block, s, params=params)
            D[start : start + step], I[start : start + step] = _exact_topk(block, cand, self._vectors_of(cand), k)
        return D, I

    def _vectors_of(self, cand: np.ndarray) -> np.ndarray:
        """Raw vectors (m, s, dim) float32 of candidate ids (m, s); zeros where the id is -1."""
        valid = cand >= 0
        if self.spec.kind == "flat":
            found = self._index_.reconstruct_batch(np.ascontiguousarray(cand[valid]))
        else:
            found = self._raw_.take(self._rows_[np.searchsorted(self._ids_, cand[valid])])
        if valid.all():
            return found.reshape(cand.shape + (self.dim,))
        out = np.zeros(cand.shape + (self.dim,), np.float32)
        out[valid] = found
        return out

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, path: Path, sidecar: dict) -> None:
        """Write the index to `path` (.faiss) and `sidecar` plus an ``index`` entry to `path`.json, atomically.

        The ``index`` key (kind, params, dim, ntotal, sha256 of the index file) is reserved and replaced.
        ivf_pq also writes its raw vectors, sorted by id, to `path`.vectors (then memory-maps them).
        Each file is written to a temporary name in the same folder, fsynced and renamed (sidecar last),
        then the folder is fsynced: a crash leaves the old pair, or a torn pair that `load` refuses.
        Raises InvalidArgument if `sidecar` is not a JSON-serialisable dict.
        """
        path = Path(path)
        meta_path, vec_path = path.with_suffix(".json"), path.with_suffix(".vectors")
        if not isinstance(sidecar, dict):
            raise InvalidArgument(f"sidecar must be a dict, got {type(sidecar).__name__}")
        info = {"format": _FORMAT, "kind": self.spec.kind, "params": self.spec.params, "dim": self.dim,
                "ntotal": self.ntotal}
        try:
            json.dumps(sidecar)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"sidecar is not JSON-serialisable: {exc}") from None
        t0, temps = time.perf_counter(), []
        try:
            tmp_index = temp_beside(path, temps)
            faiss.write_index(self._index_ if self._index_ is not None else self._factory(), str(tmp_index))
            info["index_sha256"], info["index_bytes"] = fsync_and_hash(tmp_index), tmp_index.stat().st_size
            unchanged = self._raw_ is not None and self._raw_.unchanged_copy_of(vec_path, self.ntotal)
            if unchanged:  # the file already holds exactly these vectors: no need to rewrite gigabytes
                info["vectors_sha256"] = self._raw_.source_[1]
            elif self._raw_ is not None:
                tmp_vec = temp_beside(vec_path, temps)
                info["vectors_sha256"] = write_vectors(tmp_vec, self._ids_, self._rows_, self._raw_)
            info["ids_sha256"] = ids_digest(self._ids_)  # what the index holds, not what it should
            info["content_sha256"] = (info["vectors_sha256"] if self._raw_ is not None  # same bytes hashed
                                      else content_digest(self._ids_, self.vectors))
            tmp_meta = temp_beside(meta_path, temps)
            with open(tmp_meta, "w", encoding="utf-8") as f:
                json.dump({**sidecar, "index": info}, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            fault_point("index-save-written")
            if self._raw_ is not None and not unchanged:
                os.replace(tmp_vec, vec_path)
            os.replace(tmp_index, path)
            fault_point("index-save-renamed")
            os.replace(tmp_meta, meta_path)
            fsync_dir(path.parent)
        finally:
            for tmp in temps:
                tmp.unlink(missing_ok=True)
        if self._raw_ is not None and not unchanged:  # from now on the raw vectors are read from disk
            _, base = open_vectors(vec_path, info)
            self._raw_ = RawVectors(self.dim, base, source=(vec_path, info["vectors_sha256"]))
            self._rows_ = np.arange(self.ntotal, dtype=np.int64)
        elif self._raw_ is None:
            vec_path.unlink(missing_ok=True)  # raw vectors of an earlier ivf_pq save
        log.info("saved %s index (%d vectors) to %s in %.1f s", self.spec.kind, self.ntotal, path,
                 time.perf_counter() - t0)

    @classmethod
    def load(cls, path: Path) -> tuple["FaceIndex", dict]:
        """Read an index saved by `save`; returns it and the sidecar dict (the caller's keys plus ``index``).

        Raises IndexMissing if neither file exists, IndexStale if one is missing, or the checksum, size,
        dimension or vector count disagree with the sidecar (a torn or interrupted save).
        """
        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.exists() and not meta_path.exists():
            raise IndexMissing(f"no index at {path}: run `facematch index rebuild`")
        stale = "; run `facematch index rebuild`"
        if not path.exists() or not meta_path.exists():
            missing = path if not path.exists() else meta_path
            raise IndexStale(f"index file pair is incomplete ({missing.name} is missing){stale}")
        try:
            doc = json.loads(meta_path.read_text(encoding="utf-8"))
            info = doc["index"]
            spec, dim, ntotal = IndexSpec(info["kind"], info["params"]), int(info["dim"]), int(info["ntotal"])
            expected_sha = info["index_sha256"]
        except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
            raise IndexStale(f"index sidecar {meta_path.name} is unreadable ({exc}){stale}") from None
        if info.get("format") != _FORMAT:
            raise IndexStale(f"index format {info.get('format')!r} is not {_FORMAT}{stale}")
        if fsync_and_hash(path, sync=False) != expected_sha:
            raise IndexStale(f"{path.name} does not match its sidecar (checksum differs: torn or "
                             f"interrupted save){stale}")
        index = faiss.read_index(str(path))
        wanted = {"flat": faiss.IndexIDMap2, "ivf_flat": faiss.IndexIVFFlat,
                  "ivf_pq": faiss.IndexIVFPQFastScan if spec.params.get("nbits") == 4 else faiss.IndexIVFPQ}
        if index.d != dim or index.ntotal != ntotal or not isinstance(index, wanted[spec.kind]):
            raise IndexStale(f"{path.name} holds {type(index).__name__} d={index.d} n={index.ntotal}, "
                             f"sidecar says {spec.kind} d={dim} n={ntotal}{stale}")
        obj = cls(dim, spec)
        obj._index_, obj._ids_ = index, _index_ids(index)
        if info.get("ids_sha256", ids_digest(obj._ids_)) != ids_digest(obj._ids_):
            raise IndexStale(f"{path.name} holds other face ids than its sidecar records{stale}")
        if obj._raw_ is not None:
            vec_ids, base = open_vectors(path.with_suffix(".vectors"), info)
            if not np.array_equal(vec_ids, obj._ids_):
                raise IndexStale(f"raw vectors beside {path.name} hold other ids{stale}")
            obj._raw_ = RawVectors(dim, base, source=(path.with_suffix(".vectors"), info["vectors_sha256"]))
            obj._rows_ = np.arange(ntotal, dtype=np.int64)
        return obj, doc


def _index_ids(index: faiss.Index) -> np.ndarray:
    """Sorted ids (n,) int64 stored in a faiss IDMap2 or IVF index."""
    if isinstance(index, faiss.IndexIDMap2):
        ids = faiss.vector_to_array(index.id_map)
    else:
        lists = index.invlists
        parts = [np.empty(0, np.int64)]
        for no in range(index.nlist):
            size = lists.list_size(no)
            if size:
                ptr = lists.get_ids(no)
                parts.append(faiss.rev_swig_ptr(ptr, size).copy())
                lists.release_ids(no, ptr)
        ids = np.concatenate(parts)
    return np.sort(ids.astype(np.int64))


def _ivf_flat_vectors(index: faiss.IndexIVFFlat, ids: np.ndarray) -> np.ndarray:
    """Vectors (n, dim) float32 of stored ids (n,), read from the inverted lists (IVF-Flat keeps them raw)."""
    out = np.empty((len(ids), index.d), np.float32)
    order = np.argsort(ids)
    wanted = ids[order]
    lists = index.invlists
    for no in range(index.nlist):
        size = lists.list_size(no)
        if not size:
            continue
        id_ptr, code_ptr = lists.get_ids(no), lists.get_codes(no)
        list_ids = faiss.rev_swig_ptr(id_ptr, size).copy()
        codes = faiss.rev_swig_ptr(code_ptr, size * lists.code_size).copy().view(np.float32).reshape(size, -1)
        lists.release_ids(no, id_ptr)
        lists.release_codes(no, code_ptr)
        pos = np.searchsorted(wanted, list_ids)
        hit = (pos < len(wanted)) & (wanted[np.minimum(pos, len(wanted) - 1)] == list_ids)
        out[order[pos[hit]]] = codes[hit]
    return out


def _list_sizes(index: faiss.IndexIVF) -> np.ndarray:
    return np.array([index.invlists.list_size(no) for no in range(index.nlist)], np.int64)


def _clear_stale_slots(index: faiss.IndexIVF, lists: np.ndarray) -> None:
    """Zero the unused slots of the last block of fast-scan lists after a removal.

    Works around faiss 1.15: BlockInvertedLists.remove_ids leaves the removed codes' 4-bit nibbles in the
    freed slots, and a later add ORs new codes into them, corrupting exactly the re-added vectors.
    """
    invlists = faiss.downcast_InvertedLists(index.invlists)
    packer, per_block = invlists.packer, invlists.n_per_block
    zero = np.zeros(packer.code_size, np.uint8)
    for no in lists:
        size = invlists.list_size(int(no))
        n_slots = -(-size // per_block) * per_block
        if size == n_slots:
            continue
        codes = faiss.rev_swig_ptr(invlists.get_codes(int(no)), n_slots // per_block * invlists.block_size)
        for slot in range(size, n_slots):
            packer.pack_1_c(faiss.swig_ptr(zero), slot, faiss.swig_ptr(codes))
