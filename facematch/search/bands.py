"""Review bands, similarity scores and estimated false-match rates for candidate distances.

A ``BandScheme`` says where the bands come from; search resolves it for the live gallery size
(:meth:`BandScheme.for_gallery`) and consults the resulting ``GalleryBands`` for every candidate. Without a
calibration the bands are the uncalibrated default distances of ``settings.BandThresholds`` and say so. With
one (``facematch calibrate``), each band means the same at every gallery size: at most
``settings.FalseCandidateTargets`` false candidates expected per search of someone not enrolled. Its
distance comes from the calibration's non-mated FMR curve at the live number of subjects, and a band whose
rate the calibration has too few comparisons to support (rule of three) holds no candidates and says why.

The other side of a band is what it misses: a calibration that kept its mated searches' distances (schema
2) also says, for each band at this gallery size, how often an enrolled person's own images came that
close in the calibration data (``GalleryBand.mated_reach``), so nobody reads an empty band as "not
enrolled".
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import asdict, dataclass

from facematch.settings import BandThresholds, FalseCandidateTargets

__all__ = ["BANDS", "NO_BAND", "RULE_OF_THREE", "similarity_score", "supported_faces", "curve_threshold", "curve_reach",
           "QualityReach", "MatedReach", "QualityCurve", "MatedCurve", "GalleryBand", "GalleryBands", "BandScheme",
           "one_in", "reach_summary", "REACH_HEADING"]

BANDS = ("strong", "possible", "weak")
NO_BAND = "below"
#: With n comparisons and none false, 3/n is the 95% upper bound on the rate (the "rule of three").
RULE_OF_THREE = 3.0

#: Distance at which the similarity score reaches 0 (dlib descriptors of different people rarely exceed it).
_SCORE_ZERO_DISTANCE = 1.2


def similarity_score(distance: float) -> float:
    """Similarity in 0..100 from a Euclidean descriptor distance: ``100 * (1 - d / 1.2)``, clipped.

    A presentation aid only, monotone in the distance; the band and the estimated FMR carry the meaning.
    """
    return round(max(0.0, min(100.0, 100.0 * (1.0 - distance / _SCORE_ZERO_DISTANCE))), 1)


@dataclass(frozen=True)
class QualityReach:
    """The share of one probe-quality bin's mated comparisons at or below a band's distance."""

    min_quality: float
    max_quality: float | None  # None: no upper bound
    n_mated: int
    fraction: float

    def holds(self, quality: float) -> bool:
        """Whether a probe of this quality score falls in the bin (lower bound included)."""
        return self.min_quality <= quality and (self.max_quality is None or quality < self.max_quality)


@dataclass(frozen=True)
class MatedReach:
    """How often a band held an enrolled person in one calibration data set: the share of its mated
    comparisons at or below the band's distance, overall and per probe-quality bin."""

    source: str
    n_mated: int
    fraction: float
    by_quality: tuple[QualityReach, ...] = ()

    def for_quality(self, quality: float) -> QualityReach | None:
        """The bin holding ``quality``; None when the data set kept no probe qualities or no bin holds it."""
        return next((b for b in self.by_quality if b.holds(quality)), None)


@dataclass(frozen=True)
class QualityCurve:
    """One probe-quality bin's ascending ``(distance, share of its mated comparisons at or below it)`` points."""

    min_quality: float
    max_quality: float | None
    n_mated: int
    curve: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class MatedCurve:
    """One calibration data set's mated comparisons as a curve, overall and per probe-quality bin."""

    source: str
    n_mated: int
    curve: tuple[tuple[float, float], ...]
    by_quality: tuple[QualityCurve, ...] = ()

    def reach(self, distance: float) -> MatedReach:
        """The shares at or below ``distance`` (a band's threshold)."""
        return MatedReach(self.source, self.n_mated, curve_reach(self.curve, distance),
                          tuple(QualityReach(b.min_quality, b.max_quality, b.n_mated, curve_reach(b.curve, distance))
                                for b in self.by_quality))


@dataclass(frozen=True)
class GalleryBand:
    """One review band resolved for a gallery size: its distance limit and what it means there.

    ``threshold`` is None when the band holds no candidates (calibrated but not supported at this
    gallery size). ``expected_false`` is the predicted number of false candidates per search of someone
    not enrolled at or below ``threshold`` (faces x FMR there); ``needs_nonmated`` the non-mated
    comparisons a calibration needs to support the band here (rule of three). None: uncalibrated.
    ``mated_reach``: per calibration data set with mated searches, how many of its enrolled people's
    searches had their true subject at or below ``threshold``, overall and per probe-quality bin (empty when
    the band holds nothing or the calibration kept no mated distances).
    """

    band: str
    threshold: float | None
    meaning: str
    supported: bool | None = None
    max_false: float | None = None
    subject_fmr: float | None = None
    face_fmr: float | None = None
    expected_false: float | None = None
    needs_nonmated: int | None = None
    mated_reach: tuple[MatedReach, ...] = ()

    @property
    def predicted_fpir(self) -> float | None:
        """Chance that a search of someone not enrolled has a candidate in the band (Poisson, <= expected)."""
        return None if self.expected_false is None else 1.0 - math.exp(-self.expected_false)


