"""Calibration of the review bands: thresholds measured for target false-match rates, and their file.

A calibration turns distances of comparisons between *different* people (non-mated comparisons) from
one or more labelled data sets into the band thresholds search uses: each band's threshold is the
largest distance whose false-match rate (FMR) does not exceed its target (defaults:
``settings.FmrTargets``), computed exactly as :func:`facematch.evaluation.metrics.threshold_for_fmr`.

Several data sets combine conservatively: the FMR curve is the upper envelope of the sets' curves
(at each distance, the highest FMR any set shows), so each threshold is the smallest of the sets'
thresholds and meets its target on every set.

Rule of three: with n non-mated comparisons and no false match seen, FMR < 3/n is all one can claim
at 95% confidence, so a target below 3/n (n of the smallest set) is *not supported*. It is refused with
``strict``; otherwise the band falls back to just below the smallest non-mated distance seen (no false
match on any set) and is marked unsupported, with a warning.

The calibration file (JSON, ``schema: facematch.calibration``) records its provenance: data sets and
counts, date, model name and version, pipeline settings, targets, thresholds per set, warnings, and a
downsampled FMR curve of ``(distance, fmr)`` points that search interpolates for each candidate's
estimated FMR. Since schema 2 it also keeps, per data set with mated comparisons, a downsampled curve of
the fraction of mated searches at or below each distance (``mated_curves``): search reports with each
band how many enrolled people of that data set it would have reached, the miss side of the band.
:func:`load_band_scheme` finds and validates it (schema 1 files still load, without the mated curves).
Search bands by the curve, not by the fixed-FMR thresholds: each band's distance is resolved at the live
gallery size for a number of expected false candidates per search (``BandScheme.for_gallery``); the
thresholds stay as references.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from facematch.errors import CalibrationError, InvalidArgument
from facematch.search.bands import BANDS, RULE_OF_THREE, BandScheme, MatedCurve, QualityCurve
from facematch.settings import BandThresholds, FalseCandidateTargets, FmrTargets, Settings

__all__ = ["DEFAULT_TARGETS", "CALIBRATION_FILE_NAME", "SCHEMA", "SCHEMA_VERSION", "RULE_OF_THREE",
           "ScoreSample", "pairwise_sample",
           "compute_calibration", "write_calibration", "read_calibration", "band_scheme_from_calibration",
           "calibration_path", "load_band_scheme"]

log = logging.getLogger(__name__)

SCHEMA = "facematch.calibration"
SCHEMA_VERSION = 2
#: Schema versions read: version 1 lacks ``mated_curves`` (bands then say nothing of what they miss).
READABLE_SCHEMA_VERSIONS = (1, 2)
#: Target false-match rate of each review band.
DEFAULT_TARGETS = FmrTargets().as_dict()
CALIBRATION_FILE_NAME = "calibration.json"
_EPS = 1e-9  # as metrics._EPS: floor(target * n) robust to binary rounding
_TAIL_EDGES = np.linspace(0.0, 2.0, 4001)  # 0.0005 steps: dlib descriptor distances stay below ~1.6
#: Probe quality scores (0-100) where the mated curves are split: chosen on frmdb-dev-cctv, where the share of
#: mated searches inside "possible" at ~1,000 subjects runs 8% / 13% / 36% / 81% across these bins; the lowres
#: field sets show the same by quality (docs/evaluation.md).
MATED_QUALITY_EDGES = (20.0, 40.0, 60.0)


@dataclass
class ScoreSample:
    """Comparison distances from one labelled data set.

    ``nonmated_low``: ascending ``(k,) float64``, every non-mated distance ``<= cap`` (all of them when
    ``cap`` is inf); ``n_nonmated``: how many non-mated comparisons there were in all. Above ``cap`` the
    FMR comes from ``tail_cumulative`` (non-mated counts below each of ``_TAIL_EDGES``). ``mated``
    ``(m,)`` distances (may be empty) give the true-accept rate at each threshold; ``mated_quality`` ``(m,)``,
    when known (protocols), the quality score of each mated comparison's probe. ``counts`` is provenance.
    """

    name: str
    description: str
    n_nonmated: int
    nonmated_low: np.ndarray
    cap: float = math.inf
    mated: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tail_cumulative: np.ndarray | None = None
    counts: dict = field(default_factory=dict)
    mated_quality: np.ndarray | None = None

    @classmethod
    def from_distances(cls, name: str, description: str, nonmated, mated=(), *, mated_quality=None,
                       **counts) -> "ScoreSample":
        """A sample holding every non-mated distance ``(n,)``; raises CalibrationError when n = 0."""
        values = np.sort(np.asarray(nonmated, dtype=np.float64).ravel())
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise CalibrationError(f"{name}: no non-mated comparisons: nothing to calibrate on")
        mated = np.asarray(mated, dtype=np.float64).ravel()
        quality = None if mated_quality is None else np.asarray(mated_quality, dtype=np.float64).ravel()
        if quality is not None and quality.shape != mated.shape:
            raise InvalidArgument(f"{name}: one quality score per mated distance, got {quality.size} for {mated.size}")
        return cls(name, description, int(values.size), values, math.inf, mated, None, dict(counts), quality)

    def fmr(self, distance) -> np.ndarray:
        """FMR at each distance: the fraction of non-mated comparisons at or below it."""
        d = np.asarray(distance, dtype=np.float64)
        low = np.searchsorted(self.nonmated_low, d, side="right") / self.n_nonmated
        if self.tail_cumulative is None:
            return low
        tail = np.interp(d, _TAIL_EDGES, self.tail_cumulative) / self.n_nonmated
        return np.where(d <= self.cap, low, np.maximum(low, tail))

    def threshold(self, target: float) -> float:
        """Largest distance with FMR <= ``target``; NaN when target < 1/n (no false match allowed)."""
        k = int(math.floor(target * self.n_nonmated + _EPS))
        if k == 0:
            return math.nan
        if k >= self.nonmated_low.size:
            raise CalibrationError(f"{self.name}: target FMR {target:g} lies above the stored part of the "
                                   f"non-mated distances (cap {self.cap:.3f})")
        return float(np.nextafter(self.nonmated_low[k], -np.inf))

    def mated_curve(self, n_points: int = 200, keep: np.ndarray | None = None) -> list[list[float]]:
        """``(distance, fraction of mated distances at or below it)`` at up to ``n_points`` of the sorted mated
        distances (those flagged in ``keep``, else all), evenly spaced in rank, the largest always included;
        empty without mated distances."""
        mated = self.mated if keep is None else self.mated[keep]
        mated = np.sort(mated[np.isfinite(mated)])
        if mated.size == 0:
            return []
        ranks = np.unique(np.round(np.linspace(1, mated.size, min(n_points, mated.size))).astype(int))
        return [[float(mated[k - 1]), k / mated.size] for k in ranks]

    def mated_entry(self) -> dict:
        """The file's ``mated_curves`` entry: the curve, and one per probe-quality bin when qualities are known
        (``MATED_QUALITY_EDGES``; a probe's quality says more about its chance than the data set does)."""
        entry = {"source": self.name, "description": self.description,
                 "n_mated": int(np.isfinite(self.mated).sum()), "curve": self.mated_curve()}
        if self.mated_quality is not None:
            edges = (0.0, *MATED_QUALITY_EDGES, math.inf)
            entry["by_quality"] = []
            for low, high in itertools.pairwise(edges):
                keep = (self.mated_quality >= low) & (self.mated_quality < high) & np.isfinite(self.mated)
                if keep.any():
                    entry["by_quality"].append({"min_quality": low, "max_quality": None if high == math.inf else high,
                                                "n_mated": int(keep.sum()), "curve": self.mated_curve(keep=keep)})
        return entry

    def curve_distances(self, n_points: int = 120) -> np.ndarray:
        """Distances where this sample's FMR steps, spaced geometrically in FMR (for the stored curve)."""
        ranks = np.unique(np.round(np.geomspace(1, self.nonmated_low.size, n_points)).astype(int))
        points = self.nonmated_low[ranks - 1]
        if self.tail_cumulative is not None:
            beyond = _TAIL_EDGES[(_TAIL_EDGES > self.cap) & (self.tail_cumulative < self.n_nonmated)][::40]
            points = np.concatenate([points, beyond])
        return points


def pairwise_sample(embeddings: np.ndarray, labels, *, name: str, description: str, keep_fmr: float = 0.05,
                    block: int = 512, **counts) -> ScoreSample:
    """All comparisons between the rows of ``embeddings`` ``(n, 128)``: mated when labels match.

    There are n(n-1)/2 comparisons (29.6 million for LFW's 7,701 pair images), so two passes bound the
    memory: a histogram of every non-mated distance, then the exact distances up to the one where the FMR
    reaches ``keep_fmr`` (above the largest band target). Distances are Euclidean, as face_distance.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    lab = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] != lab.shape[0] or x.shape[0] < 2:
        raise InvalidArgument("embeddings must be (n, d) with n >= 2 and one label per row")
    hist = np.zeros(_TAIL_EDGES.size - 1, dtype=np.int64)
    mated: list[np.ndarray] = []
    for d, same in _pair_blocks(x, lab, block):
        hist += np.histogram(np.clip(d[~same], 0.0, _TAIL_EDGES[-1]), bins=_TAIL_EDGES)[0]
        mated.append(d[same])
    cumulative = np.concatenate([[0], np.cumsum(hist)]).astype(np.float64)
    n = int(cumulative[-1])
    if n == 0:
        raise CalibrationError(f"{name}: every row has the same label: no non-mated comparison")
    cap = float(_TAIL_EDGES[min(np.searchsorted(cumulative, keep_fmr * n, side="left") + 1, _TAIL_EDGES.size - 1)])
    low = np.sort(np.concatenate([d[~same][d[~same] <= cap] for d, same in _pair_blocks(x, lab, block)]))
    return ScoreSample(name, description, n, low, cap, np.concatenate(mated), cumulative, dict(counts))


def _pair_blocks(x: np.ndarray, labels: np.ndarray, block: int):
    """Distances ``d`` and same-label flags of pairs (i, j), i < j, a block of rows at a time."""
    sq = np.einsum("ij,ij->i", x, x)
    for start in range(0, x.shape[0], block):
        rows = slice(start, min(start + block, x.shape[0]))
        d2 = sq[rows, None] + sq[None, :] - 2.0 * x[rows] @ x.T
        i, j = np.triu_indices(rows.stop - start, k=1, m=x.shape[0] - start)
        j = j + start
        d = np.sqrt(np.maximum(d2[i, j], 0.0))
        yield d, labels[rows][i] == labels[j]


# --------------------------------------------------------------------------------------- computing

def _check_targets(targets: dict) -> dict[str, float]:
    if set(targets) != set(BANDS):
        raise InvalidArgument(f"targets must name the bands {', '.join(BANDS)}, got {sorted(targets)}")
    values = {b: float(targets[b]) for b in BANDS}
    if not all(0 < v < 1 for v in values.values()):
        raise InvalidArgument(f"target FMRs must lie between 0 and 1, got {values}")
    if not values["strong"] <= values["possible"] <= values["weak"]:
        raise InvalidArgument(f"target FMRs must satisfy strong <= possible <= weak, got {values}")
    return values


def _band_entry(band: str, target: float, samples: list[ScoreSample], strict: bool,
                warnings: list[str]) -> dict:
    n_min = min(s.n_nonmated for s in samples)
    smallest = min(samples, key=lambda s: s.n_nonmated)
    supported = target >= RULE_OF_THREE / n_min - _EPS
    if supported:
        threshold = min(s.threshold(target) for s in samples)
    else:
        message = (f"{band} band: target FMR {target:g} is below what {n_min:,} non-mated comparisons "
                   f"({smallest.name}) can support (rule of three: >= {RULE_OF_THREE / n_min:.2g}; "
                   f"needs {math.ceil(RULE_OF_THREE / target):,} comparisons)")
        if strict:
            raise CalibrationError(message)
        threshold = min(float(np.nextafter(s.nonmated_low[0], -np.inf)) for s in samples)
        warnings.append(message + "; threshold set just below the smallest non-mated distance seen")
        log.warning(warnings[-1])
    if not threshold > 0:
        raise CalibrationError(f"{band} band: threshold {threshold} is not positive: a non-mated distance "
                               "of 0 (the same image under two names?)")
    per_source = {s.name: {"threshold": None if math.isnan(t := s.threshold(target)) else t,
                           "fmr_at_threshold": float(s.fmr(threshold)),
                           "tar_at_threshold": float(np.mean(s.mated <= threshold)) if s.mated.size else None}
                  for s in samples}
    return {"band": band, "target_fmr": target, "threshold": threshold, "supported": bool(supported),
            "min_supported_fmr": RULE_OF_THREE / n_min, "per_source": per_source}


def _envelope_curve(samples: list[ScoreSample], extra: list[float]) -> list[list[float]]:
    grid = np.unique(np.concatenate([s.curve_distances() for s in samples] + [np.asarray(extra, float)]))
    grid = grid[grid > 0]
    fmr = np.max([s.fmr(grid) for s in samples], axis=0)
    fmr = np.maximum.accumulate(fmr)
    return [[float(d), float(f)] for d, f in zip(grid, fmr)]


def compute_calibration(samples: list[ScoreSample], *, targets: dict | None = None, strict: bool = False,
                        settings: Settings | None = None, dataset: str | None = None,
                        created_at: str | None = None) -> dict:
    """The calibration document for ``samples`` (one per labelled data set).

    ``targets`` maps each band to its target FMR (default :data:`DEFAULT_TARGETS`). Raises
    CalibrationError when a target is unsupported and ``strict`` (see the module docstring) or no sample
    has non-mated comparisons; InvalidArgument for bad targets.
    """
    from facematch.faces.models import embedding_version
    from facematch.types import MODEL_NAME

    if not samples:
        raise CalibrationError("no labelled data set to calibrate on")
    targets = _check_targets(targets or DEFAULT_TARGETS)
    warnings: list[str] = []
    bands = [_band_entry(b, targets[b], samples, strict, warnings) for b in BANDS]
    thresholds = {e["band"]: e["threshold"] for e in bands}
    BandThresholds(**thresholds)  # ordered by construction; validated all the same
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created_at": created_at or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": dataset or " + ".join(s.name for s in samples),
        "model": {"name": MODEL_NAME, "version": embedding_version((settings or Settings.from_env()).detection.landmarks)},
        "pipeline": settings.describe_pipeline() if settings else None,
        "targets": targets, "thresholds": thresholds, "bands": bands,
        "rule_of_three": {"n_nonmated_smallest_set": min(s.n_nonmated for s in samples),
                          "min_supported_fmr": RULE_OF_THREE / min(s.n_nonmated for s in samples)},
        "sources": [{"name": s.name, "description": s.description, "n_nonmated": s.n_nonmated,
                     "n_mated": int(s.mated.size), **s.counts} for s in samples],
        "combination": "upper envelope of the data sets' FMR curves (each threshold meets its target on every set)",
        "warnings": warnings,
        "fmr_curve": _envelope_curve(samples, list(thresholds.values())),
        "mated_curves": [s.mated_entry() for s in samples if np.isfinite(s.mated).any()],
    }


# ------------------------------------------------------------------------------------------ the file

def write_calibration(doc: dict, path: str | Path) -> Path:
    """Write ``doc`` as JSON (atomically: temporary file, then rename); creates the folder. Returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_calibration(path: str | Path, settings: Settings | None = None) -> dict:
    """Read and validate a calibration file for the model and alignment ``settings`` embed with.

    Raises CalibrationError for an unreadable file, a wrong schema, a model name or version (alignment
    included) other than the one embeddings are made with, thresholds out of order, or a malformed FMR
    curve.
    """
    from facematch.faces.models import embedding_version
    from facematch.types import MODEL_NAME

    version = embedding_version((settings or Settings.from_env()).detection.landmarks)
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"calibration file {path}: cannot read it ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise CalibrationError(f"calibration file {path}: not a facematch calibration (schema {SCHEMA!r})")
    if doc.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
        raise CalibrationError(f"calibration file {path}: schema version {doc.get('schema_version')} is not "
                               f"supported (expected one of {', '.join(map(str, READABLE_SCHEMA_VERSIONS))})")
    model = doc.get("model") or {}
    if model.get("name") != MODEL_NAME or model.get("version") != version:
        raise CalibrationError(f"calibration file {path} was made for model {model.get('name')} "
                               f"{model.get('version')}, but embeddings are made with {MODEL_NAME} "
                               f"{version}: run `facematch calibrate` again")
    try:
        BandThresholds(**{b: float(doc["thresholds"][b]) for b in BANDS})
        curve = [(float(d), float(f)) for d, f in doc["fmr_curve"]]
    except (KeyError, TypeError, ValueError, InvalidArgument) as exc:
        raise CalibrationError(f"calibration file {path}: bad thresholds or FMR curve ({exc})") from exc
    if not curve or any(b[0] < a[0] or b[1] < a[1] for a, b in zip(curve, curve[1:])) \
            or not all(0.0 <= f <= 1.0 for _, f in curve):
        raise CalibrationError(f"calibration file {path}: the FMR curve must be non-empty, ascending in "
                               "distance, non-decreasing in FMR and within 0..1")
    for entry in doc.get("mated_curves") or []:
        _check_mated_curve(path, entry)
        for part in entry.get("by_quality") or []:
            _check_quality_bin(path, entry.get("source"), part)
    return doc


def _check_quality_bin(path: Path, source, part) -> None:
    """A quality bin of a mated curve: ``min_quality`` below ``max_quality`` (null: no upper bound), and a
    valid curve of its own."""
    try:
        low = float(part["min_quality"])
        high = None if part.get("max_quality") is None else float(part["max_quality"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CalibrationError(f"calibration file {path}: bad quality bin in the mated curve of {source} "
                               f"({exc})") from exc
    if high is not None and not low < high:
        raise CalibrationError(f"calibration file {path}: quality bin {low:g}-{high:g} of {source} is empty")
    _check_mated_curve(path, {**part, "source": f"{source} (quality from {low:g})"})


def _check_mated_curve(path: Path, entry) -> None:
    """A mated curve names its data set and count and ascends in distance and fraction within 0..1."""
    try:
        name, n = str(entry["source"]), int(entry["n_mated"])
        curve = [(float(d), float(f)) for d, f in entry["curve"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"calibration file {path}: bad mated curve ({exc})") from exc
    if n < 1 or not curve or any(b[0] < a[0] or b[1] < a[1] for a, b in itertools.pairwise(curve)) \
            or not all(0.0 < f <= 1.0 for _, f in curve):
        raise CalibrationError(f"calibration file {path}: the mated curve of {name} must be non-empty, "
                               "ascending in distance and fraction, and within 0..1")


def band_scheme_from_calibration(doc: dict, path: str | Path,
                                 false_targets: FalseCandidateTargets | None = None) -> BandScheme:
    """The :class:`BandScheme` search uses for a validated calibration document.

    Search bands by ``false_targets`` (expected false candidates per search, resolved at the live gallery
    size from ``fmr_curve``); the file's fixed-FMR thresholds stay as references. The rule of three counts
    the non-mated comparisons of the smallest data set, as :func:`compute_calibration` does.
    """
    thresholds = BandThresholds(**{b: float(doc["thresholds"][b]) for b in BANDS})
    return BandScheme(
        thresholds, True, f"calibration {path} ({doc.get('dataset', 'unknown data')}, {doc.get('created_at')})",
        fmr_curve=tuple((float(d), float(f)) for d, f in doc["fmr_curve"]),
        target_fmr=tuple((b, float(doc["targets"][b])) for b in BANDS if b in doc.get("targets", {})),
        n_nonmated=_n_nonmated(doc), false_targets=false_targets or FalseCandidateTargets(),
        mated_curves=tuple(_mated_curve_record(c) for c in doc.get("mated_curves") or []))


def _mated_curve_record(entry: dict) -> MatedCurve:
    """A file's (validated) ``mated_curves`` entry for :class:`BandScheme`."""
    def points(curve):
        return tuple((float(d), float(f)) for d, f in curve)

    by_quality = tuple(QualityCurve(float(q["min_quality"]),
                                    None if q.get("max_quality") is None else float(q["max_quality"]),
                                    int(q["n_mated"]), points(q["curve"])) for q in entry.get("by_quality") or [])
    return MatedCurve(str(entry["source"]), int(entry["n_mated"]), points(entry["curve"]), by_quality)


def _n_nonmated(doc: dict) -> int:
    """Non-mated comparisons of the smallest data set (``rule_of_three``, else the sources' counts)."""
    n = (doc.get("rule_of_three") or {}).get("n_nonmated_smallest_set")
    if n is None:
        n = min((s.get("n_nonmated", 0) for s in doc.get("sources") or []), default=0)
    return int(n)


def calibration_path(settings: Settings) -> Path | None:
    """``settings.calibration_file`` if set, else ``<data_dir>/calibration.json`` if it exists, else None."""
    if settings.calibration_file is not None:
        return Path(settings.calibration_file)
    default = Path(settings.data_dir) / CALIBRATION_FILE_NAME
    return default if default.is_file() else None


def load_band_scheme(settings: Settings) -> BandScheme:
    """The band scheme search uses: the calibration file when there is one, else uncalibrated defaults.

    Raises CalibrationError when a configured file is missing or invalid (see :func:`read_calibration`):
    a broken calibration must not silently fall back to defaults.
    """
    path = calibration_path(settings)
    if path is None:
        return BandScheme.uncalibrated(settings.bands)
    if not path.is_file():
        raise CalibrationError(f"calibration file {path} does not exist (FACEMATCH_CALIBRATION or settings)")
    doc = read_calibration(path, settings)
    if doc.get("pipeline") is not None:
        _warn_pipeline_mismatch(path, doc["pipeline"], settings.describe_pipeline())
    return band_scheme_from_calibration(doc, path, settings.band_targets)


#: (calibration path, its pipeline, the pipeline in use) already warned about in this process.
_WARNED: set[tuple[str, str, str]] = set()


def _warn_pipeline_mismatch(path: Path, measured: dict, in_use: dict) -> None:
    """Warn, once per process for each calibration and pipeline, when the calibration was measured with
    other pipeline settings: naming only the settings that differ (a service searching all day logged the
    two whole settings records on every search)."""
    measured_text = json.dumps(measured, sort_keys=True)
    in_use_text = json.dumps(json.loads(json.dumps(in_use)), sort_keys=True)  # tuples as lists, as in the file
    key = (str(path), measured_text, in_use_text)
    if measured_text == in_use_text or key in _WARNED:
        return
    _WARNED.add(key)
    differ = sorted(_differences(json.loads(measured_text), json.loads(in_use_text)))
    log.warning("calibration %s was measured with other pipeline settings than in use (%s); its bands may not "
                "mean what they say: remake it (facematch calibrate)", path, "; ".join(differ))


def _differences(measured, in_use, prefix: str = "") -> list[str]:
    """``name: measured -> in use`` for every leaf setting that differs between two settings records."""
    if isinstance(measured, dict) and isinstance(in_use, dict):
        out = []
        for name in sorted(set(measured) | set(in_use)):
            out += _differences(measured.get(name), in_use.get(name), f"{prefix}{name}.")
        return out
    return [] if measured == in_use else [f"{prefix.rstrip('.')}: {measured!r} -> {in_use!r}"]
