"""Field CCTV frames (352x288, FRMDB 025-039): bowed, turned heads that only MTCNN on a turned copy finds."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import require_data

from facematch.faces.detection import MTCNN_ROTATED_STAGE, detect_faces
from facematch.faces.imaging import load_image
from facematch.faces.models import DlibModels
from facematch.faces.pipeline import FacePipeline
from facematch.settings import DetectionSettings, Settings

#: A 352x288 frame of subject 030 looking down at a desk; no other stage (HOG, dlib's CNN upright or
#: turned, MTCNN upright) finds his face.
FRAME = ("frmdb-lowres", "cctv_frames", "030", "Img_02.jpg")
#: Where the dataset's own crop of this frame (cctv_crops/030/Img_02.png) lies in it: the head
#: (left, top, right, bottom), found by template matching the crop at its native scale (score 0.63).
HEAD = (175, 13, 303, 141)


@pytest.fixture(scope="module")
def frame():
    return load_image(require_data(*FRAME)).pixels


def test_turned_mtcnn_finds_the_bowed_face(frame):
    models = DlibModels()
    before = dataclasses.replace(DetectionSettings(), mtcnn_rotation_angles=())
    assert detect_faces(models, frame, before, purpose="probe") == []
    found = detect_faces(models, frame, DetectionSettings(), purpose="probe")
    assert found, "no face found in the frame"
    face = found[0]
    assert face.detector.startswith(MTCNN_ROTATED_STAGE)
    cx, cy = (face.box.left + face.box.right) / 2, (face.box.top + face.box.bottom) / 2
    assert HEAD[0] <= cx <= HEAD[2] and HEAD[1] <= cy <= HEAD[3], f"face {face.box} is not on the head {HEAD}"
    assert 40 <= face.box.width <= 130  # a face, not the whole head and shoulders or a speck
    assert face.upright is not None  # landmarks are placed on the face turned as MTCNN's landmarks say


def test_turned_mtcnn_face_is_described(frame):
    faces = FacePipeline(Settings()).analyse(frame, purpose="probe")
    assert faces and faces[0].embedding.shape == (128,)
    assert all(HEAD[0] - 10 <= x <= HEAD[2] + 10 and HEAD[1] - 10 <= y <= HEAD[3] + 10
               for x, y in faces[0].landmarks), "landmarks off the head"


@pytest.mark.parametrize("name", ["noise", "chelsea", "coffee", "rocket", "brick"])
def test_turned_mtcnn_adds_no_face_where_there_is_none(name):
    """Noise, a cat's face, a cup, a launch pad, a wall (scikit-image's samples) as 352x288 frames."""
    import cv2
    import numpy as np

    from facematch.faces.detection import (
        mtcnn_rotated_stage_name,
        mtcnn_stretched_stage_name,
        run_probe_stage,
    )

    if name == "noise":
        frame = np.random.default_rng(3).integers(0, 256, (288, 352, 3), dtype=np.uint8)
    else:
        pixels = getattr(pytest.importorskip("skimage.data"), name)()
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        frame = cv2.resize(np.ascontiguousarray(pixels[..., :3]), (352, 288), interpolation=cv2.INTER_AREA)
    models, settings = DlibModels(), DetectionSettings()
    for angle in settings.mtcnn_rotation_angles:
        assert run_probe_stage(mtcnn_rotated_stage_name(angle), models, frame, settings) == []
    for stretch in settings.mtcnn_stretch_factors:
        assert run_probe_stage(mtcnn_stretched_stage_name(stretch), models, frame, settings) == []


#: A frame of subject 026 walking under the camera, head bowed: his face, foreshortened top to bottom,
#: is found by no stage but MTCNN on a vertically stretched copy. The head in it (the dataset's crop
#: cctv_crops/026/Img_05.png located by template matching):
BOWED = ("frmdb-lowres", "cctv_frames", "026", "Img_05.jpg")
BOWED_HEAD = (148, 0, 238, 87)


def test_stretched_mtcnn_finds_the_foreshortened_face():
    from facematch.faces.detection import MTCNN_STRETCHED_STAGE

    frame = load_image(require_data(*BOWED)).pixels
    models = DlibModels()
    before = dataclasses.replace(DetectionSettings(), mtcnn_stretch_factors=())
    assert detect_faces(models, frame, before, purpose="probe") == []
    found = detect_faces(models, frame, DetectionSettings(), purpose="probe")
    assert found and found[0].detector.startswith(MTCNN_STRETCHED_STAGE), found
    box = found[0].box
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    assert BOWED_HEAD[0] <= cx <= BOWED_HEAD[2] and BOWED_HEAD[1] <= cy <= BOWED_HEAD[3], box
    assert 30 <= box.width <= 90 and box.height < box.width  # the face, foreshortened, not the head
    faces = FacePipeline(Settings()).analyse(frame, purpose="probe")
    assert faces and faces[0].embedding.shape == (128,)
    assert all(BOWED_HEAD[0] - 10 <= x <= BOWED_HEAD[2] + 10 and BOWED_HEAD[1] - 10 <= y <= BOWED_HEAD[3] + 10
               for x, y in faces[0].landmarks), "landmarks off the head"
