"""Evaluation runs: facematch's pipeline beside the face_recognition baseline, from images to a report.

Three kinds of labelled source, one entry point each (``load_source`` picks by path):

- a protocol JSON file or a labelled folder (split by :func:`protocols.protocol_from_folder`): 1:N
  identification (CMC, FNIR at FPIR, at the review bands and at face_recognition's 0.6 tolerance,
  failures to enrol and acquire, breakdowns by attribute and by probe quality) and the 1:1
  verification of every probe against every gallery subject (DET, EER, TAR at FAR);
- the LFW View 2 ``pairs.txt``: verification with LFW 10-fold accuracy.

Gallery images are embedded with facematch's "custody" cascade, probes with its "probe" cascade (LFW
pair images are all probes), the baseline with the README recipe (:mod:`.baseline`). A subject's
distance to a probe is the smallest over its gallery images (as facematch's search fuses), and
candidate lists hold subjects sorted by ascending distance. Nothing is dropped: a probe with no face
is a failure to acquire (a miss, or a correct rejection when non-mated), a gallery image with no face a
failure to enrol, and a comparison involving either has distance +inf (never a match).

The same embeddings give calibration samples (:func:`calibration_sample`), so ``facematch calibrate``
reuses the cache of an evaluation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from facematch.errors import InvalidArgument, ProtocolError
from facematch.evaluation import metrics as M
from facematch.evaluation.band_rates import band_rates
from facematch.evaluation.baseline import README_TOLERANCE
from facematch.evaluation.embed_cache import (
    EmbeddingCache,
    ImageEmbedding,
    SystemSpec,
    embed_images,
    embedding_matrix,
    summary,
)
from facematch.evaluation.distractors import without_distractors
from facematch.evaluation.grouped import AUTO_GROUP, describe, group_outcomes, probe_groups
from facematch.evaluation.protocols import (
    Pair,
    ProbeEntry,
    Protocol,
    camera_from_filename,
    load_lfw_pairs,
    load_protocol_json,
    protocol_from_folder,
)
from facematch.evaluation.report import identification_summary, verification_summary, write_report
from facematch.search.bands import BandScheme
from facematch.search.calibration import ScoreSample, pairwise_sample
from facematch.search.matching import view_offsets
from facematch.search.person import fusion_name
from facematch.settings import EvaluationSettings, PersonSettings, Settings

_DEFAULTS = EvaluationSettings()

__all__ = ["Evaluation", "default_systems", "load_source", "evaluate_source", "evaluate_protocol",
           "evaluate_pairs", "fused_distances", "view_offset_estimate", "search_outcomes", "calibration_sample", "quality_bins",
           "PUBLISHED_LFW_ACCURACY"]

log = logging.getLogger(__name__)

RANKS = (1, 5, 10, 20, 50)
#: dlib's published LFW accuracy for its face model (colour images, 10-fold).
PUBLISHED_LFW_ACCURACY = 0.9938
_MAX_GROUPS = 12  # attributes with more distinct values (e.g. identity) get no breakdown
Progress = Callable[[str, int, int], None]


@dataclass
class Evaluation:
    """A finished run: the report's ``result`` and ``plots`` (see :mod:`.report`), and raw outcomes."""

    result: dict
    plots: dict
    outcomes: dict[str, list[M.SearchOutcome]] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> dict:
        """Write report.json, report.md and the PNG plots; returns their paths."""
        return write_report(self.result, out_dir, self.plots)


def default_systems(settings: Settings, *, baseline: bool = True,
                    fallback_box: tuple[int, int, int, int] | None = None,
                    face_choice: str = "largest") -> list[SystemSpec]:
    """facematch with ``settings`` (``fallback_box``, ``face_choice``), then the README baseline when asked."""
    name = "facematch" + ("+fixed-box" if fallback_box else "") + ("+central-face" if face_choice == "central" else "")
    systems = [SystemSpec.facematch(settings, name=name, fallback_box=fallback_box, face_choice=face_choice)]
    return systems + [SystemSpec.baseline()] if baseline else systems


