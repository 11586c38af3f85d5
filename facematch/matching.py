"""Probe-to-gallery distances, adjusted for the view a gallery face was enrolled from.

dlib's descriptor network was trained mostly on frontal faces. A custody profile (+-90 degrees) is found
only by the CNN detector (HOG is frontal), and its descriptor lies closer to everyone else's than a
frontal one does: measured against 1,000 LFW faces of other people, the 1% quantile of distances is
0.608 for FRMDB profile mugshots and 0.655 for their frontal and 45-degree views. Left as they are,
profile views attract false candidates (on the dev CCTV protocol the share of non-mated searches with a
candidate in the "possible" band rose from 6% to 54%).

Enrolling them is still worth it: a side-on CCTV face finds the custody view taken at its own angle
(rank-10 hit rate 50.5% -> 64.8% on the dev CCTV protocol). So a gallery face that only the CNN found is
kept, and its distance is increased by ``Settings.nonfrontal_offset``, the shift that equalises the low
tails of the two non-mated distributions above (measured without any mated pair; docs/cctv-probes.md).
Search, evaluation and calibration all use :func:`adjusted_distance`, so bands and estimated
false-match rates describe the distances investigators see.
"""

from __future__ import annotations

import numpy as np

#: Detector name of custody faces found only by the CNN stage (``detection._cnn_custody``).
NONFRONTAL_DETECTOR = "cnn"


def view_offset(kind: str, detector: str | None, offset: float) -> float:
    """Distance added for a gallery face: ``offset`` for a custody face only the CNN found, else 0."""
    return offset if kind == "custody" and detector == NONFRONTAL_DETECTOR else 0.0


def view_offsets(detectors, offset: float) -> np.ndarray:
    """:func:`view_offset` for custody faces with these detector names: ``(n,) float64``."""
    return np.array([view_offset("custody", d, offset) for d in detectors], dtype=np.float64)


def adjusted_distance(distance: float, kind: str, detector: str | None, offset: float) -> float:
    """The distance search ranks and bands by: the Euclidean one plus the gallery face's view offset."""
    return float(distance) + view_offset(kind, detector, offset)
