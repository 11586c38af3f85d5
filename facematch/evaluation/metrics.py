"""Accuracy metrics for face comparison, in ISO/IEC 19795-1 and NIST FRTE terms.

Every function here is pure: it takes arrays of comparison scores (or lists of search outcomes) and
returns numbers; nothing is detected, embedded or read from disk.

Score convention: scores are dlib Euclidean **distances** between 128-d descriptors, so *lower means
more similar* (face_recognition's default decision tolerance is 0.6). A comparison is declared a
match when ``distance <= threshold``. Verification functions accept ``higher_is_better=True`` for
similarity scores; they then negate the scores internally and hand back thresholds in the caller's units.

Terms (ISO/IEC 19795-1:2021, NIST FRTE 1:1 and 1:N reports):

- *mated comparison*: two samples of the same person; *non-mated comparison*: of different people.
- *FMR* (false match rate): fraction of non-mated comparisons declared a match at threshold t.
- *FNMR* (false non-match rate): fraction of mated comparisons not declared a match at t.
- *TAR* (true accept rate) = 1 - FNMR; *FAR* is used here as a synonym of FMR (no failures to acquire
  in a list of scores).
- *EER* (equal error rate): the error rate where FMR = FNMR.
- *mated search*: a 1:N search whose subject is enrolled; *non-mated search*: whose subject is not.
- *FNIR(N, R, T)* (false negative identification rate): fraction of mated searches in which the
  enrolled subject is not returned at rank <= R with distance <= T.
- *FPIR(N, T)* (false positive identification rate): fraction of non-mated searches that return one or
  more candidates with distance <= T (identification mode: the top candidate decides).
- *CMC* (cumulative match characteristic): hit rate at rank r = fraction of mated searches whose
  enrolled subject is at rank <= r, with no threshold (investigation mode).
- *FTA* (failure to acquire): no face or no template from a probe; *FTE* (failure to enrol): the same
  for a gallery sample. Following NIST FRTE, a probe that failed to acquire returns an empty candidate
  list: a miss for a mated search and a correct rejection for a non-mated one. It is never dropped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np

from facematch.errors import InvalidArgument
from facematch.settings import EvaluationSettings

_DEFAULTS = EvaluationSettings()

__all__ = [
    "RocCurve", "TarAtFar", "LfwAccuracy", "SearchOutcome", "IdentificationPoint", "FailureRates",
    "roc", "det", "eer", "threshold_for_fmr", "tar_at_far", "lfw_10fold_accuracy",
    "true_rank", "cmc", "fnir_fpir_at_threshold", "fnir_at_fpir", "search_scores", "failure_rates",
    "bootstrap_ci", "by_group", "differential",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
_EPS = 1e-9  # guards floor(target * n) against binary rounding (0.07 * 100 = 7.000000000000001)


class RocCurve(NamedTuple):
    """Error trade-off points, one per threshold; all arrays have shape ``(k,)``, float64."""

    fmr: np.ndarray
    fnmr: np.ndarray
    thresholds: np.ndarray


class TarAtFar(NamedTuple):
    """TAR at the largest threshold whose FMR does not exceed the target FAR.

    ``tar``, ``threshold`` and ``fmr`` (the FMR actually reached) are NaN when the target is below the
    resolution 1 / ``n_nonmated``: so few non-mated comparisons cannot show such a low rate.
    """

    tar: float
    threshold: float
    fmr: float
    n_nonmated: int


class LfwAccuracy(NamedTuple):
    """LFW-protocol accuracy: mean and spread over folds, and per-fold accuracy and threshold."""

    mean: float
    std: float  # sample standard deviation over folds (ddof=1)
    sem: float  # standard error of the mean, std / sqrt(n_folds): what the LFW results page reports
    accuracies: np.ndarray  # (n_folds,)
    thresholds: np.ndarray  # (n_folds,), in distance units


class IdentificationPoint(NamedTuple):
    """One 1:N operating point: FNIR and FPIR at a threshold, with the counts behind them."""

    threshold: float
    fnir: float
    fpir: float
    n_mated: int
    n_nonmated: int
    rank: int
    fpir_target: float = math.nan  # set by fnir_at_fpir; NaN at a fixed threshold


class FailureRates(NamedTuple):
    """Failure-to-acquire rates over probes and failure-to-enrol rate over gallery samples."""

    fta: float
    fta_mated: float
    fta_nonmated: float
    n_probes: int
    fte: float  # NaN when the gallery size is not given
    n_gallery: int


@dataclass(frozen=True)
class SearchOutcome:
    """The result of one 1:N search, as the metrics need it.

    ``true_subject`` is the enrolled subject the probe shows, or None for a non-mated search.
    ``candidates`` holds ``(subject, distance)`` pairs, one per gallery *subject* (its best distance),
    sorted by ascending distance; it is empty when ``acquired`` is False (no face or no template).
    ``cluster`` names the person in the probe for bootstrap resampling when it is not ``true_subject``
    (e.g. the unenrolled identity of a non-mated probe); see :attr:`cluster_key`.
    """

    probe_id: str
    true_subject: str | None
    candidates: tuple[tuple[str, float], ...] = ()
    acquired: bool = True
    cluster: str | None = None

    def __post_init__(self) -> None:
        cands = tuple((str(s), float(d)) for s, d in self.candidates)
        dists = [d for _, d in cands]
        if any(b < a for a, b in zip(dists, dists[1:])):
            raise InvalidArgument(f"probe {self.probe_id}: candidates are not sorted by ascending distance")
        if not self.acquired and cands:
            raise InvalidArgument(f"probe {self.probe_id}: a probe that failed to acquire has no candidates")
        object.__setattr__(self, "candidates", cands)

    @property
    def mated(self) -> bool:
        return self.true_subject is not None

    @property
    def cluster_key(self) -> str:
        """Resampling unit: ``cluster``, else the true subject, else the probe itself."""
        return self.cluster or self.true_subject or self.probe_id


# ----------------------------------------------------------------------------------------- verification

def _scores(values: Iterable[float], what: str, higher_is_better: bool) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise InvalidArgument(f"no {what} scores: the metric is undefined without them")
    if np.isnan(arr).any():
        raise InvalidArgument(f"{what} scores contain NaN")
    return -arr if higher_is_better else arr


def roc(mated, nonmated, *, higher_is_better: bool = False) -> RocCurve:
    """FMR and FNMR at every distinct score used as threshold (match when ``distance <= t``).

    Parameters: ``mated`` (m,) and ``nonmated`` (n,) distances. Returns a :class:`RocCurve` whose
    first point is ``t = -inf`` (nothing matches: FMR 0, FNMR 1), followed by each distinct score in
    ascending order (the last point has FMR 1, FNMR 0). Raises InvalidArgument on empty input.
    """
    m = _scores(mated, "mated", higher_is_better)
    n = _scores(nonmated, "non-mated", higher_is_better)
    thr = np.unique(np.concatenate([m, n]))
    fmr = np.searchsorted(np.sort(n), thr, side="right") / n.size
    fnmr = 1.0 - np.searchsorted(np.sort(m), thr, side="right") / m.size
    thresholds = np.concatenate([[-np.inf], thr])
    if higher_is_better:
        thresholds = -thresholds
    return RocCurve(np.concatenate([[0.0], fmr]), np.concatenate([[1.0], fnmr]), thresholds)


def det(mated, nonmated, *, higher_is_better: bool = False) -> RocCurve:
    """The DET curve: the same points as :func:`roc`, meant to be drawn on normal-deviate axes."""
    return roc(mated, nonmated, higher_is_better=higher_is_better)


def eer(mated, nonmated, *, higher_is_better: bool = False) -> tuple[float, float]:
    """Equal error rate and its threshold, by the FVC2000 rule (Maio et al., 2002).

    With t1 the largest threshold where FMR <= FNMR and t2 the smallest where FMR >= FNMR, the EER
    lies in [FMR(t1), FNMR(t1)] or [FNMR(t2), FMR(t2)], whichever has the smaller sum; the EER is the
    middle of that interval and the threshold is t1 or t2 accordingly. Returns ``(eer, threshold)``.
    """
    fmr, fnmr, thr = roc(mated, nonmated, higher_is_better=higher_is_better)
    i1 = int(np.flatnonzero(fmr <= fnmr)[-1])  # exists: the first point has FMR 0
    i2 = int(np.flatnonzero(fmr >= fnmr)[0])  # exists: the last point has FNMR 0
    if fmr[i1] + fnmr[i1] <= fmr[i2] + fnmr[i2]:
        return float((fmr[i1] + fnmr[i1]) / 2), float(thr[i1])
    return float((fmr[i2] + fnmr[i2]) / 2), float(thr[i2])


def _threshold_below(sorted_scores: np.ndarray, n_allowed: int) -> float:
    """Largest t with at most ``n_allowed`` of ``sorted_scores`` <= t (ties respected)."""
    if n_allowed >= sorted_scores.size:
        return math.inf
    nxt = sorted_scores[n_allowed]
    return math.inf if math.isinf(nxt) else float(np.nextafter(nxt, -np.inf))


def _n_allowed(rate: float, n: int, what: str) -> int:
    if not 0.0 <= rate <= 1.0:
        raise InvalidArgument(f"{what} must be between 0 and 1, got {rate}")
    return int(math.floor(rate * n + _EPS))


def threshold_for_fmr(nonmated, fmr: float, *, higher_is_better: bool = False) -> float:
    """The largest distance threshold whose FMR on ``nonmated`` (n,) does not exceed ``fmr``.

    With k = floor(fmr * n) false matches allowed, the threshold lies just below the (k+1)-th smallest
    non-mated distance (``numpy.nextafter``), so ties never push the FMR over the target; it is +inf
    when k = n. Returns NaN when ``fmr < 1/n`` (below the resolution of n comparisons).
    """
    n = np.sort(_scores(nonmated, "non-mated", higher_is_better))
    k = _n_allowed(fmr, n.size, "fmr")
    if k == 0:
        return math.nan
    t = _threshold_below(n, k)
    return -t if higher_is_better else t


def tar_at_far(mated, nonmated, far: float, *, higher_is_better: bool = False) -> TarAtFar:
    """TAR (1 - FNMR) at the threshold given by :func:`threshold_for_fmr` for target ``far``.

    The achievable resolution is 1 / n_nonmated: below it the result is NaN (see :class:`TarAtFar`).
    """
    m = _scores(mated, "mated", higher_is_better)
    n = _scores(nonmated, "non-mated", higher_is_better)
    k = _n_allowed(far, n.size, "far")
    if k == 0:
        return TarAtFar(math.nan, math.nan, math.nan, int(n.size))
    t = _threshold_below(np.sort(n), k)
    tar = float(np.mean(m <= t))
    fmr = float(np.mean(n <= t))
    return TarAtFar(tar, -t if higher_is_better else t, fmr, int(n.size))


def _best_threshold(d: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising accuracy of ``d <= t`` on (d, same); midpoints between distinct values."""
    order = np.argsort(d, kind="stable")
    d, same = d[order], same[order]
    u, first = np.unique(d, return_index=True)
    last = np.append(first[1:], d.size)  # after index of each distinct value's run
    mated_at_or_below = np.cumsum(same)[last - 1]
    nonmated_above = (~same).sum() - np.cumsum(~same)[last - 1]
    correct = np.concatenate([[(~same).sum()], mated_at_or_below + nonmated_above])
    cands = np.concatenate([[np.nextafter(u[0], -np.inf)], (u[:-1] + u[1:]) / 2, [u[-1]]])
    return float(cands[int(np.argmax(correct))])  # first maximum: the smallest such threshold


