"""facematch: retrospective facial-image comparison producing investigative leads for human review.

The public surface is listed in ``__all__``; everything else is internal. dlib and FAISS objects never
cross it: callers get dataclasses, plain values and ``(n, 128) float32`` arrays.
"""

from .api import Facematch
from .bands import BandScheme
from .errors import (
    CalibrationError, CatalogueError, FacematchError, ImageTooLarge, ImageUnreadable, IndexMissing,
    IndexStale, InvalidArgument, InvalidBox, ManifestError, NoFaceFound, NotFound, ProtocolError,
    SourceNotFound,
)
from .ingest import IngestSummary
from .review import Decision
from .search import Candidate, ProbeFace, SearchResult
from .settings import BandThresholds, DetectionSettings, EmbeddingSettings, Settings

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Facematch", "Settings", "BandThresholds", "DetectionSettings", "EmbeddingSettings", "BandScheme",
    "IngestSummary", "SearchResult", "ProbeFace", "Candidate", "Decision",
    "FacematchError", "ImageUnreadable", "ImageTooLarge", "NoFaceFound", "InvalidBox", "ManifestError",
    "SourceNotFound", "CatalogueError", "IndexMissing", "IndexStale", "NotFound", "InvalidArgument",
    "CalibrationError", "ProtocolError",
]
