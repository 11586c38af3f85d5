"""facematch: retrospective facial-image comparison producing investigative leads for human review.

The public surface is listed in ``__all__``; everything else is internal. dlib and FAISS objects never
cross it: callers get dataclasses, plain values and ``(n, 128) float32`` arrays.
"""

from facematch.api import Facematch
from facematch.search.bands import BandScheme
from facematch.errors import (
    CalibrationError, CatalogueError, FacematchError, ImageTooLarge, ImageUnreadable, IndexMissing,
    IndexStale, InvalidArgument, InvalidBox, ManifestError, NoFaceFound, NotFound, ProtocolError,
    SourceNotFound,
)
from facematch.ingest.bulk import IngestSummary
from facematch.search.review import Decision
from facematch.search.ranking import Candidate, ProbeFace, SearchResult
from facematch.settings import BandThresholds, DetectionSettings, EmbeddingSettings, Settings

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Facematch", "Settings", "BandThresholds", "DetectionSettings", "EmbeddingSettings", "BandScheme",
    "IngestSummary", "SearchResult", "ProbeFace", "Candidate", "Decision",
    "FacematchError", "ImageUnreadable", "ImageTooLarge", "NoFaceFound", "InvalidBox", "ManifestError",
    "SourceNotFound", "CatalogueError", "IndexMissing", "IndexStale", "NotFound", "InvalidArgument",
    "CalibrationError", "ProtocolError",
]
