"""What every part of the API shares: settings, the catalogue connection per thread, the indexes, the
pipeline, and the checks on what callers type (facematch.validation)."""

from __future__ import annotations

import getpass
import logging
import threading
from pathlib import Path

from facematch.faces.pipeline import FacePipeline
from facematch.search.bands import BandScheme
from facematch.search.calibration import load_band_scheme
from facematch.settings import Settings
from facematch.store.accounts import Accounts
from facematch.store.catalogue import Catalogue
from facematch.store.index import FaceIndex
from facematch.store.index_store import IndexStore
from facematch.validation import check_optional_text, check_text

__all__ = ["FacematchBase", "default_user"]

log = logging.getLogger(__name__)


def default_user() -> str:
    """The OS user, recorded when no ``user`` is given."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


class FacematchBase:
    """A facematch catalogue and its indexes: the state every part of the API shares.

    Parameters: ``data_dir`` (catalogue home), ``index_dir`` (FAISS files), ``settings`` (everything
    else); each defaults to ``Settings.from_env()``.
    """

    def __init__(self, data_dir: str | Path | None = None, *, index_dir: str | Path | None = None,
                 settings: Settings | None = None):
        base = settings or Settings.from_env()
        self.settings = base.replace(data_dir=Path(data_dir) if data_dir else None,
                                     index_dir=Path(index_dir) if index_dir else None)
        self._local = threading.local()
        self._pipeline: FacePipeline | None = None
        self._lock = threading.Lock()
        self._indexes: dict[str, tuple[dict, FaceIndex]] = {}

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def catalogue(self) -> Catalogue:
        """This thread's connection to the catalogue."""
        if getattr(self._local, "catalogue", None) is None:
            self._local.catalogue = Catalogue(self.settings.data_dir, audit_key_file=self.settings.audit_key_path)
        return self._local.catalogue

    @property
    def accounts(self) -> Accounts:
        """Users, agencies, collections, sharing and visibility (facematch/store/accounts.py)."""
        return Accounts(self.catalogue)

    @property
    def index_store(self) -> IndexStore:
        return IndexStore(self.catalogue, self.settings.index_dir, self.settings)

    @property
    def pipeline(self) -> FacePipeline:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = FacePipeline(self.settings)
            return self._pipeline

    def close(self) -> None:
        if getattr(self._local, "catalogue", None) is not None:
            self._local.catalogue.close()
            self._local.catalogue = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def band_scheme(self) -> BandScheme:
        """The calibration in use, or the uncalibrated defaults when none is configured."""
        return load_band_scheme(self.settings)

    def _index(self, kind: str) -> FaceIndex:
        """The index of ``kind``, reused while neither the catalogue's faces nor the index file changed."""
        store = self.index_store
        with self._lock:
            cached = self._indexes.get(kind)
            if cached and cached[0] == (self.catalogue.face_state(kind), store.token(kind)):
                return cached[1]
            index = store.load(kind)
            self._indexes[kind] = ((self.catalogue.face_state(kind), store.token(kind)), index)
            return index

    def _text(self, field: str, value, kind: str = "id") -> str:
        return check_text(field, value, kind, self.settings.text_limits)

    def _optional(self, field: str, value, kind: str = "id") -> str | None:
        return check_optional_text(field, value, kind, self.settings.text_limits)

    def _user(self, user: str | None, field: str = "user") -> str:
        return default_user() if user is None else self._text(field, user, "name")
