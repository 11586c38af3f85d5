"""Shared fixtures: where the real face data is, temporary catalogues, a session-wide frmdb gallery."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from facematch.api import Facematch
from facematch.settings import EvaluationSettings, Settings

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """``$FACEMATCH_TEST_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("FACEMATCH_TEST_DATA", REPO.parent / "shared" / "data"))


def require_data(*parts: str) -> Path:
    """The path under the data root, or skip the test saying what is missing."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real face data not found at {path} (set FACEMATCH_TEST_DATA or place ../shared/data)")
    return path


@pytest.fixture
def astronaut() -> np.ndarray:
    """A real face that ships with scikit-image: ``(512, 512, 3) uint8`` RGB."""
    from skimage import data

    return data.astronaut()


def make_facematch(root: Path, **settings) -> Facematch:
    """A Facematch on a fresh catalogue, index folder and evaluation cache under ``root`` (one worker unless
    told): deletion proofs look in the evaluation cache, and the machine's own (``.cache/``, full after an
    evaluation) must not decide a test."""
    base = Settings(data_dir=root / "data", index_dir=root / "indexes", workers=settings.pop("workers", 1),
                    evaluation=EvaluationSettings(cache_dir=root / "eval-cache"))
    return Facematch(settings=base.replace(**settings))


@pytest.fixture
def fm(tmp_path) -> Facematch:
    with make_facematch(tmp_path) as instance:
        yield instance


FRMDB_GALLERY_SUBJECTS = [f"{n:03d}" for n in range(40, 52)]
FRMDB_GALLERY_VIEWS = ["Img_23.jpg", "Img_33.jpg", "Img_43.jpg"]


@pytest.fixture(scope="session")
def frmdb_gallery(tmp_path_factory):
    """A catalogue of 12 frmdb-dev subjects x 3 eye-level views, ingested once per test session.

    Tests must not write to it; copy it (``shutil.copytree``) to mutate.
    """
    mugshots = require_data("frmdb-dev", "mugshots")
    root = tmp_path_factory.mktemp("frmdb-gallery")
    manifest = root / "custody.csv"
    lines = ["path,subject_id"] + [
        f"{mugshots / s / v},{s}" for s in FRMDB_GALLERY_SUBJECTS for v in FRMDB_GALLERY_VIEWS]
    manifest.write_text("\n".join(lines) + "\n")
    instance = make_facematch(root, workers=2)
    summary = instance.ingest_custody(manifest)
    yield instance, summary, root
    instance.close()
