"""Probe-to-gallery distances, adjusted for the view a gallery face was enrolled from.

dlib's descriptor network was trained mostly on frontal faces. A custody profile (+-90 degrees) is found
only by the CNN detector (HOG is frontal), and its descriptor lies closer to other people's faces than a
frontal one does, above all to side-on CCTV faces: on the dev CCTV protocol, the low quantiles (0.5-10%)
of the distances between CCTV probes and *other* people's custody views are 0.12-0.13 smaller for
profile views than for frontal and 45-degree ones. Left as they are, profile views attract false
candidates (the share of non-mated searches with a candidate in the "possible" band rose from 6% to 54%).

Enrolling them is still worth it: a side-on CCTV face finds the custody view taken at its own angle.
So a gallery face only the CNN (or, in uncropped photos, MTCNN) found is kept and its distance is increased by
``Settings.nonfrontal_offset``: the shift that makes the two non-mated distributions agree at their low
tail (:func:`fmr_equalising_offset`, computed from non-mated comparisons only, no mated score), so a
distance means the same false-match rate whichever view it was measured against. Search, evaluation and
calibration all use :func:`adjusted_distance`, so bands and estimated false-match rates describe the
distances investigators see. docs/cctv-probes.md has the measurements.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NONFRONTAL_DETECTORS", "view_offset", "view_offsets", "adjusted_distance", "OFFSET_QUANTILES",
    "fmr_equalising_offset"]

#: Detector names of custody faces HOG (frontal) missed: the CNN stage (``detection._cnn_custody``),
#: and MTCNN, which replaces it in large, uncropped photos (``detection._mtcnn_custody``, the same
#: profile views).
NONFRONTAL_DETECTORS = ("cnn", "mtcnn")


def view_offset(kind: str, detector: str | None, offset: float) -> float:
    """Distance added for a gallery face: ``offset`` for a custody face HOG missed (a profile), else 0."""
    return offset if kind == "custody" and detector in NONFRONTAL_DETECTORS else 0.0


def view_offsets(detectors, offset: float) -> np.ndarray:
    """:func:`view_offset` for custody faces with these detector names: ``(n,) float64``."""
    return np.array([view_offset("custody", d, offset) for d in detectors], dtype=np.float64)


def adjusted_distance(distance: float, kind: str, detector: str | None, offset: float) -> float:
    """The distance search ranks and bands by: the Euclidean one plus the gallery face's view offset."""
    return float(distance) + view_offset(kind, detector, offset)


#: Quantiles (fractions) of the non-mated distances whose shifts :func:`fmr_equalising_offset` averages.
OFFSET_QUANTILES = (0.005, 0.01, 0.02, 0.05, 0.1)


def fmr_equalising_offset(frontal_nonmated: np.ndarray, nonfrontal_nonmated: np.ndarray,
                          quantiles: tuple[float, ...] = OFFSET_QUANTILES) -> float:
    """The distance to add to non-frontal gallery views so both views give the same low-tail FMR.

    Parameters: non-mated distances (probes against other people's gallery faces) to frontal and to
    non-frontal gallery views. Returns the median over ``quantiles`` of (frontal quantile - non-frontal
    quantile), at least 0. Raises ValueError when either set is empty.
    """
    frontal = np.asarray(frontal_nonmated, dtype=np.float64)
    other = np.asarray(nonfrontal_nonmated, dtype=np.float64)
    if frontal.size == 0 or other.size == 0:
        raise ValueError("both frontal and non-frontal non-mated distances are needed")
    shifts = np.quantile(frontal, quantiles) - np.quantile(other, quantiles)
    return max(0.0, float(np.median(shifts)))