def load_source(source: str | Path, *, kind: str = "auto", data_root: str | Path | None = None,
                seed: int = _DEFAULTS.seed, gallery_per_subject: int = _DEFAULTS.gallery_per_subject,
                holdout_fraction: float = _DEFAULTS.holdout_fraction
                ) -> Protocol | list[Pair]:
    """A protocol (JSON file or labelled folder) or LFW pairs, by ``kind`` or, with "auto", by path.

    "auto": a folder is split as a labelled folder, ``*.json`` is a protocol file (probes named
    ``Img_0N`` get a camera attribute, as FRMDB CCTV crops), anything else is an LFW pairs file (its
    images under ``data_root`` or the file's folder). Raises ProtocolError or InvalidArgument.
    """
    path = Path(source)
    if kind == "auto":
        kind = "folder" if path.is_dir() else "protocol" if path.suffix.lower() == ".json" else "lfw-pairs"
    if kind == "folder":
        return protocol_from_folder(path, gallery_per_subject=gallery_per_subject,
                                    holdout_fraction=holdout_fraction, seed=seed)
    if kind == "protocol":
        return load_protocol_json(path, data_root, attributes_fn=camera_from_filename)
    if kind == "lfw-pairs":
        if not path.is_file():
            raise ProtocolError(f"{path}: no such pairs file")
        return load_lfw_pairs(path, data_root)
    raise InvalidArgument(f"kind must be auto, folder, protocol or lfw-pairs, got {kind!r}")


# ------------------------------------------------------------------------------------- distances

def _person(probe: ProbeEntry) -> str | None:
    """Who a probe shows, for resampling: its identity attribute, else the folder part of its id."""
    return probe.attributes.get("identity") or (probe.id.split("/")[0] if "/" in probe.id else None)


def fused_distances(probes: np.ndarray, probe_ok: np.ndarray, gallery: np.ndarray, gallery_ok: np.ndarray,
                    gallery_subjects: Sequence[str], gallery_offsets: np.ndarray | None = None
                    ) -> tuple[list[str], np.ndarray]:
    """Subject-level distances: ``(subjects, D)`` with ``D[i, s]`` the smallest Euclidean distance from
    probe ``i`` to an acquired gallery image of subject ``s`` (+inf when either side has no template).

    ``probes`` ``(p, 128)``, ``gallery`` ``(g, 128)`` float32 with ``(p,)``/``(g,)`` bool masks;
    ``gallery_offsets`` ``(g,)`` is added to each gallery image's distances first (facematch's view
    offsets, as search applies them). ``subjects`` is sorted, so ties in distance list subjects by name.
    Returns ``D`` ``(p, n_subjects)``.
    """
    subjects, code = np.unique(np.asarray(gallery_subjects, dtype=object).astype(str), return_inverse=True)
    fused = np.full((probes.shape[0], subjects.size), np.inf)
    g = gallery.astype(np.float64)
    for i in np.flatnonzero(probe_ok):
        d = np.linalg.norm(g - probes[i].astype(np.float64), axis=1)  # face_recognition.face_distance
        if gallery_offsets is not None:
            d = d + gallery_offsets
        d[~gallery_ok] = np.inf
        np.minimum.at(fused[i], code, d)
    return subjects.tolist(), fused


def search_outcomes(probes: Sequence[ProbeEntry], subjects: Sequence[str], fused: np.ndarray,
                    probe_ok: np.ndarray, *, top: int = max(RANKS)) -> list[M.SearchOutcome]:
    """One :class:`metrics.SearchOutcome` per probe: its ``top`` closest subjects, or a failure to acquire."""
    out = []
    for i, probe in enumerate(probes):
        person = _person(probe)
        if not probe_ok[i]:
            out.append(M.SearchOutcome(probe.id, probe.subject, (), acquired=False, cluster=person))
            continue
        order = np.argsort(fused[i], kind="stable")[:top]
        cands = tuple((subjects[j], float(fused[i, j])) for j in order if math.isfinite(fused[i, j]))
        out.append(M.SearchOutcome(probe.id, probe.subject, cands, cluster=person))
    return out


