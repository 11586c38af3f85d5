"""One search, from probe images to a stored, audited candidate list (as ``ingest.bulk.ingest`` is for ingest).

The API checks the request and loads the indexes; this module analyses the probes, ranks custody subjects
and unidentified crime-scene faces for every probe face, and stores the result with its parameters.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from facematch.faces.pipeline import FacePipeline
from facematch.faces.video import is_video
from facematch.search.bands import BandScheme
from facematch.search.parallel import analyse_probes_parallel
from facematch.search.person import rank_person
from facematch.search.ranking import SearchResult, rank_scene_faces, rank_subjects
from facematch.search.review import store_search
from facematch.search.scope import FilteredIndex
from facematch.settings import Settings
from facematch.store.catalogue import Catalogue, utc_now
from facematch.store.index import FaceIndex
from facematch.types import FaceBox

__all__ = ["search"]


def search(catalogue: Catalogue, indexes: dict[str, FaceIndex], pipeline: FacePipeline, images: list[Path], *,
           settings: Settings, bands: BandScheme, top: int, user: str, case: str | None = None,
           reason: str | None = None, boxes: list[FaceBox | None] | None = None, one_person: bool = False,
           allowed: dict[str, np.ndarray] | None = None, gallery: tuple[int, int] | None = None) -> SearchResult:
    """Search every face of each probe image against ``indexes["custody"]`` and ``indexes["scene"]``.

    ``boxes`` holds one marked box (or None) per image. With ``one_person`` (implied by a video probe)
    the images are stills of one unknown person: each gives its largest face (or the face in its box),
    and the result also carries one fused custody list (``search.person.rank_person``).
    Probe images that cannot be read or hold no face are reported on their probe row, never fatal, except
    that a person-level search with no searchable still raises ``NoFaceFound``. ``allowed`` limits each
    kind to the face ids the searcher may see (filtered before ranking, facematch/search/scope.py) and
    ``gallery`` is then the (subjects, faces) of that visible gallery. Several images are analysed on
    ``settings.search_workers`` processes (facematch/search/parallel.py; the same results as serially).
    The result is stored (search, candidates, audit entry) and returned with its ``search_id``.
    """
    if allowed is not None:
        indexes = {kind: FilteredIndex(index, allowed[kind]) for kind, index in indexes.items()}
    one_person = one_person or any(is_video(p) for p in images)
    probes = analyse_probes_parallel(pipeline, images, workers=settings.search_workers, max_pixels=settings.max_pixels,
                                     boxes=boxes, one_person=one_person, person=settings.person)
    subjects, faces = gallery or catalogue.gallery_size()
    # the bands mean the same at every gallery size: resolved for the (visible) custody gallery, and for
    # the unidentified scene faces as a gallery of their own (each face a subject)
    custody_bands = bands.for_gallery(subjects, faces)
    scene_bands = bands.for_gallery(indexes["scene"].ntotal, indexes["scene"].ntotal)
    for probe, embedding in probes:
        if embedding is None:
            continue
        probe.subjects = rank_subjects(catalogue, indexes["custody"], embedding, top, custody_bands,
                                       nonfrontal_offset=settings.nonfrontal_offset)
        probe.scene_faces = rank_scene_faces(catalogue, indexes["scene"], embedding, top, scene_bands,
                                             exclude_sha256=probe.sha256)
    person = None
    if one_person:
        person = rank_person(catalogue, indexes["custody"], probes, top, custody_bands, person=settings.person,
                             nonfrontal_offset=settings.nonfrontal_offset)
    result = SearchResult(
        search_id=0, created_at=utc_now(), user=user, case_ref=case, reason=reason, top=top,
        bands=custody_bands.describe(), gallery_subjects=subjects, gallery_faces=faces,
        expected_false_candidates=custody_bands.expected_false_candidates, probes=[p for p, _ in probes],
        scene_bands=scene_bands.describe(), person=person)
    params = {"top": top, "expected_false_candidates": result.expected_false_candidates,
              "scene_bands": result.scene_bands,
              "pipeline": settings.describe_pipeline()}
    params["box"] = _recorded_boxes(boxes)
    if person is not None:
        params["person"] = {"one_person": True, **dataclasses.asdict(settings.person)}
    store_search(catalogue, result, params)
    return result


def _recorded_boxes(boxes: list[FaceBox | None] | None):
    """One box for the whole search as before (a list of x,y,w,h), or one per image when they differ."""
    if not boxes or all(b is None for b in boxes):
        return None
    xywh = [list(b.as_xywh()) if b else None for b in boxes]
    return xywh[0] if all(x == xywh[0] for x in xywh) else xywh