def lfw_10fold_accuracy(distances, same, fold) -> LfwAccuracy:
    """Verification accuracy by the LFW View 2 protocol (10-fold cross-validation).

    For each fold, the threshold maximising accuracy on the other folds is chosen (candidates are the
    midpoints between consecutive distinct training distances, plus one below and one at the extremes;
    ties go to the smallest threshold) and applied to the held-out fold. ``distances`` (n,),
    ``same`` (n,) bool (True for a mated pair), ``fold`` (n,) int. Any number of folds >= 2 works.
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    s = np.asarray(same, dtype=bool).ravel()
    f = np.asarray(fold).ravel()
    if not (d.size == s.size == f.size) or d.size == 0:
        raise InvalidArgument("distances, same and fold must be non-empty and of equal length")
    folds = np.unique(f)
    if folds.size < 2:
        raise InvalidArgument("the LFW protocol needs at least two folds")
    accs, thrs = [], []
    for k in folds:
        test = f == k
        t = _best_threshold(d[~test], s[~test])
        accs.append(float(np.mean((d[test] <= t) == s[test])))
        thrs.append(t)
    acc = np.array(accs)
    std = float(acc.std(ddof=1))
    return LfwAccuracy(float(acc.mean()), std, std / math.sqrt(acc.size), acc, np.array(thrs))


# --------------------------------------------------------------------------------------- identification

def true_rank(outcome: SearchOutcome) -> int | None:
    """1-based rank of the true subject in the candidate list, or None (absent, non-mated, FTA).

    Ties are broken against the true subject: the rank counts every candidate whose distance is
    <= the true subject's, so an equal-distance impostor listed after it still ranks ahead.
    """
    if not outcome.mated:
        return None
    for subject, dist in outcome.candidates:
        if subject == outcome.true_subject:
            return sum(1 for _, d in outcome.candidates if d <= dist)
    return None


def _split(outcomes: Sequence[SearchOutcome]) -> tuple[list[SearchOutcome], list[SearchOutcome]]:
    mated = [o for o in outcomes if o.mated]
    return mated, [o for o in outcomes if not o.mated]


def _require(items: list, what: str) -> None:
    if not items:
        raise InvalidArgument(f"no {what} searches: the metric is undefined without them")


def cmc(outcomes: Sequence[SearchOutcome], ranks: Iterable[int] = (1, 5, 10, 20, 50)) -> dict[int, float]:
    """Cumulative match characteristic: {rank r: fraction of mated searches with true rank <= r}.

    The denominator is every mated search, failures to acquire included (they count as misses).
    Ranks beyond the candidate-list length L give the rate at L (the list is all there is).
    """
    mated, _ = _split(outcomes)
    _require(mated, "mated")
    found = np.array([true_rank(o) or 0 for o in mated])
    return {int(r): float(np.mean((found >= 1) & (found <= r))) for r in ranks}


def _true_distance(o: SearchOutcome, rank: int) -> float:
    """Distance of the true subject when it is at rank <= ``rank``; +inf otherwise."""
    r = true_rank(o)
    if r is None or r > rank:
        return math.inf
    return next(d for s, d in o.candidates if s == o.true_subject)


def _top_distance(o: SearchOutcome) -> float:
    return o.candidates[0][1] if o.candidates else math.inf


def fnir_fpir_at_threshold(outcomes: Sequence[SearchOutcome], threshold: float, *,
                           rank: int = 1) -> IdentificationPoint:
    """FNIR(N, R, T) and FPIR(N, T) at distance threshold ``threshold`` and rank ``rank`` (R).

    A mated search is a miss unless its true subject is at rank <= R with distance <= T; a non-mated
    search is a false positive when its top candidate has distance <= T (an empty list never is).
    """
    if rank < 1:
        raise InvalidArgument(f"rank must be >= 1, got {rank}")
    mated, nonmated = _split(outcomes)
    _require(mated, "mated")
    _require(nonmated, "non-mated")
    hits = np.array([_true_distance(o, rank) <= threshold for o in mated])
    fps = np.array([bool(o.candidates) and _top_distance(o) <= threshold for o in nonmated])
    return IdentificationPoint(float(threshold), float(1 - hits.mean()), float(fps.mean()),
                               len(mated), len(nonmated), rank)


def fnir_at_fpir(outcomes: Sequence[SearchOutcome], fpir_targets: Iterable[float] = (0.01, 0.05, 0.10),
                 *, rank: int = 1) -> list[IdentificationPoint]:
    """FNIR at the largest threshold whose FPIR does not exceed each target (NIST FRTE's headline).

    The threshold is set on the non-mated searches' top-candidate distances as in
    :func:`threshold_for_fmr`. A target below 1 / n_nonmated cannot be resolved: its point has NaN
    threshold, FNIR and FPIR.
    """
    mated, nonmated = _split(outcomes)
    _require(mated, "mated")
    _require(nonmated, "non-mated")
    tops = np.sort([_top_distance(o) for o in nonmated])
    points = []
    for target in fpir_targets:
        k = _n_allowed(target, len(nonmated), "fpir target")
        if k == 0:
            points.append(IdentificationPoint(math.nan, math.nan, math.nan, len(mated), len(nonmated),
                                              rank, float(target)))
            continue
        p = fnir_fpir_at_threshold(outcomes, _threshold_below(tops, k), rank=rank)
        points.append(p._replace(fpir_target=float(target)))
    return points


def search_scores(outcomes: Sequence[SearchOutcome]) -> dict[str, np.ndarray]:
    """Distances for histograms: ``mated`` = true subject's distance where listed, ``nonmated`` = top."""
    mated, nonmated = _split(outcomes)
    m = [_true_distance(o, len(o.candidates)) for o in mated]
    return {"mated": np.array([d for d in m if math.isfinite(d)], dtype=np.float64),
            "nonmated": np.array([o.candidates[0][1] for o in nonmated if o.candidates], dtype=np.float64)}


def failure_rates(outcomes: Sequence[SearchOutcome], *, n_gallery: int | None = None,
                  n_gallery_failed: int = 0) -> FailureRates:
    """FTA over probes (all, mated, non-mated) and FTE = ``n_gallery_failed / n_gallery``."""
    mated, nonmated = _split(outcomes)

    def rate(items: list[SearchOutcome]) -> float:
        return float(np.mean([not o.acquired for o in items])) if items else math.nan

    if n_gallery is not None and not 0 <= n_gallery_failed <= n_gallery:
        raise InvalidArgument(f"n_gallery_failed={n_gallery_failed} is not within 0..n_gallery={n_gallery}")
    fte = n_gallery_failed / n_gallery if n_gallery else math.nan
    return FailureRates(rate(list(outcomes)), rate(mated), rate(nonmated), len(outcomes), fte,
                        int(n_gallery or 0))


# ------------------------------------------------------------------------------- uncertainty, breakdowns

def bootstrap_ci(items: Sequence[T], statistic_fn: Callable[[list[T]], float], *,
                 cluster_of: Callable[[T], Hashable] | None = None, n_boot: int = _DEFAULTS.n_boot, seed: int = _DEFAULTS.seed,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic_fn(items)``, resampling clusters, not items.

    Comparisons of one person are correlated, so resampling single probes understates the spread.
    Each replicate draws as many clusters as there are, with replacement, and passes all their items
    to ``statistic_fn``. ``cluster_of`` maps an item to its cluster; by default a
    :class:`SearchOutcome` clusters by :attr:`SearchOutcome.cluster_key` (the subject) and any other
    item is its own cluster. For verification pairs, pass the item index list and cluster by the
    subject of the pair's first image (LFW lists each non-mated pair under its first person), so a
    person's pairs travel together. Replicates where the statistic is NaN or raises InvalidArgument
    (e.g. no non-mated search drawn) are dropped; if more than half are, ``(nan, nan)`` is returned.
    """
    if not items:
        raise InvalidArgument("bootstrap needs at least one item")
    if n_boot < 1 or not 0 < level < 1:
        raise InvalidArgument(f"need n_boot >= 1 and 0 < level < 1, got {n_boot}, {level}")
    groups: dict[Hashable, list[T]] = {}
    for i, item in enumerate(items):
        if cluster_of is not None:
            key = cluster_of(item)
        else:
            key = item.cluster_key if isinstance(item, SearchOutcome) else ("item", i)
        groups.setdefault(key, []).append(item)
    members = list(groups.values())
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        draw = rng.integers(0, len(members), size=len(members))
        sample = [it for i in draw for it in members[i]]
        try:
            value = float(statistic_fn(sample))
        except InvalidArgument:
            continue
        if not math.isnan(value):
            stats.append(value)
    if len(stats) * 2 < n_boot:
        log.warning("bootstrap: only %d of %d replicates were defined; no interval", len(stats), n_boot)
        return math.nan, math.nan
    alpha = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [alpha, 100 - alpha])
    return float(low), float(high)


def by_group(outcomes: Sequence[T], group_of: Mapping[str, str] | Callable[[T], str],
             fn: Callable[[list[T]], float]) -> dict[str, float]:
    """``fn`` evaluated on each group's items: {group: value}, groups in sorted order.

    ``group_of`` is a {probe_id: group} mapping (items need ``probe_id``) or a function of the item;
    items without a group fall in group ``"unknown"``. A group where ``fn`` raises InvalidArgument
    (e.g. no mated search in it) gets NaN.
    """
    def key(item: T) -> str:
        if callable(group_of):
            return str(group_of(item))
        return str(group_of.get(item.probe_id, "unknown"))

    groups: dict[str, list[T]] = {}
    for item in outcomes:
        groups.setdefault(key(item), []).append(item)
    out = {}
    for g in sorted(groups):
        try:
            out[g] = float(fn(groups[g]))
        except InvalidArgument:
            out[g] = math.nan
    return out


def differential(values: Mapping[str, float]) -> dict[str, float | str | None]:
    """Differential-performance summary over groups (ISO/IEC 19795-10 style).

    Returns ``max``/``min`` with the groups holding them (``max_group``/``min_group``), their
    ``difference`` (max - min) and ``ratio`` (max / min; NaN when min is 0). NaN values are ignored;
    with no finite value every number is NaN and both groups are None.
    """
    finite = {g: v for g, v in values.items() if v is not None and math.isfinite(v)}
    if not finite:
        return {"max": math.nan, "max_group": None, "min": math.nan, "min_group": None,
                "difference": math.nan, "ratio": math.nan}
    gmax = max(finite, key=finite.get)
    gmin = min(finite, key=finite.get)
    vmax, vmin = finite[gmax], finite[gmin]
    return {"max": vmax, "max_group": gmax, "min": vmin, "min_group": gmin,
            "difference": vmax - vmin, "ratio": vmax / vmin if vmin > 0 else math.nan}
