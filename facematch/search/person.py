"""Person-level search: several stills (or frames of a clip) of ONE unknown person, one fused list.

Investigators rarely have one still. Each still is searched as usual; then every custody subject that
any still listed gets one distance per still (exact, from the stored descriptors, view offset applied
as search does), and those distances are fused into one by a rule chosen by measurement
(``settings.PersonSettings``; docs/evaluation.md, "Person-level search"):

- ``min``: the smallest distance over the stills (one good view decides);
- ``mean-k``: the mean of the k smallest (one lucky look-alike still is not enough);
- ``quality-mean``: the mean over all stills weighted by each still's quality score;
- ``quality-min``: the smallest of ``distance + penalty x (1 - quality / 100)``.

Every fused candidate keeps the per-still distances behind it (which still, its distance, that
subject's rank in that still's own list), so a reviewer sees whether one still or all of them support it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facematch.errors import InvalidArgument, NoFaceFound
from facematch.search.bands import BandScheme, similarity_score
from facematch.search.matching import view_offset
from facematch.search.ranking import Candidate
from facematch.settings import FUSION_RULES, PersonSettings
from facematch.store.catalogue import Catalogue
from facematch.store.index import FaceIndex

__all__ = ["StillSupport", "PersonCandidate", "PersonResult", "fuse_distances", "fusion_name",
           "rank_person", "read_boxes_csv", "parse_xywh"]


@dataclass
class StillSupport:
    """One still's evidence for a fused candidate: its probe row, distance, and the subject's rank in
    that still's own list (None: beyond the ``top`` it listed)."""

    probe_no: int
    path: str
    distance: float
    rank: int | None


@dataclass
class PersonCandidate(Candidate):
    """One custody subject of the fused list: a custody ``Candidate`` whose ``distance`` is the fused one,
    with ``support``, the stills' distances behind it."""

    support: list[StillSupport] = field(default_factory=list)


@dataclass
class PersonResult:
    """The person-level part of a search: the fusion rule, how many stills were given and searched
    (video frames count as stills), and the fused candidate list."""

    fusion: str
    stills: int
    stills_searched: int
    candidates: list[PersonCandidate] = field(default_factory=list)


def fusion_name(rule: str, k: int) -> str:
    """How a rule is named in results and reports: "min", "mean-2", "quality-mean", ..."""
    return f"mean-{k}" if rule == "mean-k" else rule


