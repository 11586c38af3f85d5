"""The baseline: face_recognition used exactly as its README shows.

``face_recognition.load_image_file`` then ``face_recognition.face_encodings(image)``, which finds faces
with HOG at one upsampling pass, aligns them with the 5-point landmark model ("small") and takes no
jitter; the first face of the list is used (``face_encodings(image)[0]`` in the README). Comparisons use
``face_recognition.face_distance`` (Euclidean distance, brute force) and a match is ``distance <= 0.6``
(``compare_faces``' default tolerance). Nothing here is tuned: it is the reference facematch must beat.

face_recognition loads five dlib models when imported, so it is imported only inside the functions that
need it (evaluation worker processes), never at module import.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path

import numpy as np

from facematch.errors import InvalidArgument

__all__ = ["BASELINE_NAME", "README_TOLERANCE", "baseline_description", "baseline_version", "readme_embedding"]

BASELINE_NAME = "baseline"
#: face_recognition.compare_faces' default tolerance, as its README uses it.
README_TOLERANCE = 0.6


def baseline_version() -> str:
    """``face_recognition-<version>``, or raise InvalidArgument when the package is missing."""
    try:
        return f"face_recognition-{metadata.version('face_recognition')}"
    except metadata.PackageNotFoundError:
        raise InvalidArgument("the baseline needs the face_recognition package "
                              "(pip install --no-deps face_recognition==1.3.0)") from None


def baseline_description() -> str:
    return (f"{baseline_version()} as its README shows: load_image_file, face_encodings(image)[0] "
            "(HOG detector, 1 upsampling pass, 5-point alignment, no jitter), Euclidean face_distance "
            f"by brute force, match at distance <= {README_TOLERANCE}")


def readme_embedding(path: str | Path) -> dict:
    """What the README recipe makes of one image file.

    Returns a dict with ``status`` ("ok", "no_face" or "unreadable"), ``embedding`` ((128,) float32 of
    the first face, or None), ``n_faces``, ``detector`` and ``seconds``. Never raises for a bad image:
    an unreadable file is a failure to acquire or enrol, counted by the caller.
    """
    import face_recognition  # loads dlib models on import: only in the process that embeds

    started = time.perf_counter()
    try:
        image = face_recognition.load_image_file(str(path))
    except (OSError, ValueError, SyntaxError) as exc:
        return {"status": "unreadable", "embedding": None, "n_faces": 0, "detector": None,
                "reason": str(exc), "seconds": time.perf_counter() - started}
    encodings = face_recognition.face_encodings(image)
    seconds = time.perf_counter() - started
    if not encodings:
        return {"status": "no_face", "embedding": None, "n_faces": 0, "detector": None, "seconds": seconds}
    return {"status": "ok", "embedding": np.asarray(encodings[0], dtype=np.float32), "n_faces": len(encodings),
            "detector": "hog", "seconds": seconds}
