"""The evaluate, calibrate and protocol workflows: what the API's methods of those names run.

Each takes the settings (whose ``evaluation`` part holds every default) and plain values, loads the
labelled source, chooses the systems and calls :mod:`facematch.evaluation.runner` and
:mod:`facematch.search.calibration`. The CLI and the scripts reach them only through the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facematch.errors import InvalidArgument
from facematch.evaluation.embed_cache import EmbeddingCache, SystemSpec, with_jitters
from facematch.evaluation.grouped import AUTO_GROUP
from facematch.evaluation.protocols import Pair, Protocol, protocol_from_folder, save_protocol_json
from facematch.evaluation.runner import (
    Evaluation,
    Progress,
    calibration_sample,
    default_systems,
    evaluate_source,
    load_source,
)
from facematch.search.calibration import CALIBRATION_FILE_NAME, compute_calibration, load_band_scheme, write_calibration
from facematch.settings import Settings
from facematch.store.lock import WriterLock
from facematch.types import FaceBox

__all__ = ["SourceOptions", "evaluation_settings", "run_evaluation", "run_calibration", "write_protocol"]


@dataclass(frozen=True)
class SourceOptions:
    """How a labelled source is read: ``kind`` (auto|folder|protocol|lfw-pairs), ``data_root`` for
    relative image paths, and the folder split (None: the settings' defaults)."""

    kind: str = "auto"
    data_root: Path | None = None
    gallery_per_subject: int | None = None
    holdout_fraction: float | None = None
    seed: int | None = None

    def load(self, path: Path, settings: Settings) -> Protocol | list[Pair]:
        d = settings.evaluation
        return load_source(path, kind=self.kind, data_root=self.data_root,
                           seed=d.seed if self.seed is None else self.seed,
                           gallery_per_subject=self.gallery_per_subject or d.gallery_per_subject,
                           holdout_fraction=d.holdout_fraction if self.holdout_fraction is None
                           else self.holdout_fraction)


def evaluation_settings(settings: Settings, *, workers: int | None = None,
                        num_jitters: int | None = None) -> Settings:
    """``settings`` with an evaluation's ``workers`` and descriptor ``num_jitters`` (both sides) applied."""
    if num_jitters is not None:
        settings = settings.replace(embedding=with_jitters(settings.embedding, num_jitters))
    return settings.replace(workers=workers)


def _cache(settings: Settings, cache_dir: Path | None, no_cache: bool) -> EmbeddingCache | None:
    return None if no_cache else EmbeddingCache(cache_dir or settings.evaluation.cache_dir)


def _default_face(labelled) -> str:
    """The labelled person's face: the largest in a protocol (what search ranks first), the central one
    in LFW-style pairs (LFW's images are cropped around the labelled face)."""
    return "largest" if isinstance(labelled, Protocol) else "central"


def run_evaluation(settings: Settings, source: Path, *, output: Path | None = None, baseline: bool = True,
                   fallback_box: tuple[int, int, int, int] | None = None, face: str | None = None,
                   n_boot: int | None = None, sources: SourceOptions = SourceOptions(),
                   cache_dir: Path | None = None, no_cache: bool = False,
                   progress: Progress | None = None, group_by: str | None = None) -> tuple[Evaluation, dict | None]:
    """Evaluate facematch (and the README baseline) on ``source``; write the report to ``output`` if given.

    ``fallback_box`` is x, y, w, h (as search's ``box``). ``group_by`` (protocols only; None: "auto")
    adds person-level results (``evaluation.grouped``). Returns the evaluation and the written paths.
    """
    labelled = sources.load(source, settings)
    ltrb = None
    if fallback_box is not None:
        b = FaceBox.from_xywh(*fallback_box)
        ltrb = (b.left, b.top, b.right, b.bottom)
    systems = default_systems(settings, baseline=baseline, fallback_box=ltrb,
                              face_choice=face or _default_face(labelled))
    d = settings.evaluation
    grouping = {"group_by": group_by or AUTO_GROUP, "person": settings.person} if isinstance(labelled, Protocol) else {}
    if group_by and not grouping:
        raise InvalidArgument("group_by applies to protocols (JSON or folder), not to LFW pairs")
    evaluation = evaluate_source(labelled, systems, scheme=load_band_scheme(settings), **grouping,
                                 cache=_cache(settings, cache_dir, no_cache), workers=settings.workers,
                                 n_boot=d.n_boot if n_boot is None else n_boot,
                                 seed=d.seed if sources.seed is None else sources.seed, progress=progress)
    return evaluation, (evaluation.write(output) if output is not None else None)


def run_calibration(settings: Settings, source_paths: list[Path], *, output: Path | None = None,
                    fmr_targets: dict[str, float | None] | None = None, strict: bool = False,
                    listed_pairs_only: bool = False, sources: SourceOptions = SourceOptions(),
                    cache_dir: Path | None = None, no_cache: bool = False,
                    progress: Progress | None = None) -> tuple[dict, Path]:
    """Set the band thresholds from labelled sources for target FMRs; write and return the document.

    ``fmr_targets`` maps band to target (None or missing: the settings' default). The file goes to
    ``output`` or ``<data_dir>/calibration.json``.
    """
    targets = settings.evaluation.fmr_targets.as_dict()
    targets.update({k: v for k, v in (fmr_targets or {}).items() if v is not None})
    cache = _cache(settings, cache_dir, no_cache)
    samples = []
    for path in source_paths:
        labelled = sources.load(path, settings)
        system = SystemSpec.facematch(settings, face_choice=_default_face(labelled))
        samples.append(calibration_sample(labelled, system, name=path.name, cache=cache, workers=settings.workers,
                                          all_pairs=not listed_pairs_only, progress=progress))
    doc = compute_calibration(samples, settings=settings, strict=strict, targets=targets)
    if output is not None:
        return doc, write_calibration(doc, output)
    with WriterLock(settings.data_dir, "calibrate", wait_s=settings.writer_wait_s):  # into the data dir
        return doc, write_calibration(doc, Path(settings.data_dir) / CALIBRATION_FILE_NAME)


def write_protocol(settings: Settings, folder: Path, output: Path, *, gallery_per_subject: int | None = None,
                   holdout_fraction: float | None = None, seed: int | None = None,
                   name: str | None = None) -> Protocol:
    """Split a labelled ``<identity>/<image>`` folder into a protocol and save it as JSON at ``output``."""
    d = settings.evaluation
    split = protocol_from_folder(folder, gallery_per_subject=gallery_per_subject or d.gallery_per_subject,
                                 holdout_fraction=d.holdout_fraction if holdout_fraction is None else holdout_fraction,
                                 seed=d.seed if seed is None else seed, name=name)
    save_protocol_json(split, output)
    return split