def quality_bins(scores: Sequence[float | None], ids: Sequence[str]) -> dict[str, str]:
    """{probe id: quality bin}: tertiles of the acquired probes' quality scores, or "no face".

    Bin labels carry their score ranges, e.g. ``"1 low (<= 41)"``, ``"2 mid (41-57]"``, ``"3 high (> 57)"``.
    """
    known = np.array([s for s in scores if s is not None], dtype=np.float64)
    if known.size < 3:
        return {i: ("no face" if s is None else "all") for i, s in zip(ids, scores)}
    a, b = np.percentile(known, [100 / 3, 200 / 3])
    labels = (f"1 low (<= {a:.0f})", f"2 mid ({a:.0f}-{b:.0f}]", f"3 high (> {b:.0f})")
    return {i: "no face" if s is None else labels[0] if s <= a else labels[1] if s <= b else labels[2]
            for i, s in zip(ids, scores)}


def _groups(protocol: Protocol, quality: dict[str, str] | None) -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = {}
    keys = sorted({k for p in protocol.probes for k in p.attributes})
    for key in keys:
        mapping = {p.id: p.attributes.get(key, "unknown") for p in protocol.probes}
        if 1 < len(set(mapping.values())) <= _MAX_GROUPS:
            groups[key] = mapping
    if quality:
        groups["probe quality (facematch)"] = quality
    return groups


def _thresholds(bands: dict[str, float | None]) -> dict[str, float]:
    """The tolerance and each band that holds candidates ({band: distance}, None = holds none)."""
    return {f"face_recognition tolerance {README_TOLERANCE}": README_TOLERANCE,
            **{f"{b} band": t for b, t in bands.items() if t is not None}}


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _plottable(scores: dict) -> bool:
    """A DET curve needs both mated and non-mated distances (a system may have acquired no probe)."""
    return bool(scores["mated"].size and scores["nonmated"].size)


# ------------------------------------------------------------------------------------ protocols

@dataclass
class _Embedded:
    gallery: list[ImageEmbedding]
    probes: list[ImageEmbedding]
    seconds: float


def _embed_protocol(protocol: Protocol, system: SystemSpec, cache, workers, progress) -> _Embedded:
    started = time.perf_counter()
    report = (lambda what: (lambda d, n: progress(f"{system.name} {what}", d, n))) if progress else (lambda w: None)
    gallery = embed_images([g.path for g in protocol.gallery], system, purpose="custody", cache=cache,
                           workers=workers, progress=report("gallery"))
    probes = embed_images([p.path for p in protocol.probes], system, purpose="probe", cache=cache,
                          workers=workers, progress=report("probes"))
    return _Embedded(gallery, probes, time.perf_counter() - started)


def _gallery_offsets(system: SystemSpec, gallery: list[ImageEmbedding]) -> np.ndarray | None:
    """facematch's view offsets for its gallery templates (``facematch.search.matching``); none for the baseline."""
    if system.kind != "facematch":
        return None
    return view_offsets([e.detector for e in gallery], system.settings.nonfrontal_offset)


def _protocol_comparisons(protocol: Protocol, subjects: list[str], fused: np.ndarray):
    """Every probe against every gallery subject: distances, mated flags, person clusters."""
    column = {s: j for j, s in enumerate(subjects)}
    same = np.zeros(fused.shape, dtype=bool)
    for i, p in enumerate(protocol.probes):
        if p.subject in column:
            same[i, column[p.subject]] = True
    clusters = np.repeat([_person(p) or p.id for p in protocol.probes], fused.shape[1])
    return fused.ravel(), same.ravel(), clusters


