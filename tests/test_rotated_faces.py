"""Tilted faces (a head seen from a camera high on a wall): found on rotated copies, landmarked upright,
mapped back to original pixels exactly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import require_data

from facematch.faces.detection import detect_faces, probe_stage_names, rotated_stage_name, run_probe_stage, upright_hull
from facematch.faces.embedding import landmarks_and_embeddings
from facematch.faces.imaging import load_image
from facematch.faces.models import DlibModels
from facematch.faces.pipeline import FacePipeline
from facematch.settings import DetectionSettings, EmbeddingSettings, Settings
from facematch.types import FaceBox, UprightView

#: A real CCTV crop (a bowed, tilted head) that no upright stage finds and the rotated stages do.
TILTED_CCTV = "063/Img_01.jpg"
TILT = 40.0


@pytest.fixture(scope="module")
def models() -> DlibModels:
    return DlibModels()


def _tilted(pixels: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """``pixels`` turned by ``angle`` degrees about the centre (same canvas), and the 2x3 matrix used."""
    h, w = pixels.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return np.ascontiguousarray(cv2.warpAffine(pixels, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)), turn


def _moved(points: np.ndarray, turn: np.ndarray) -> np.ndarray:
    return points @ turn[:, :2].T + turn[:, 2]


def test_a_tilted_face_is_found_upright_where_it_lies(models, astronaut):
    """The astronaut turned 40 degrees clockwise: the +40 stage finds her, centred where her face went."""
    # the face (~85 px) lies ~70 px from the centre the image is turned about: a wrong sign or centre
    # in the mapping would move it by ~90 px
    astronaut = np.ascontiguousarray(astronaut[0:320, 0:320])
    tilted, turn = _tilted(astronaut, -TILT)
    # a copy 1.2x as large: the box is also mapped back from an enlarged copy
    settings = DetectionSettings(rotation_angles=(TILT,), rotated_max_pixels=384 * 384, cnn_max_pixels=320 * 320)
    found = run_probe_stage(rotated_stage_name(TILT), models, tilted, settings)
    assert len(found) == 1
    view = found[0].upright
    assert found[0].detector == "cnn-rotated+40" and view.angle == TILT
    upright = run_probe_stage("cnn", models, astronaut, settings)[0].box
    centre = _moved(np.array([[(upright.left + upright.right - 1) / 2, (upright.top + upright.bottom - 1) / 2]]), turn)[0]
    # the detector's boxes shift with its pyramid level by ~10% of their size
    assert abs(view.cx - centre[0]) <= 0.15 * upright.width and abs(view.cy - centre[1]) <= 0.15 * upright.height
    assert 0.7 <= view.width / upright.width <= 1.4  # the detector's size steps; the same face
    assert found[0].box == upright_hull(view)


def test_upright_landmarks_and_descriptor_match_the_untilted_face(models, astronaut):
    """Landmarks placed on the upright copy map back onto the tilted face; the descriptor barely moves."""
    emb = EmbeddingSettings()
    box = max(run_probe_stage("hog", models, astronaut, DetectionSettings()), key=lambda d: d.confidence).box
    points, vectors = landmarks_and_embeddings(models, astronaut, [box], emb, landmark_points="5")
    tilted, turn = _tilted(astronaut, -TILT)
    centre = _moved(np.array([[(box.left + box.right - 1) / 2, (box.top + box.bottom - 1) / 2]]), turn)[0]
    view = UprightView(TILT, float(centre[0]), float(centre[1]), float(box.width), float(box.height))
    tilted_points, tilted_vectors = landmarks_and_embeddings(
        models, tilted, [upright_hull(view)], emb, landmark_points="5", uprights=[view])
    expected = _moved(points[0].astype(np.float64), turn)
    assert np.abs(tilted_points[0] - expected).max() <= 3.0, (tilted_points[0], expected)
    # two resamplings of the pixels (~0.1 here), far below the 0.3-0.4 between two photos of one person
    assert np.linalg.norm(tilted_vectors[0] - vectors[0]) < 0.15
    hull = upright_hull(view)
    assert np.all((tilted_points[0] >= (hull.left, hull.top)) & (tilted_points[0] <= (hull.right, hull.bottom)))


def test_upright_hull_of_a_square_at_45_degrees():
    hull = upright_hull(UprightView(45.0, 99.5, 49.5, 40.0, 40.0))
    assert hull == FaceBox(72, 22, 128, 78)  # half-width 20 * sqrt(2) = 28.3 about the centre 100, 50 (edges)


def test_cascade_finds_a_tilted_cctv_face(models):
    """A bowed head in a real CCTV still: no upright stage finds it; a rotated one does, inside the crop."""
    pixels = load_image(require_data("frmdb-dev", "cctv_crops", TILTED_CCTV)).pixels
    settings = DetectionSettings(mtcnn=False)  # MTCNN, which runs before the turned passes, finds it too
    for stage in ("hog", "cnn"):
        assert run_probe_stage(stage, models, pixels, settings) == [], stage
    faces = FacePipeline(Settings(detection=settings), models=models).analyse(pixels, purpose="probe")
    assert faces and faces[0].detector.startswith("cnn-rotated")
    face = faces[0]
    h, w = pixels.shape[:2]
    assert 0.15 * w <= face.box.width <= w and 0 <= face.box.left < face.box.right <= w
    # the 5 landmarks sit on the face: inside its box, eyes above the nose in the upright view
    assert np.all((face.landmarks >= (face.box.left, face.box.top)) & (face.landmarks <= (face.box.right, face.box.bottom)))


def test_rotated_stages_follow_the_first_cnn_pass_and_obey_the_budget(models, caplog):
    import logging

    settings = DetectionSettings(rotation_angles=(25.0, -25.0))
    assert probe_stage_names(settings)[:5] == ["hog", "mtcnn", "cnn", "cnn-rotated+25", "cnn-rotated-25"]
    assert "cnn-rotated+25" not in probe_stage_names(DetectionSettings(cnn_fallback=False))
    caplog.set_level(logging.DEBUG, logger="facematch.faces.detection")
    noise = np.random.default_rng(2).integers(0, 256, (288, 352, 3), dtype=np.uint8)
    assert detect_faces(models, noise, settings, purpose="probe", budget_s=0.6) == []
    skipped = {r.getMessage().split()[1] for r in caplog.records if "skipped" in r.getMessage()}
    assert {"cnn-rotated+25", "cnn-rotated-25"} <= skipped


def test_a_marked_box_around_a_tilted_face_gives_the_same_landmarks(models):
    """The --box path finds the tilted face inside the box (on a rescaled cut-out) and maps it back to the
    same place as the search without a box."""
    pixels = load_image(require_data("frmdb-dev", "cctv_crops", TILTED_CCTV)).pixels
    pipe = FacePipeline(Settings(detection=DetectionSettings(mtcnn=False)), models=models)
    plain = pipe.analyse(pixels, purpose="probe")[0]
    marked = pipe.analyse(pixels, purpose="probe", box=FaceBox(0, 0, pixels.shape[1], pixels.shape[0]))[0]
    assert marked.detector == "marked+" + plain.detector and plain.detector.startswith("cnn-rotated")
    assert np.abs(marked.landmarks - plain.landmarks).max() <= 3.0
