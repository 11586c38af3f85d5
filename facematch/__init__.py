"""facematch: retrospective facial-image comparison producing investigative leads for human review.

The public surface is listed in ``__all__``; everything else is internal. dlib and FAISS objects never
cross it: callers get dataclasses, plain values and ``(n, 128) float32`` arrays. The layers and what each
sub-package owns: docs/architecture.md.
"""

from facematch.api import Facematch
from facematch.errors import (
                              AuthenticationFailed,
                              CalibrationError,
                              CatalogueError,
                              Conflict,
                              DataDeleted,
                              FacematchError,
                              ImageTooLarge,
                              ImageUnreadable,
                              IncompatibleEmbeddings,
                              IndexMissing,
                              IndexStale,
                              InvalidArgument,
                              InvalidBox,
                              ManifestError,
                              NoFaceFound,
                              NotFound,
                              PermissionDenied,
                              ProtocolError,
                              SourceNotFound,
                              WriterBusy,
)
from facematch.ingest.bulk import IngestSummary
from facematch.search.bands import BandScheme
from facematch.search.ranking import Candidate, ProbeFace, SearchResult
from facematch.search.review import Decision
from facematch.settings import (
                              BandThresholds,
                              DetectionSettings,
                              EmbeddingSettings,
                              EvaluationSettings,
                              FmrTargets,
                              QualitySettings,
                              Settings,
)
from facematch.store.audit_chain import AuditVerification

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Facematch", "Settings", "BandThresholds", "DetectionSettings", "EmbeddingSettings", "QualitySettings",
    "EvaluationSettings", "FmrTargets", "BandScheme",
    "IngestSummary", "SearchResult", "ProbeFace", "Candidate", "Decision",
    "AuditVerification",
    "FacematchError", "ImageUnreadable", "ImageTooLarge", "NoFaceFound", "InvalidBox", "ManifestError",
    "SourceNotFound", "CatalogueError", "IndexMissing", "IndexStale", "NotFound", "InvalidArgument",
    "IncompatibleEmbeddings", "CalibrationError", "ProtocolError",
    "AuthenticationFailed", "PermissionDenied", "Conflict", "DataDeleted", "WriterBusy",
]