def _system_on_protocol(protocol: Protocol, system: SystemSpec, emb: _Embedded, *, n_boot: int, seed: int,
                        thresholds: dict, groups: dict, person: tuple | None = None
                        ) -> tuple[dict, list[M.SearchOutcome], dict]:
    g_matrix, g_ok = embedding_matrix(emb.gallery)
    p_matrix, p_ok = embedding_matrix(emb.probes)
    subjects, fused = fused_distances(p_matrix, p_ok, g_matrix, g_ok, [g.subject for g in protocol.gallery],
                                      _gallery_offsets(system, emb.gallery))
    outcomes = search_outcomes(protocol.probes, subjects, fused, p_ok)
    ident = identification_summary(outcomes, ranks=RANKS, thresholds=thresholds, groups=groups,
                                   n_gallery=len(protocol.gallery), n_gallery_failed=int((~g_ok).sum()),
                                   n_boot=n_boot, seed=seed)
    d, same, clusters = _protocol_comparisons(protocol, subjects, fused)
    ver = verification_summary(d, same, clusters=clusters, fars=(0.001, 0.01, 0.1), n_boot=n_boot, seed=seed,
                               n_not_compared=int(np.isinf(d).sum()))
    mated_d = np.array([fused[i, subjects.index(p.subject)] for i, p in enumerate(protocol.probes)
                        if p_ok[i] and p.subject in subjects])
    top_nonmated = np.array([o.candidates[0][1] for o in outcomes if not o.mated and o.candidates])
    plots = {"scores": {"mated": _finite(d[same]), "nonmated": _finite(d[~same])},
             "search_scores": {"mated": _finite(mated_d), "nonmated": top_nonmated}}
    section = {"description": system.description(), "system": system.describe(), "verification": ver,
               "identification": ident,
               "identification_without_distractors": without_distractors(outcomes, subjects, fused, n_boot=n_boot,
                                                                         seed=seed),
               "embedding": {"gallery": summary(emb.gallery), "probes": summary(emb.probes),
                             "seconds": emb.seconds}}
    if person is not None:  # (group_by, {probe id: group}, PersonSettings): the same searches, one per person
        quality = [e.quality_score if e.acquired else None for e in emb.probes]
        grouped = group_outcomes(protocol.probes, person[1], subjects, fused, p_ok, quality, person[2])
        section["person_identification"] = describe(person[0], person[2], grouped, len(protocol.probes)) | \
            identification_summary(grouped, ranks=RANKS, thresholds=thresholds, n_boot=n_boot, seed=seed)
    return section, outcomes, plots