def supported_faces(n_nonmated: int, max_false: float) -> int:
    """Largest gallery (faces) at which ``n_nonmated`` comparisons support ``max_false`` false candidates per
    search: the per-face FMR ``max_false / faces`` must stay >= 3 / n (rule of three)."""
    return math.floor(n_nonmated * max_false / RULE_OF_THREE + 1e-9)


def curve_threshold(curve, fmr: float) -> float | None:
    """Largest distance of the ascending ``(distance, fmr)`` curve whose FMR is at most ``fmr``.

    Conservative between points (the FMR may rise to the next point's rate anywhere after a point);
    None when even the first point's rate exceeds ``fmr``.
    """
    best = None
    for distance, rate in curve:
        if rate > fmr:
            break
        best = distance
    return best


def curve_reach(curve, distance: float) -> float:
    """Fraction of mated searches whose true subject came within ``distance``, from an ascending
    ``(distance, fraction)`` curve: the last point at or below it (conservative between points); 0 before
    the first."""
    reach = 0.0
    for point, fraction in curve:
        if point > distance:
            break
        reach = fraction
    return reach


@dataclass(frozen=True)
class GalleryBands:
    """The bands search applies to one gallery of ``subjects`` enrolled subjects with ``faces`` faces."""

    scheme: "BandScheme"
    subjects: int
    faces: int
    bands: tuple[GalleryBand, ...]

    def band(self, distance: float) -> str:
        """The tightest band holding ``distance``; unsupported bands hold nothing; else "below"."""
        for b in self.bands:
            if b.threshold is not None and distance <= b.threshold:
                return b.band
        return NO_BAND

    def estimated_fmr(self, distance: float) -> float | None:
        return self.scheme.estimated_fmr(distance)

    @property
    def limit(self) -> float | None:
        """The loosest distance any band holds (None: every band is empty)."""
        limits = [b.threshold for b in self.bands if b.threshold is not None]
        return max(limits) if limits else None

    @property
    def expected_false_candidates(self) -> float | None:
        """Predicted false candidates per search of someone not enrolled inside the bands (None: unknown)."""
        if not self.scheme.calibrated:
            return None
        return max((b.expected_false for b in self.bands if b.threshold is not None), default=0.0)

    def describe(self) -> dict:
        return {**self.scheme.describe(), "gallery_subjects": self.subjects, "gallery_faces": self.faces,
                "thresholds": {b.band: b.threshold for b in self.bands},
                "bands": [dict(asdict(b), predicted_fpir=b.predicted_fpir) for b in self.bands]}


