"""Review bands, similarity scores and estimated false-match rates for candidate distances.

A ``BandScheme`` is what search consults for every candidate. Without a calibration it holds the
uncalibrated defaults of ``settings.BandThresholds`` and says so; a calibration (``facematch calibrate``)
supplies thresholds measured for target false-match rates and the non-mated distance curve behind them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from facematch.settings import BandThresholds

__all__ = ["BANDS", "NO_BAND", "similarity_score", "BandScheme", "one_in"]

BANDS = ("strong", "possible", "weak")
NO_BAND = "below"

#: Distance at which the similarity score reaches 0 (dlib descriptors of different people rarely exceed it).
_SCORE_ZERO_DISTANCE = 1.2


def similarity_score(distance: float) -> float:
    """Similarity in 0..100 from a Euclidean descriptor distance: ``100 * (1 - d / 1.2)``, clipped.

    A presentation aid only, monotone in the distance; the band and the estimated FMR carry the meaning.
    """
    return round(max(0.0, min(100.0, 100.0 * (1.0 - distance / _SCORE_ZERO_DISTANCE))), 1)


@dataclass(frozen=True)
class BandScheme:
    """Thresholds of the review bands, and where they came from.

    ``fmr_curve``: ascending ``(distance, fmr)`` points measured on non-mated comparisons (calibrated
    schemes only): the fraction of comparisons of different people at or below that distance.
    """

    thresholds: BandThresholds
    calibrated: bool
    source: str
    fmr_curve: tuple[tuple[float, float], ...] = ()
    target_fmr: tuple[tuple[str, float], ...] = ()

    @classmethod
    def uncalibrated(cls, thresholds: BandThresholds | None = None) -> "BandScheme":
        return cls(thresholds or BandThresholds(), False,
                   "uncalibrated defaults derived from face_recognition's 0.6 tolerance")

    def band(self, distance: float) -> str:
        """The review band of a candidate at ``distance``: strong, possible, weak or below."""
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

    def expected_false_candidates(self, gallery_subjects: int) -> float | None:
        """Expected number of non-mated subjects inside the weak band per probe face (FMR x N).

        FPIR grows with the gallery: with N enrolled subjects each compared once (fused), about
        ``N x FMR(weak threshold)`` different people fall inside the bands by chance.
        """
        fmr = self.estimated_fmr(self.thresholds.weak)
        return None if fmr is None else fmr * gallery_subjects

    def describe(self) -> dict:
        t = self.thresholds
        return {"calibrated": self.calibrated, "source": self.source,
                "thresholds": {"strong": t.strong, "possible": t.possible, "weak": t.weak},
                "target_fmr": dict(self.target_fmr)}


def one_in(fmr: float | None) -> str:
    """Human wording of a false-match rate: "about 1 in 12,000 comparisons of different people"."""
    if fmr is None:
        return "not estimated (uncalibrated)"
    if fmr <= 0:
        return "rarer than the calibration could measure"
    return f"about 1 in {max(1, round(1 / fmr)):,} comparisons of different people score this close"