def evaluate_protocol(protocol: Protocol, systems: Sequence[SystemSpec], *, scheme: BandScheme,
                      cache: EmbeddingCache | None = None, workers: int = 1, n_boot: int = _DEFAULTS.n_boot,
                      seed: int = _DEFAULTS.seed, progress: Progress | None = None, group_by: str | None = AUTO_GROUP,
                      person: PersonSettings | None = None) -> Evaluation:
    """Identification and verification of each system on ``protocol``, side by side.

    ``group_by`` (``grouped.probe_groups``: "auto", "subject", "none" or a probe attribute) also scores
    person-level searches: each group of probes fused by ``person``'s rule (default: the settings').
    ``scheme`` gives the review bands, resolved at the protocol's gallery size as search does (FNIR/FPIR
    at each, predicted vs observed FPIR in ``gallery_bands``; lines on the histograms). Probe
    quality bins come from the first facematch system and apply to every system, so the baseline is
    broken down by the same images. ``n_boot=0`` skips the bootstrap intervals.
    """
    if not systems:
        raise InvalidArgument("give at least one system to evaluate")
    embedded = {s.name: _embed_protocol(protocol, s, cache, workers, progress) for s in systems}
    quality, scores = None, None
    first = next((s for s in systems if s.kind == "facematch"), None)
    if first is not None:
        probes = embedded[first.name].probes
        quality = quality_bins([e.quality_score if e.acquired else None for e in probes],
                               [p.id for p in protocol.probes])
        scores = {p.id: e.quality_score for p, e in zip(protocol.probes, probes)
                  if e.acquired and e.quality_score is not None}
    groups = _groups(protocol, quality)
    gallery_bands = scheme.for_gallery(len(protocol.gallery_subjects), len(protocol.gallery))
    bands = {b.band: b.threshold for b in gallery_bands.bands}
    thresholds = _thresholds(bands)
    group_name, group_map = probe_groups(protocol, group_by)
    person_spec = (group_name, group_map, person or PersonSettings()) if group_map else None
    result_systems, outcomes, plots = {}, {}, {"scores": {}, "search_scores": {}}
    for system in systems:
        section, outs, pl = _system_on_protocol(protocol, system, embedded[system.name], n_boot=n_boot,
                                                seed=seed, thresholds=thresholds, groups=groups,
                                                person=person_spec)
        result_systems[system.name], outcomes[system.name] = section, outs
        if _plottable(pl["scores"]):
            plots["scores"][system.name] = pl["scores"]
        plots["search_scores"][system.name] = pl["search_scores"]
    result = {
        "title": f"{' vs '.join(s.name for s in systems)} on {protocol.name}",
        "created_at": _now(),
        "protocol": {"name": protocol.name, "description": protocol.description,
                     "n_gallery_images": len(protocol.gallery), "n_gallery_subjects": len(protocol.gallery_subjects),
                     "n_probes": len(protocol.probes), "n_mated_probes": len(protocol.mated_probes),
                     "n_nonmated_probes": len(protocol.nonmated_probes)},
        "methods": _protocol_methods() + ([
            f"Person-level identification: probes grouped by {group_name}; each group is one search whose "
            f"subject distances are fused over its acquired stills by the rule "
            f"{fusion_name(person_spec[2].fusion, person_spec[2].fusion_k)} (facematch.search.person), for every "
            "system alike; a group with no acquired still is a failure to acquire."] if person_spec else []),
        "notes": [], "bands": {b: t for b, t in bands.items() if t is not None},
        "band_scheme": gallery_bands.describe(), "gallery_bands": band_rates(gallery_bands, outcomes, scores),
        "systems": result_systems,
    }
    return Evaluation(result, plots, outcomes)


def _protocol_methods() -> list[str]:
    return [
        "Gallery images are enrolled with facematch's custody detection cascade, probes searched with its probe "
        "cascade; the baseline runs face_recognition's README recipe on both.",
        "Identification: a subject's distance to a probe is the smallest over its gallery images (as facematch "
        "search fuses); the candidate list holds the 50 closest subjects in ascending distance. CMC counts "
        "every mated search; FNIR at FPIR sets the threshold on the non-mated searches' top distances.",
        "FNIR/FPIR are also given at face_recognition's tolerance 0.6 and at the review bands in use.",
        "Verification: every probe against every gallery subject (closest image), failures at distance +inf.",
        "Probe quality bins are tertiles of facematch's quality score over the probes where it found a face; "
        "the same bins apply to the baseline.",
    ]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------ LFW pairs

def _pair_images(pairs: Sequence[Pair]) -> tuple[list[Path], dict[Path, int], list[str]]:
    """Distinct images in order of first appearance (fold by fold, so early folds finish first)."""
    labels: dict[Path, str] = {}
    for p in pairs:
        labels.setdefault(p.path_a, p.subject_a)
        labels.setdefault(p.path_b, p.subject_b)
    paths = list(labels)
    return paths, {path: i for i, path in enumerate(paths)}, [labels[p] for p in paths]


def _pair_distances(pairs: Sequence[Pair], index: dict[Path, int], entries: list[ImageEmbedding]) -> np.ndarray:
    matrix, ok = embedding_matrix(entries)
    a = np.array([index[p.path_a] for p in pairs])
    b = np.array([index[p.path_b] for p in pairs])
    d = np.linalg.norm(matrix[a].astype(np.float64) - matrix[b].astype(np.float64), axis=1)
    d[~(ok[a] & ok[b])] = np.inf
    return d


