"""FacePipeline on real faces: the investigator-marked box path, descriptors from aligned chips, flip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import require_data

from facematch.errors import InvalidBox
from facematch.faces.detection import detect_faces
from facematch.faces.embedding import _rect, aligned_chips, chip_descriptors, landmarks_and_embeddings
from facematch.faces.imaging import load_image
from facematch.faces.pipeline import FacePipeline
from facematch.settings import EmbeddingSettings, Settings
from facematch.types import FaceBox

#: A real CCTV crop (drawn around the head by FRMDB's authors) where plain HOG finds no face.
CROP = "048/Img_01.jpg"


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline(Settings())


def _crop(name: str = CROP) -> np.ndarray:
    return load_image(require_data("frmdb-dev", "cctv_crops", name), max_pixels=10**8).pixels


def _inside(inner: FaceBox, outer: FaceBox) -> bool:
    return outer.left <= inner.left < inner.right <= outer.right and outer.top <= inner.top < inner.bottom <= outer.bottom


def test_marked_box_on_a_cctv_frame_finds_the_face_inside(pipeline):
    """The crop pasted into a larger dark frame; the investigator marks the head."""
    crop = _crop()
    h, w = crop.shape[:2]
    frame = np.full((h + 200, w + 300, 3), 30, np.uint8)
    frame[120:120 + h, 170:170 + w] = crop
    marked = FaceBox(170, 120, 170 + w, 120 + h)
    faces = pipeline.analyse(frame, purpose="probe", box=marked)
    assert len(faces) == 1
    face = faces[0]
    assert face.detector.startswith(("marked+mtcnn", "marked+cnn"))
    assert _inside(face.box, marked) and face.box.width >= 0.3 * w
    assert face.embedding.shape == (128,) and np.isfinite(face.embedding).all()
    # the same face the cascade finds on the crop alone, moved by the paste offset
    alone = detect_faces(pipeline._models, crop, pipeline.settings.detection, purpose="probe")[0].box
    moved = FaceBox(alone.left + 170, alone.top + 120, alone.right + 170, alone.bottom + 120)
    tolerance = 0.15 * alone.width
    assert all(abs(a - b) <= tolerance for a, b in zip(
        (face.box.left, face.box.top, face.box.right, face.box.bottom),
        (moved.left, moved.top, moved.right, moved.bottom))), (face.box, moved)


def test_marked_box_on_a_coarse_face_is_enlarged_for_the_detectors(pipeline):
    crop = _crop()
    small = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)  # face ~30 px wide
    faces = pipeline.analyse(small, purpose="probe", box=FaceBox(0, 0, 64, 64))
    assert len(faces) == 1
    assert faces[0].detector.startswith("marked+")
    assert 12 <= faces[0].box.width <= 64
    landmarks = faces[0].landmarks
    assert ((landmarks >= -2) & (landmarks <= 66)).all()


def test_marked_box_without_a_face_keeps_the_box(pipeline):
    crop = _crop()
    wall = np.ascontiguousarray(np.tile(crop[:40, :40].mean(axis=(0, 1)).astype(np.uint8), (200, 200, 1)))
    faces = pipeline.analyse(wall, purpose="probe", box=FaceBox(50, 50, 150, 150))
    assert len(faces) == 1 and faces[0].detector == "marked"
    assert _inside(faces[0].box, FaceBox(50, 50, 150, 150))


@pytest.mark.parametrize("box", [FaceBox(0, 0, 5, 5), FaceBox(900, 900, 1000, 1000)])
def test_bad_marked_boxes_are_refused(pipeline, box):
    with pytest.raises(InvalidBox):
        pipeline.analyse(_crop(), purpose="probe", box=box)


def test_chip_descriptor_is_dlibs_own(pipeline, astronaut):
    models = pipeline._models
    box = detect_faces(models, astronaut, pipeline.settings.detection, purpose="custody")[0].box
    _, ours = landmarks_and_embeddings(models, astronaut, [box], EmbeddingSettings())
    shape = models.landmarks_68(astronaut, _rect(box))
    theirs = np.asarray(models.dlib_encoder.compute_face_descriptor(astronaut, shape, 1, 0.25), dtype=np.float32)
    np.testing.assert_allclose(ours[0], theirs, atol=1e-6)


def test_probe_jitter_and_flip_apply_to_probes_only(astronaut):
    emb = EmbeddingSettings()  # the defaults: probes get jitters and the mirrored chip, enrolment neither
    assert emb.probe_flip and emb.probe_jitters > 1 and emb.num_jitters == 1
    pipeline = FacePipeline(Settings(embedding=emb))
    models = pipeline._models
    detection = detect_faces(models, astronaut, pipeline.settings.detection, purpose="custody")[:1]
    custody = pipeline._describe(astronaut, detection, "custody")[0].embedding
    probe = pipeline._describe(astronaut, detection, "probe")[0].embedding
    _, chips = aligned_chips(models, astronaut, [detection[0].box], landmark_points=pipeline.settings.detection.landmarks)
    np.testing.assert_allclose(custody, chip_descriptors(models, chips)[0], atol=1e-6)
    np.testing.assert_allclose(probe, chip_descriptors(models, chips, num_jitters=emb.probe_jitters, flip=True)[0],
                               atol=1e-6)
    assert np.linalg.norm(probe - custody) > 1e-3  # the augmentation did change the probe's descriptor


def test_flip_averages_the_mirrored_chip(pipeline, astronaut):
    models = pipeline._models
    box = detect_faces(models, astronaut, pipeline.settings.detection, purpose="custody")[0].box
    _, chips = aligned_chips(models, astronaut, [box])
    plain = chip_descriptors(models, chips)
    mirrored = chip_descriptors(models, [c[:, ::-1] for c in chips])
    flipped = chip_descriptors(models, chips, flip=True)
    np.testing.assert_allclose(flipped, (plain + mirrored) / 2, atol=1e-6)
    assert 0.0 < np.linalg.norm(plain - mirrored) < 0.4  # the same face, seen in a mirror


def test_load_models_loads_what_the_settings_use_before_any_image():
    from facematch.faces.pipeline import FacePipeline
    from facematch.settings import Settings

    pipeline = FacePipeline(Settings())
    pipeline.load_models()
    loaded = {k for k in vars(pipeline._models) if not k.startswith("_")}
    assert {"hog_detector", "cnn_detector", "encoder", "landmarks_5", "mtcnn"} <= loaded
    assert "landmarks_68" not in loaded
