"""Named errors raised by the facematch library.

The CLI turns each into a one-line message and a non-zero exit; library callers can catch them by name.
"""

__all__ = ["FacematchError", "ImageUnreadable", "ImageTooLarge", "NoFaceFound", "InvalidBox", "ManifestError",
    "SourceNotFound", "CatalogueError", "IndexMissing", "IndexStale", "NotFound", "InvalidArgument",
    "IncompatibleEmbeddings", "CalibrationError", "ProtocolError",
    "AuthenticationFailed", "PermissionDenied", "Conflict", "DataDeleted",
    "WriterBusy"]



class FacematchError(Exception):
    """Base class of every error facematch raises on purpose."""


class ImageUnreadable(FacematchError):
    """The file is missing, empty, truncated, corrupt or not an image format we can decode."""


class ImageTooLarge(FacematchError):
    """The image has more pixels than the configured limit (decompression-bomb guard)."""


class NoFaceFound(FacematchError):
    """No face was detected where one was required."""


class InvalidBox(FacematchError):
    """An investigator-marked box is malformed or lies outside the image."""


class ManifestError(FacematchError):
    """An ingestion manifest (CSV) is missing required columns or cannot be read."""


class SourceNotFound(FacematchError):
    """An ingestion source (folder, manifest or probe image) does not exist."""


class CatalogueError(FacematchError):
    """The catalogue cannot be opened, or its schema is newer than this version understands."""


class IndexMissing(FacematchError):
    """No index file exists yet for a catalogue that has faces: run `facematch index rebuild`."""


class IndexStale(FacematchError):
    """The index on disk does not reflect the catalogue (other catalogue, model, or state)."""


class NotFound(FacematchError):
    """A search, candidate, subject or face id does not exist in the catalogue."""


class InvalidArgument(FacematchError):
    """A parameter value is out of range or of the wrong kind."""


class IncompatibleEmbeddings(FacematchError):
    """The catalogue's faces were embedded with another model or alignment than the current settings use."""


class CalibrationError(FacematchError):
    """A calibration cannot be computed or loaded (too few comparisons, wrong model, bad file)."""


class ProtocolError(FacematchError):
    """An evaluation protocol (folder, JSON file or LFW pairs file) is malformed."""


class AuthenticationFailed(FacematchError):
    """Unknown user, wrong password, or an unknown, expired or revoked token or session."""


class PermissionDenied(FacematchError):
    """The user is known but their roles or agency do not allow this action."""


class Conflict(FacematchError):
    """The request contradicts what is stored (a name already taken, a review already recorded)."""


class DataDeleted(FacematchError):
    """The candidate's data was deleted under retention: nothing about it can be decided or shown."""


class WriterBusy(FacematchError):
    """Another process kept the data directory's writer lock for longer than this one would wait."""
