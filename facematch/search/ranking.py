"""Search: every face of each probe image against custody subjects and earlier crime-scene faces.

Investigation mode (NIST FRTE terms): each probe face gets the top-K custody *subjects*, fused over all
of a subject's enrolled images (the closest image decides, and is named), and separately the closest
unidentified faces from earlier crime-scene images so one unknown person can be linked across cases.
Every candidate is a lead for trained human review, never an identification.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facematch.errors import FacematchError, ImageTooLarge
from facematch.faces.imaging import load_image
from facematch.faces.pipeline import FacePipeline
from facematch.faces.quality import FaceQuality, probe_warning
from facematch.faces.video import is_video, sample_frames
from facematch.search.bands import GalleryBands, similarity_score
from facematch.search.matching import adjusted_distance
from facematch.settings import PersonSettings
from facematch.store.catalogue import Catalogue
from facematch.store.index import FaceIndex
from facematch.types import FaceBox

if TYPE_CHECKING:
    from facematch.search.person import PersonResult

__all__ = ["SEARCH_SCHEMA_VERSION", "NOTICE", "Candidate", "ProbeFace", "SearchResult", "analyse_probes",
    "rank_subjects", "rank_scene_faces"]

log = logging.getLogger(__name__)

#: Version of the JSON document ``SearchResult.to_dict`` produces (docs/search-json.md).
SEARCH_SCHEMA_VERSION = 3

NOTICE = ("Candidates are investigative leads for review by a trained person. They are not "
          "identifications; no decision is made automatically.")


@dataclass
class Candidate:
    """One ranked lead. ``subject`` is set for custody candidates, ``case_ref`` for scene faces.

    ``deleted`` ("deleted under retention on DATE (reason)") marks a stored candidate whose data was
    deleted since the search: subject, case, face id and image path are then None.
    """

    rank: int
    distance: float
    score: float
    band: str
    estimated_fmr: float | None
    face_id: int | None
    image_path: str | None
    subject: str | None = None
    case_ref: str | None = None
    deleted: str | None = None


@dataclass
class ProbeFace:
    """One face of one probe image with its two candidate lists (or why it could not be searched)."""

    probe_no: int                     # row number of this face in the search (1, 2, ...)
    path: str
    outcome: str                      # "searched", "no_face", "unreadable", "too_large"
    reason: str | None = None
    face_no: int | None = None
    box: tuple[int, int, int, int] | None = None   # x, y, w, h in original pixels
    detector: str | None = None
    quality_score: float | None = None
    quality: dict = field(default_factory=dict)
    warning: str | None = None
    subjects: list[Candidate] = field(default_factory=list)
    scene_faces: list[Candidate] = field(default_factory=list)
    sha256: str | None = None


@dataclass
class SearchResult:
    """A stored search: who ran it, why, against what, with which bands, and what it returned."""

    search_id: int
    created_at: str
    user: str
    case_ref: str | None
    reason: str | None
    top: int
    bands: dict
    gallery_subjects: int
    gallery_faces: int
    expected_false_candidates: float | None
    probes: list[ProbeFace]
    notice: str = NOTICE
    scene_bands: dict | None = None
    #: person-level searches only (``search.person.PersonResult``): the fused list over the stills
    person: "PersonResult | None" = None

    def to_dict(self) -> dict:
        """The documented JSON form (schema version ``SEARCH_SCHEMA_VERSION``)."""
        return {"schema": "facematch.search", "schema_version": SEARCH_SCHEMA_VERSION, **asdict(self)}


def analyse_probes(pipeline: FacePipeline, paths: list[Path], *, max_pixels: int,
                   boxes: list[FaceBox | None] | None = None, one_person: bool = False,
                   person: PersonSettings | None = None) -> list[tuple[ProbeFace, np.ndarray | None]]:
    """Decode and analyse probe images; one ``ProbeFace`` per face found (or per failed image).

    ``boxes`` (one per path, None: the whole image) mark the face to search. With ``one_person`` each
    still gives its largest face only (or the face in its box), and a video (``faces.video.is_video``) gives
    the ``person.keep_frames`` best-quality faces of its sampled frames, one per frame, each a row whose
    path ends ``#frame=N``. Returns pairs of the probe face and its ``(128,) float32`` embedding (None when
    not searchable).
    """
    out: list[tuple[ProbeFace, np.ndarray | None]] = []
    person = person or PersonSettings()
    for path, box in zip(paths, boxes or [None] * len(paths)):
        try:  # unreadable or too large: reported; a box outside the image (InvalidBox) is the caller's error
            frames = (sample_frames(path, frame_step=person.frame_step, max_frames=person.max_frames,
                                    max_pixels=max_pixels) if is_video(path) else None)
            image = None if frames else load_image(path, max_pixels=max_pixels)
        except FacematchError as exc:
            outcome = "too_large" if isinstance(exc, ImageTooLarge) else "unreadable"
            out.append((ProbeFace(len(out) + 1, str(path), outcome, str(exc)), None))
            continue
        if frames:
            found = _video_faces(pipeline, path, frames, box, person)
        else:
            faces = pipeline.analyse(image.pixels, purpose="probe", box=box)
            found = [(str(path), image.sha256, face) for face in (faces[:1] if one_person else faces)]
            found = found or [(str(path), image.sha256, None)]
        for face_no, (label, sha256, face) in enumerate(found):
            if face is None:
                out.append((ProbeFace(len(out) + 1, label, "no_face", "no face detected: mark the face with "
                                      "--box x,y,w,h to search it", sha256=sha256), None))
                continue
            out.append((ProbeFace(
                len(out) + 1, label, "searched", face_no=0 if is_video(path) else face_no, box=face.box.as_xywh(),
                detector=face.detector, quality_score=face.quality_score, quality=face.quality,
                warning=probe_warning(FaceQuality.from_dict(face.quality)), sha256=sha256), face.embedding))
    return out


def _video_faces(pipeline: FacePipeline, path: Path, frames: list, box: FaceBox | None,
                 person: PersonSettings) -> list[tuple[str, str, object]]:
    """(label, clip sha256, face) of the best-quality faces of a clip's sampled ``frames``, in frame order;
    one (label, sha256, None) row when no frame holds a face."""
    found = []
    for frame in frames:
        faces = pipeline.analyse(frame.pixels, purpose="probe", box=box)
        if faces:
            found.append((f"{path}#frame={frame.index}", frame.sha256, faces[0]))
    log.info("%s: %d frames sampled, %d with a face", path, len(frames), len(found))
    if not found:
        return [(str(path), frames[0].sha256, None)]
    best = sorted(found, key=lambda f: -(f[2].quality_score or 0.0))[:person.keep_frames]
    return [f for f in found if any(f is b for b in best)]


def rank_subjects(catalogue: Catalogue, index: FaceIndex, embedding: np.ndarray, top: int,
                  bands: GalleryBands, *, nonfrontal_offset: float = 0.0) -> list[Candidate]:
    """Top-``top`` custody subjects for one probe embedding, fused by the closest of their images.

    Distances are adjusted for the view of each gallery face (``facematch.search.matching``): a profile view
    only the CNN found counts ``nonfrontal_offset`` further away.
    """
    if index.ntotal == 0:
        return []
    k = min(index.ntotal, top * 8 + 32)
    while True:
        distances, ids = index.search(embedding.reshape(1, -1).astype(np.float32), k)
        pairs = [(float(d), int(i)) for d, i in zip(distances[0], ids[0]) if i >= 0]
        details = catalogue.face_details([i for _, i in pairs])
        best: dict[int, tuple[float, int]] = {}  # by subject id: two agencies' "P-123" are two people
        for distance, face_id in pairs:
            face = details.get(face_id, {})
            subject = face.get("subject_id")
            if subject is None:
                continue
            adjusted = adjusted_distance(distance, "custody", face.get("detector"), nonfrontal_offset)
            if subject not in best or adjusted < best[subject][0]:
                best[subject] = (adjusted, face_id)
        # exact once the top-th subject is no further than the furthest face retrieved: an unseen face
        # is at least that far, and offsets only add to it
        enough = len(best) >= top and sorted(d for d, _ in best.values())[top - 1] <= pairs[-1][0]
        if enough or k >= index.ntotal:
            break
        k = min(index.ntotal, k * 4)
    ranked = sorted(best.values(), key=lambda v: (v[0], details[v[1]]["subject_ref"], v[1]))[:top]
    return [
        _candidate(rank, distance, face_id, details[face_id], bands, subject=details[face_id]["subject_ref"])
        for rank, (distance, face_id) in enumerate(ranked, start=1)
    ]


def rank_scene_faces(catalogue: Catalogue, index: FaceIndex, embedding: np.ndarray, top: int,
                     bands: GalleryBands, *, exclude_sha256: str | None) -> list[Candidate]:
    """Closest unidentified crime-scene faces, within the bands, excluding the probe image itself."""
    if index.ntotal == 0 or bands.limit is None:
        return []
    k = min(index.ntotal, top + 16)
    distances, ids = index.search(embedding.reshape(1, -1).astype(np.float32), k)
    pairs = [(float(d), int(i)) for d, i in zip(distances[0], ids[0])
             if i >= 0 and d <= bands.limit]
    details = catalogue.face_details([i for _, i in pairs])
    shas = _image_hashes(catalogue, [details[i]["image_id"] for _, i in pairs if i in details])
    kept = [(d, i) for d, i in pairs if i in details and shas.get(details[i]["image_id"]) != exclude_sha256]
    return [_candidate(rank, d, i, details[i], bands, case_ref=details[i]["case_ref"])
            for rank, (d, i) in enumerate(kept[:top], start=1)]


def _candidate(rank, distance, face_id, detail, bands: GalleryBands, *, subject=None,
               case_ref=None) -> Candidate:
    return Candidate(rank=rank, distance=round(distance, 4), score=similarity_score(distance),
                     band=bands.band(distance), estimated_fmr=bands.estimated_fmr(distance),
                     face_id=face_id, image_path=detail["original_path"], subject=subject,
                     case_ref=case_ref)


def _image_hashes(catalogue: Catalogue, image_ids: list[int]) -> dict[int, str]:
    if not image_ids:
        return {}
    marks = ",".join("?" * len(image_ids))
    rows = catalogue.conn.execute(f"SELECT id, sha256 FROM images WHERE id IN ({marks})", image_ids)
    return {r[0]: r[1] for r in rows}