@dataclass(frozen=True)
class BandScheme:
    """Where the review bands come from: uncalibrated default distances, or a calibration's FMR curve.

    ``fmr_curve``: ascending ``(distance, fmr)`` points measured on non-mated comparisons (calibrated
    schemes only): the fraction of comparisons of different people at or below that distance.
    ``n_nonmated``: non-mated comparisons of the calibration's smallest data set (the rule of three);
    ``false_targets``: each band's expected false candidates per search (``settings.FalseCandidateTargets``).
    ``thresholds``: the uncalibrated distances, or the calibration's fixed-FMR reference thresholds.
    ``mated_curves``: per calibration data set, its mated comparisons as curves (calibration schema 2; empty
    before).
    """

    thresholds: BandThresholds
    calibrated: bool
    source: str
    fmr_curve: tuple[tuple[float, float], ...] = ()
    target_fmr: tuple[tuple[str, float], ...] = ()
    n_nonmated: int = 0
    false_targets: FalseCandidateTargets = FalseCandidateTargets()
    mated_curves: tuple[MatedCurve, ...] = ()

    @classmethod
    def uncalibrated(cls, thresholds: BandThresholds | None = None) -> "BandScheme":
        return cls(thresholds or BandThresholds(), False,
                   "uncalibrated defaults derived from face_recognition's 0.6 tolerance")

    def for_gallery(self, subjects: int, faces: int | None = None) -> GalleryBands:
        """The bands at a gallery of ``subjects`` subjects and ``faces`` faces (default: one each).

        Calibrated: band b with at most E_b expected false candidates per search needs a per-subject FMR
        of E_b / N. Search fuses a subject's k images by the closest, and a subject's FMR is at most k
        times the per-face FMR of the curve (union bound), so the threshold is where the curve reaches
        E_b / faces. Rule of three: below 3 / n_nonmated the calibration cannot support that rate.
        """
        faces = max(faces if faces is not None else subjects, subjects, 1)
        subjects = max(subjects, 0)
        if not self.calibrated:
            t = dataclasses.asdict(self.thresholds)
            return GalleryBands(self, subjects, faces, tuple(GalleryBand(
                b, t[b], f"{b}: distance <= {t[b]:.3f} (uncalibrated default: the number of false candidates "
                         "to expect is unknown)") for b in BANDS))
        return GalleryBands(self, subjects, faces, tuple(self._calibrated_band(b, subjects, faces)
                                                         for b in BANDS))

    def _calibrated_band(self, band: str, subjects: int, faces: int) -> GalleryBand:
        target = getattr(self.false_targets, band)
        face_fmr = target / faces
        needs = math.ceil(RULE_OF_THREE / face_fmr - 1e-9)
        supported = faces <= supported_faces(self.n_nonmated, target)
        threshold = curve_threshold(self.fmr_curve, face_fmr) if supported else None
        common = dict(max_false=target, subject_fmr=target / max(subjects, 1), face_fmr=face_fmr,
                      needs_nonmated=needs)
        if threshold is None:
            return GalleryBand(band, None, f"{band}: not supported at this gallery size ({subjects:,} subjects, "
                               f"{faces:,} faces): needs >= {needs:,} non-mated comparisons, the calibration "
                               f"has {self.n_nonmated:,}; holds no candidates", False, **common)
        expected = faces * self.estimated_fmr(threshold)
        reach = tuple(curve.reach(threshold) for curve in self.mated_curves)
        return GalleryBand(band, threshold, f"{band}: at most {target:g} false candidate{'' if target == 1 else 's'} expected per search of "
                           f"someone not enrolled, among {subjects:,} subjects; distance <= {threshold:.3f}",
                           True, expected_false=expected, mated_reach=reach, **common)

    def band(self, distance: float) -> str:
        """The band of ``distance`` by the fixed ``thresholds`` (uncalibrated defaults or FMR references)."""
        t = self.thresholds
        for name, limit in (("strong", t.strong), ("possible", t.possible), ("weak", t.weak)):
            if distance <= limit:
                return name
        return NO_BAND

    def estimated_fmr(self, distance: float) -> float | None:
        """Estimated false-match rate at ``distance`` (None when uncalibrated).

        Linear interpolation on the measured curve; below its first point the first point's rate is
        returned (the measurement cannot resolve smaller rates).
        """
        if not self.fmr_curve:
            return None
        distances = [d for d, _ in self.fmr_curve]
        i = bisect.bisect_right(distances, distance)
        if i == 0:
            return self.fmr_curve[0][1]
        if i == len(distances):
            return self.fmr_curve[-1][1]
        (d0, f0), (d1, f1) = self.fmr_curve[i - 1], self.fmr_curve[i]
        return f0 if d1 == d0 else f0 + (f1 - f0) * (distance - d0) / (d1 - d0)

    def describe(self) -> dict:
        out = {"calibrated": self.calibrated, "source": self.source, "target_fmr": dict(self.target_fmr),
               "definition": ("each band holds candidates up to the distance at which at most max_false false "
                              "candidates are expected per search of someone not enrolled, at this gallery size"
                              if self.calibrated else "uncalibrated default distances: not measured error rates")}
        if self.calibrated:
            out["max_false_candidates"] = self.false_targets.as_dict()
            out["n_nonmated"] = self.n_nonmated
        return out


def one_in(fmr: float | None) -> str:
    """Human wording of a false-match rate: "about 1 in 12,000 comparisons of different people"."""
    if fmr is None:
        return "not estimated (uncalibrated)"
    if fmr <= 0:
        return "rarer than the calibration could measure"
    return f"about 1 in {max(1, round(1 / fmr)):,} comparisons of different people score this close"


#: What the lines of :func:`reach_summary` answer, for a reader of a candidate list.
REACH_HEADING = ("If the person is enrolled: how often the calibration's comparisons of the same person came within "
                 "each band at this gallery size (an empty band does not mean the person is not enrolled)")


def reach_summary(bands: list[dict], quality: float | None = None) -> list[str]:
    """One phrase per calibration data set from a search's band records (``GalleryBands.describe()["bands"]``):
    "frmdb-dev-cctv (104 mated comparisons): possible 27%, weak 43%".

    With a probe's ``quality`` score, only data sets that kept their probes' qualities, each for the quality
    bin holding it (lower bound included): "frmdb-dev-cctv, probe quality 0-20 (49 mated comparisons): possible
    8%, weak 29%".
    Empty for searches stored before the calibration recorded its mated side, and for bands that hold nothing.
    """
    sources: dict[str, tuple[int, list[str]]] = {}
    for b in bands:
        for r in b.get("mated_reach") or []:
            reach = MatedReach(r["source"], r["n_mated"], r["fraction"],
                               tuple(QualityReach(**q) for q in r.get("by_quality") or []))
            label, n, fraction = reach.source, reach.n_mated, reach.fraction
            if quality is not None:
                part = reach.for_quality(quality)
                if part is None:
                    continue
                top = "100" if part.max_quality is None else f"{part.max_quality:g}"
                label = f"{label}, probe quality {part.min_quality:g}-{top}"
                n, fraction = part.n_mated, part.fraction
            sources.setdefault(label, (n, []))[1].append(f"{b['band']} {100 * fraction:.0f}%")
    return [f"{name} ({n:,} mated comparisons): {', '.join(parts)}" for name, (n, parts) in sources.items()]