def _embed_by_fold(pairs, systems, cache, workers, progress) -> dict[str, float]:
    """Embed fold by fold, every system in turn: an interrupted run leaves whole folds for every system.

    Returns the seconds each system took. Without a cache there is nothing to resume (and the caller's
    own pass would embed everything again), so the pre-pass is skipped.
    """
    seconds = {s.name: 0.0 for s in systems}
    if cache is None:
        return seconds
    for fold in sorted({p.fold for p in pairs}):
        paths, _, _ = _pair_images([p for p in pairs if p.fold == fold])
        for system in systems:
            started = time.perf_counter()
            report = (lambda d, n, s=system, f=fold: progress(f"{s.name} fold {f}", d, n)) if progress else None
            embed_images(paths, system, purpose="probe", cache=cache, workers=workers, progress=report)
            seconds[system.name] += time.perf_counter() - started
    return seconds


def evaluate_pairs(pairs: Sequence[Pair], systems: Sequence[SystemSpec], *, scheme: BandScheme,
                   name: str = "LFW View 2 pairs", cache: EmbeddingCache | None = None, workers: int = 1,
                   n_boot: int = _DEFAULTS.n_boot, seed: int = _DEFAULTS.seed, progress: Progress | None = None) -> Evaluation:
    """Verification of each system on labelled pairs, with LFW 10-fold accuracy.

    A pair where either image gives no template has distance +inf: a mated pair is then always a false
    non-match and a non-mated pair a correct rejection (the pair is never dropped). The accuracy over
    compared pairs only is also recorded (``lfw_accuracy_compared_only``), as some publications report it.
    """
    if not systems:
        raise InvalidArgument("give at least one system to evaluate")
    paths, index, _ = _pair_images(pairs)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    clusters = np.array([p.subject_a for p in pairs])
    result_systems, plots = {}, {"scores": {}}
    seconds = _embed_by_fold(pairs, systems, cache, workers, progress)
    for system in systems:
        entries = embed_images(paths, system, purpose="probe", cache=cache, workers=workers)
        d = _pair_distances(pairs, index, entries)
        ver = verification_summary(d, same, clusters=clusters, folds=folds, n_boot=n_boot, seed=seed,
                                   n_not_compared=int(np.isinf(d).sum()))
        ok = np.isfinite(d)
        if len(np.unique(folds[ok])) >= 2:
            ver["lfw_accuracy_compared_only"] = M.lfw_10fold_accuracy(d[ok], same[ok], folds[ok])._asdict()
        ver["images_without_template"] = sum(not e.acquired for e in entries)
        result_systems[system.name] = {"description": system.description(), "system": system.describe(),
                                       "verification": ver,
                                       "embedding": {"images": summary(entries), "seconds": seconds[system.name]}}
        scores = {"mated": _finite(d[same]), "nonmated": _finite(d[~same])}
        if _plottable(scores):
            plots["scores"][system.name] = scores
    n_folds = len(np.unique(folds))
    result = {
        "title": f"{' vs '.join(s.name for s in systems)} on {name}",
        "created_at": _now(),
        "protocol": {"name": name, "n_pairs": len(pairs), "n_mated_pairs": int(same.sum()),
                     "n_nonmated_pairs": int((~same).sum()), "n_folds": n_folds, "n_images": len(paths)},
        "methods": [
            f"LFW protocol accuracy: for each of the {n_folds} folds, the distance threshold maximising accuracy "
            "on the other folds is applied to it; mean and standard error over folds.",
            "Every image is embedded with facematch's probe cascade (the baseline: face_recognition's README "
            "recipe). A pair with an image without a template counts as 'different' (distance +inf).",
            "Intervals resample the first-named person of each pair.",
        ],
        "notes": [f"dlib's published accuracy for this face model is {100 * PUBLISHED_LFW_ACCURACY:.2f}% on colour "
                  "LFW; this copy is greyscale and funneled."],
        "bands": {"strong": scheme.thresholds.strong, "possible": scheme.thresholds.possible,
                  "weak": scheme.thresholds.weak},
        "band_scheme": scheme.describe(), "systems": result_systems,
    }
    return Evaluation(result, plots)


