"""The NumPy descriptor network gives dlib's own descriptors, on real faces, in every call form."""

import dlib
import numpy as np
import pytest
from conftest import data_root

from facematch.errors import InvalidArgument
from facematch.faces.descriptor_net import DescriptorNet
from facematch.faces.imaging import load_image
from facematch.faces.models import DlibModels


@pytest.fixture(scope="module")
def models():
    return DlibModels()


@pytest.fixture(scope="module")
def net():
    return DescriptorNet().load()


def _faces(models, pixels):
    shapes = dlib.full_object_detections()
    for rect in models.hog_detector(pixels, 1):
        shapes.append(models.landmarks_68(pixels, rect))
    return shapes


def _real_images(astronaut):
    images = [astronaut]
    root = data_root()
    for rel in ("frmdb-dev/mugshots/040/Img_33.jpg", "frmdb-dev/mugshots/052/Img_23.jpg",
                "lfw/Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "small/face_recognition_examples"):
        path = root / rel
        if path.is_file():
            images.append(load_image(path).pixels)
        elif path.is_dir():  # a colour press photo with several faces, if present
            images += [load_image(p).pixels for p in sorted(path.rglob("*.jpg"))[:1]]
    return images


def test_descriptors_equal_dlibs_on_real_faces(models, net, astronaut):
    compared = 0
    for pixels in _real_images(astronaut):
        faces = _faces(models, pixels)
        if len(faces) == 0:
            continue
        vectors = models.dlib_encoder.compute_face_descriptor(pixels, faces, 1, 0.25)
        expected = np.array([np.asarray(v) for v in vectors])
        got = net.compute_face_descriptor(pixels, faces, 1, 0.25)
        assert got.shape == (len(faces), 128) and got.dtype == np.float32
        assert np.abs(got - expected).max() < 1e-5
        compared += len(faces)
    assert compared >= 1


def test_every_dlib_call_form_gives_the_same_vectors(models, net, astronaut):
    faces = _faces(models, astronaut)
    chip = np.ascontiguousarray(dlib.get_face_chip(astronaut, faces[0], size=150, padding=0.25))
    reference = np.asarray(models.dlib_encoder.compute_face_descriptor(chip))
    mirrored = np.ascontiguousarray(chip[:, ::-1])
    one_chip = net.compute_face_descriptor(chip)
    chips = net.compute_face_descriptor([chip, mirrored], num_jitters=1)
    one_face = net.compute_face_descriptor(astronaut, faces[0])
    per_image = net.compute_face_descriptor([astronaut], [faces])
    assert one_chip.shape == (128,) and np.abs(one_chip - reference).max() < 1e-5
    assert len(chips) == 2 and np.abs(chips[0] - reference).max() < 1e-5
    assert np.abs(chips[1] - np.asarray(models.dlib_encoder.compute_face_descriptor(mirrored))).max() < 1e-5
    assert np.abs(one_face - reference).max() < 1e-5
    assert per_image[0].shape == (len(faces), 128) and np.abs(per_image[0][0] - reference).max() < 1e-5
    assert net.compute_face_descriptor([]) == []


def test_batches_give_the_same_vectors_as_single_chips(net, astronaut, models):
    faces = _faces(models, astronaut)
    chip = dlib.get_face_chip(astronaut, faces[0], size=150, padding=0.25)
    shifted = np.roll(chip, 7, axis=1)
    batch = net.descriptors(np.stack([chip, shifted, chip]))
    assert np.abs(batch[0] - net.descriptors(chip[np.newaxis])[0]).max() < 1e-6
    assert np.abs(batch[0] - batch[2]).max() < 1e-6
    assert np.linalg.norm(batch[0] - batch[1]) > 1e-3  # a different input gives a different vector


def test_bad_chips_and_other_model_files_are_refused(net):
    with pytest.raises(InvalidArgument, match="150, 150, 3"):
        net.descriptors(np.zeros((1, 112, 112, 3), np.uint8))
    import face_recognition_models

    landmark_model = face_recognition_models.pose_predictor_five_point_model_location()
    with pytest.raises(InvalidArgument, match="not dlib's face descriptor ResNet"):
        DescriptorNet(landmark_model).load()


def test_jittered_descriptor_stays_near_the_plain_one_and_far_from_another_person(net, models, astronaut):
    """Jitter averages shifted, rotated, rescaled and mirrored copies of the chip, the same each time."""
    faces = _faces(models, astronaut)
    chip = np.ascontiguousarray(dlib.get_face_chip(astronaut, faces[0], size=150, padding=0.25))
    plain = net.compute_face_descriptor(chip)
    jittered = net.compute_face_descriptor(chip, num_jitters=6)
    again = net.compute_face_descriptor(chip, num_jitters=6)
    assert jittered.shape == (128,)
    assert 1e-4 < np.linalg.norm(jittered - plain) < 0.25  # not the plain vector, but the same face
    np.testing.assert_array_equal(jittered, again)  # a repeated search gives the same distances
    lfw = data_root() / "lfw" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    if lfw.is_file():
        other = load_image(lfw).pixels
        other_faces = _faces(models, other)
        other_vec = net.compute_face_descriptor(other, other_faces, 6, 0.25)[0]
        assert np.linalg.norm(other_vec - jittered) > 0.6  # another person stays far away
    with pytest.raises(InvalidArgument):
        net.compute_face_descriptor(chip, num_jitters=0)