def fuse_distances(distances: np.ndarray, quality: Sequence[float | None] | None = None, *, rule: str = "mean-k",
                   k: int = 2, penalty: float = 0.1) -> np.ndarray:
    """Fuse ``(n_stills, n_subjects)`` distances of one person's searched stills into ``(n_subjects,)``.

    ``quality`` ``(n_stills,)`` are 0-100 quality scores (None: unknown, then every still weighs the same).
    +inf entries (no comparison) are never chosen while a finite one exists. Raises InvalidArgument for an
    unknown rule or no still.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] == 0:
        raise InvalidArgument("fusion needs a (stills, subjects) matrix with at least one still")
    q = np.array([50.0 if v is None else float(v) for v in (quality if quality is not None else [None] * d.shape[0])])
    q = np.clip(q, 0.0, 100.0)
    if rule == "min":
        return d.min(axis=0)
    if rule == "mean-k":
        kk = min(k, d.shape[0])
        return np.sort(d, axis=0)[:kk].mean(axis=0)
    if rule == "quality-mean":
        w = np.maximum(q, 1.0)[:, None]
        finite = np.isfinite(d)
        total = np.where(finite, w, 0.0).sum(axis=0)
        fused = np.where(finite, d * w, 0.0).sum(axis=0) / np.where(total > 0, total, 1.0)
        return np.where(total > 0, fused, np.inf)
    if rule == "quality-min":
        return (d + penalty * (1.0 - q / 100.0)[:, None]).min(axis=0)
    raise InvalidArgument(f"fusion rule must be one of {', '.join(FUSION_RULES)}, got {rule!r}")


def rank_person(catalogue: Catalogue, index: FaceIndex, stills: Sequence, top: int, bands: BandScheme, *,
                person: PersonSettings, nonfrontal_offset: float) -> PersonResult:
    """The fused custody list of one person from ``stills``: ``(ProbeFace, (128,) embedding | None)`` pairs
    whose ``subjects`` lists are already ranked. Raises ``NoFaceFound`` when no still was searchable.

    ``estimated_fmr`` of a fused candidate is bounded by the number of stills searched times the
    single-comparison FMR of its best still (any one of n stills may match a stranger that closely).
    """
    searched = [(p, e) for p, e in stills if e is not None]
    if not searched:
        raise NoFaceFound(f"none of the {len(stills)} stills of the person holds a searchable face: "
                          "mark the face with a box (--box or --boxes) or give other stills")
    rule = fusion_name(person.fusion, person.fusion_k)
    # subjects by id (a reference alone may name several agencies' subjects), found from each listed face
    listed = catalogue.face_details([c.face_id for p, _ in searched for c in p.subjects if c.face_id is not None])
    subject_of = {face_id: d["subject_id"] for face_id, d in listed.items() if d.get("subject_id") is not None}
    refs = {d["subject_id"]: d["subject_ref"] for d in listed.values() if d.get("subject_id") is not None}
    subjects = sorted(refs, key=lambda sid: (refs[sid], sid))
    if not subjects or index.ntotal == 0:
        return PersonResult(rule, len(stills), len(searched))
    dist, face_of = _subject_distances(catalogue, np.stack([e for _, e in searched]), subjects, nonfrontal_offset,
                                       getattr(index, "allowed", None))
    fused = fuse_distances(dist, [p.quality_score for p, _ in searched], rule=person.fusion, k=person.fusion_k,
                           penalty=person.quality_penalty)
    order = sorted(range(len(subjects)), key=lambda j: (fused[j], refs[subjects[j]], subjects[j]))[:top]
    details = catalogue.face_details([int(face_of[int(np.argmin(dist[:, j])), j]) for j in order])
    out = []
    for rank, j in enumerate(order, start=1):
        best = int(np.argmin(dist[:, j]))
        face_id = int(face_of[best, j])
        support = [StillSupport(p.probe_no, p.path, round(float(dist[i, j]), 4),
                                next((c.rank for c in p.subjects if subject_of.get(c.face_id) == subjects[j]), None))
                   for i, (p, _) in enumerate(searched)]
        fmr = bands.estimated_fmr(float(dist[best, j]))
        out.append(PersonCandidate(
            rank, round(float(fused[j]), 4), similarity_score(float(fused[j])), bands.band(float(fused[j])),
            None if fmr is None else min(1.0, fmr * len(searched)), face_id,
            details.get(face_id, {}).get("original_path", ""), subject=refs[subjects[j]], support=support))
    return PersonResult(rule, len(stills), len(searched), out)


def _subject_distances(catalogue: Catalogue, probes: np.ndarray, subjects: list[int], nonfrontal_offset: float,
                       allowed: np.ndarray | None = None):
    """``(D, F)``: ``D[i, j]`` the smallest view-adjusted distance from probe ``i`` to subject ``j``'s
    custody faces, ``F[i, j]`` the face id that gives it; only ``allowed`` faces (a scoped search's) count."""
    faces = catalogue.custody_faces(subjects)
    if allowed is not None:
        visible = set(np.asarray(allowed).tolist())
        faces = [f for f in faces if f["face_id"] in visible]
    vectors = catalogue.embeddings([f["face_id"] for f in faces])
    dist = np.full((probes.shape[0], len(subjects)), np.inf)
    face_of = np.zeros(dist.shape, dtype=np.int64)
    column = {s: j for j, s in enumerate(subjects)}
    for f in faces:
        vec = vectors.get(f["face_id"])
        if vec is None:
            continue
        d = (np.linalg.norm(probes.astype(np.float64) - vec.astype(np.float64), axis=1)
             + view_offset("custody", f["detector"], nonfrontal_offset))
        j = column[f["subject_id"]]
        better = d < dist[:, j]
        dist[better, j] = d[better]
        face_of[better, j] = f["face_id"]
    return dist, face_of


def read_boxes_csv(path: str | Path, images: Sequence[str | Path]) -> list[tuple[int, int, int, int] | None]:
    """One box per image from a CSV with header ``path,box`` (box "x,y,w,h" in pixels), in ``images`` order.

    Paths are matched as given or relative to the CSV's folder; an image the file does not list gets
    None (the whole image is searched). Raises InvalidArgument (with the line) for a missing column,
    a malformed box, a path listed twice or a path that is not among ``images``.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            header = rows and list(rows[0]) or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidArgument(f"{path}: cannot read the boxes file: {exc}") from None
    if not rows or not {"path", "box"} <= set(header):
        raise InvalidArgument(f"{path}: a boxes file needs a header 'path,box' and at least one row")
    wanted = {Path(p).resolve(): i for i, p in enumerate(images)}
    boxes: list[tuple[int, int, int, int] | None] = [None] * len(images)
    for line, row in enumerate(rows, start=2):
        name = (row.get("path") or "").strip()
        target = Path(name) if Path(name).is_absolute() or Path(name).exists() else path.parent / name
        i = wanted.get(target.resolve())
        if i is None:
            raise InvalidArgument(f"{path}:{line}: {name!r} is not one of the probe images")
        if boxes[i] is not None:
            raise InvalidArgument(f"{path}:{line}: {name!r} is listed twice")
        try:
            boxes[i] = parse_xywh(row.get("box") or "")
        except InvalidArgument as exc:
            raise InvalidArgument(f"{path}:{line}: {exc}, got {row.get('box')!r}") from None
    return boxes


def parse_xywh(text: str) -> tuple[int, int, int, int]:
    """"x,y,w,h" (pixels; the one box format users type) -> four ints. Raises InvalidArgument."""
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or parts[0] < 0 or parts[1] < 0 or parts[2] <= 0 or parts[3] <= 0:
        raise InvalidArgument("expected x,y,w,h: four integers, x and y >= 0, w and h > 0 (e.g. 120,80,64,64)")
    return parts