def evaluate_source(source: Protocol | Sequence[Pair], systems: Sequence[SystemSpec], **kwargs) -> Evaluation:
    """:func:`evaluate_protocol` for a protocol, :func:`evaluate_pairs` for a list of pairs."""
    if isinstance(source, Protocol):
        return evaluate_protocol(source, systems, **kwargs)
    return evaluate_pairs(list(source), systems, **kwargs)


# ---------------------------------------------------------------------------------- calibration

def calibration_sample(source: Protocol | Sequence[Pair], system: SystemSpec, *, name: str,
                       cache: EmbeddingCache | None = None, workers: int = 1, all_pairs: bool = True,
                       progress: Progress | None = None) -> ScoreSample:
    """Comparison distances of ``system`` on a labelled source, for :func:`calibration.compute_calibration`.

    A protocol gives every acquired probe against every enrolled subject (closest image, as search fuses
    its candidates). Pairs give every comparison between their distinct images when ``all_pairs``
    (LFW: 29.6 million, enough to support low FMR targets), else just the listed pairs. Images without a
    template make no comparison; their count is recorded.
    """
    if isinstance(source, Protocol):
        emb = _embed_protocol(source, system, cache, workers, progress)
        g_matrix, g_ok = embedding_matrix(emb.gallery)
        p_matrix, p_ok = embedding_matrix(emb.probes)
        subjects, fused = fused_distances(p_matrix, p_ok, g_matrix, g_ok, [g.subject for g in source.gallery],
                                          _gallery_offsets(system, emb.gallery))
        d, same, _ = _protocol_comparisons(source, subjects, fused)
        quality = np.repeat(np.array([e.quality_score if e.acquired and e.quality_score is not None else np.nan
                                      for e in emb.probes], dtype=np.float64), fused.shape[1])
        mated = same & np.isfinite(d)
        return ScoreSample.from_distances(
            name, f"{source.name}: each probe with a face against each enrolled subject (closest image)",
            _finite(d[~same]), d[mated], mated_quality=quality[mated], n_probes=len(source.probes),
            n_probes_acquired=int(p_ok.sum()), n_gallery_images=len(source.gallery), n_gallery_enrolled=int(g_ok.sum()))
    pairs = list(source)
    paths, index, labels = _pair_images(pairs)
    report = (lambda d, n: progress(f"{system.name} images", d, n)) if progress else None
    entries = embed_images(paths, system, purpose="probe", cache=cache, workers=workers, progress=report)
    matrix, ok = embedding_matrix(entries)
    counts = {"n_images": len(paths), "n_images_acquired": int(ok.sum())}
    if all_pairs:
        return pairwise_sample(matrix[ok], np.asarray(labels)[ok], name=name, description=(
            "every comparison between the distinct images of the pairs file (different names = non-mated)"),
            **counts)
    d = _pair_distances(pairs, index, entries)
    same = np.array([p.same for p in pairs])
    return ScoreSample.from_distances(name, "the listed pairs of the pairs file", _finite(d[~same]),
                                      _finite(d[same]), **counts)


def view_offset_estimate(protocol: Protocol, system: SystemSpec, *, cache: EmbeddingCache | None = None,
                         workers: int = 1, progress: Progress | None = None) -> dict:
    """The FMR-equalising view offset on a protocol (``matching.fmr_equalising_offset``).

    Uses only non-mated comparisons: each acquired probe against every gallery face of *another*
    subject, split by whether HOG missed that gallery face (found by the CNN or MTCNN). Only subjects with both kinds of view
    take part, so the two sets differ in view, not in who is in them (distractors from another data set
    sit further from CCTV probes for reasons other than pose). Returns the offset, the shift at each
    quantile and the counts behind them.
    """
    from facematch.search.matching import NONFRONTAL_DETECTORS, OFFSET_QUANTILES, fmr_equalising_offset

    emb = _embed_protocol(protocol, system, cache, workers, progress)
    g_matrix, g_ok = embedding_matrix(emb.gallery)
    p_matrix, p_ok = embedding_matrix(emb.probes)
    nonfrontal = np.array([e.detector in NONFRONTAL_DETECTORS for e in emb.gallery])
    g_subjects = np.array([g.subject for g in protocol.gallery], dtype=object)
    both = set(g_subjects[nonfrontal & g_ok]) & set(g_subjects[~nonfrontal & g_ok])
    in_both = np.array([s in both for s in g_subjects])
    frontal_d, other_d = [], []
    for i in np.flatnonzero(p_ok):
        keep = g_ok & in_both & (g_subjects != protocol.probes[i].subject)
        d = np.linalg.norm(g_matrix.astype(np.float64) - p_matrix[i].astype(np.float64), axis=1)
        frontal_d.append(d[keep & ~nonfrontal])
        other_d.append(d[keep & nonfrontal])
    frontal, other = np.concatenate(frontal_d), np.concatenate(other_d)
    shifts = np.quantile(frontal, OFFSET_QUANTILES) - np.quantile(other, OFFSET_QUANTILES)
    return {"offset": fmr_equalising_offset(frontal, other), "n_frontal": int(frontal.size),
            "n_nonfrontal": int(other.size), "n_nonfrontal_gallery": int((nonfrontal & g_ok).sum()), "n_subjects": len(both),
            "shifts": {f"{q:g}": float(s) for q, s in zip(OFFSET_QUANTILES, shifts)}}


def probe_stage_shift(protocol: Protocol, system: SystemSpec, stage: str, *, cache: EmbeddingCache | None = None,
                      workers: int = 1, progress: Progress | None = None) -> dict:
    """How much closer to other people's faces the probes found by one detector ``stage`` lie.

    Non-mated comparisons only: each acquired probe against every gallery face of another subject, view
    offset applied as search does. The shift (other probes' quantile minus this stage's) at the low
    quantiles is the probe-side offset such faces would need for a distance to mean the same false-match
    rate; the session-4 turned passes and session-5 MTCNN stage were checked this way
    (docs/cctv-probes.md).
    """
    from facematch.search.matching import OFFSET_QUANTILES, view_offsets

    emb = _embed_protocol(protocol, system, cache, workers, progress)
    g_matrix, g_ok = embedding_matrix(emb.gallery)
    p_matrix, p_ok = embedding_matrix(emb.probes)
    offsets = view_offsets([e.detector for e in emb.gallery], system.settings.nonfrontal_offset)
    g_subjects = np.array([g.subject for g in protocol.gallery], dtype=object)
    found, others = [], []
    for i in np.flatnonzero(p_ok):
        keep = g_ok & (g_subjects != protocol.probes[i].subject)
        d = np.linalg.norm(g_matrix.astype(np.float64) - p_matrix[i].astype(np.float64), axis=1) + offsets
        (found if emb.probes[i].detector == stage else others).append(d[keep])
    if not found or not others:
        raise ValueError(f"need probes found by {stage!r} and by other stages; got {len(found)} and {len(others)}")
    mine, rest = np.concatenate(found), np.concatenate(others)
    shifts = np.quantile(rest, OFFSET_QUANTILES) - np.quantile(mine, OFFSET_QUANTILES)
    return {"stage": stage, "n_probes": len(found), "n_other_probes": len(others),
            "n_comparisons": int(mine.size), "n_other_comparisons": int(rest.size),
            "shifts": {f"{q:g}": float(v) for q, v in zip(OFFSET_QUANTILES, shifts)}}
