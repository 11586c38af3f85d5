"""Tests for facematch.faces.imaging: decoding awkward and hostile files into upright RGB faces."""

from __future__ import annotations

import hashlib
import io
import resource
import sys

import numpy as np
import pytest
from PIL import Image, ImageFile

from facematch.errors import ImageTooLarge, ImageUnreadable, InvalidArgument
from facematch.faces.imaging import (
    DEFAULT_MAX_PIXELS,
    LoadedImage,
    downscale_for_detection,
    load_image,
    load_image_bytes,
    sha256_file,
)
from tests.bad_inputs import (
    EXPECTED,
    HUGE_FACE_OFFSET,
    HUGE_FACE_SCALE,
    HUGE_SIZE,
    OK,
    RGBA_MARGIN,
    TOO_LARGE,
    UNREADABLE,
    png_bomb,
    write_bad_input_corpus,
)

skimage_data = pytest.importorskip("skimage.data")

OK_FILES = sorted(name for name, outcome in EXPECTED.items() if outcome == OK)
BAD_FILES = sorted((name, outcome) for name, outcome in EXPECTED.items() if outcome != OK)
JPEG_TOLERANCE = 4.0  # mean absolute difference (0..255 scale) allowed after a JPEG round trip


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """``(512, 512, 3) uint8`` RGB photograph of a real, upright face."""
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, face):
    folder = tmp_path_factory.mktemp("bad inputs")
    expected = write_bad_input_corpus(folder, face)
    return folder, expected


def _grey_of(face: np.ndarray) -> np.ndarray:
    """The ``(H, W) uint8`` greyscale the corpus wrote (Pillow's ITU-R 601 luma)."""
    return np.asarray(Image.fromarray(face).convert("L"))


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ------------------------------------------------------------------------- the corpus itself


def test_corpus_writes_exactly_the_expected_files(corpus):
    folder, expected = corpus
    assert expected == EXPECTED
    assert sorted(p.name for p in folder.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", OK_FILES)
def test_ok_files_decode_to_contiguous_rgb(corpus, name):
    folder, _ = corpus
    path = folder / name
    loaded = load_image(path)
    assert isinstance(loaded, LoadedImage)
    assert loaded.pixels.dtype == np.uint8
    assert loaded.pixels.ndim == 3 and loaded.pixels.shape[2] == 3
    assert loaded.pixels.flags.c_contiguous
    assert loaded.pixels.shape[:2] == (loaded.height, loaded.width)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(path)
    assert 20 < loaded.pixels.mean() < 235  # not blank, not clipped to black or white


@pytest.mark.parametrize(("name", "outcome"), BAD_FILES)
def test_bad_files_raise_the_named_error_naming_the_file(corpus, name, outcome):
    folder, _ = corpus
    path = folder / name
    error = {UNREADABLE: ImageUnreadable, TOO_LARGE: ImageTooLarge}[outcome]
    with pytest.raises(error) as caught:
        load_image(path)
    assert type(caught.value) is error
    message = str(caught.value)
    assert repr(str(path)) in message
    assert "\n" not in message


def test_load_image_bytes_matches_load_image(corpus):
    folder, _ = corpus
    for name in ("cmyk.jpg", "exif_rot6.jpg", "webp_named.jpg"):
        from_file = load_image(folder / name)
        from_bytes = load_image_bytes((folder / name).read_bytes(), name=name)
        np.testing.assert_array_equal(from_file.pixels, from_bytes.pixels)
        assert (from_file.sha256, from_file.format, from_file.notes) == (
            from_bytes.sha256, from_bytes.format, from_bytes.notes)


# ------------------------------------------------------------------------ conversions, exactly


def test_exif_rotated_jpegs_come_out_upright(corpus, face):
    folder, _ = corpus
    for name, note in (("exif_rot6.jpg", "exif-rotated-90"), ("exif_rot8.jpg", "exif-rotated-270")):
        loaded = load_image(folder / name)
        assert loaded.notes == (note,)
        assert (loaded.width, loaded.height) == (512, 512)
        assert _mean_abs_diff(loaded.pixels, face) < JPEG_TOLERANCE
        # The comparison can tell orientations apart: the stored (unrotated) pixels are far off.
        stored = np.asarray(Image.open(folder / name).convert("RGB"))
        assert _mean_abs_diff(stored, face) > 10 * JPEG_TOLERANCE


def test_exif_rotation_swaps_width_and_height(tmp_path, face):
    wide = np.ascontiguousarray(face[:200])  # 512 wide, 200 tall when upright
    stored = np.ascontiguousarray(np.rot90(wide))  # 200 wide, 512 tall on disk
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "w.jpg", quality=95, exif=exif.tobytes())
    loaded = load_image(tmp_path / "w.jpg")
    assert (loaded.width, loaded.height) == (512, 200)
    assert _mean_abs_diff(loaded.pixels, wide) < JPEG_TOLERANCE


def test_tiff_orientation_is_applied_once_and_noted(face):
    exif = Image.Exif()
    exif[0x0112] = 3  # rotate 180 degrees to display
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(face[::-1, ::-1])).save(buffer, format="TIFF", exif=exif.tobytes())
    loaded = load_image_bytes(buffer.getvalue(), name="scan.tif")
    assert (loaded.format, loaded.notes) == ("TIFF", ("exif-rotated-180",))
    np.testing.assert_array_equal(loaded.pixels, face)


def test_multi_frame_files_use_the_first_frame(face):
    buffer = io.BytesIO()
    first, second = Image.fromarray(face), Image.fromarray(255 - face)
    first.save(buffer, format="GIF", save_all=True, append_images=[second])
    loaded = load_image_bytes(buffer.getvalue(), name="clip.gif")
    assert loaded.format == "GIF"
    assert "multi-frame: used frame 1 of 2" in loaded.notes
    assert _mean_abs_diff(loaded.pixels, face) < 10 < _mean_abs_diff(loaded.pixels, 255 - face)


def test_16_bit_greyscale_is_scaled_not_clipped(corpus, face):
    folder, _ = corpus
    loaded = load_image(folder / "grey16.png")
    assert loaded.original_mode == "I;16"
    assert "16-bit-scaled" in loaded.notes
    grey = _grey_of(face)
    for channel in range(3):  # samples were grey * 257, so dividing by 257 restores them exactly
        np.testing.assert_array_equal(loaded.pixels[:, :, channel], grey)


def test_16_bit_full_range_maps_onto_full_8_bit_range():
    ramp = np.linspace(0, 65535, 256 * 4, dtype=np.float64).round().astype(np.uint16).reshape(4, 256)
    png = _png_bytes(Image.fromarray(ramp))
    pixels = load_image_bytes(png).pixels[:, :, 0]
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.all(np.diff(pixels.astype(int), axis=1) >= 0)  # monotonic, no wrap-around
    np.testing.assert_array_equal(pixels, np.rint(ramp / 257.0).astype(np.uint8))


def test_greyscale_cmyk_and_palette_keep_their_colours(corpus, face):
    folder, _ = corpus
    grey = load_image(folder / "grey.png")
    assert (grey.original_mode, grey.notes) == ("L", ("converted-from-L",))
    for channel in range(3):
        np.testing.assert_array_equal(grey.pixels[:, :, channel], _grey_of(face))
    cmyk = load_image(folder / "cmyk.jpg")
    assert (cmyk.original_mode, cmyk.notes) == ("CMYK", ("converted-from-CMYK",))
    assert _mean_abs_diff(cmyk.pixels, face) < JPEG_TOLERANCE  # not inverted, not channel-swapped
    palette = load_image(folder / "palette.png")
    assert palette.original_mode == "P"
    assert _mean_abs_diff(palette.pixels, face) < JPEG_TOLERANCE


def test_rgba_is_composited_on_white(corpus, face):
    folder, _ = corpus
    loaded = load_image(folder / "rgba.png")
    assert loaded.original_mode == "RGBA"
    assert "alpha-composited-on-white" in loaded.notes
    m = RGBA_MARGIN
    np.testing.assert_array_equal(loaded.pixels[m:-m, m:-m], face[m:-m, m:-m])
    assert (loaded.pixels[:m] == 255).all() and (loaded.pixels[-m:] == 255).all()
    assert (loaded.pixels[:, :m] == 255).all() and (loaded.pixels[:, -m:] == 255).all()


def test_real_format_and_extension_mismatch_are_reported(corpus):
    folder, _ = corpus
    webp = load_image(folder / "webp_named.jpg")
    assert webp.format == "WEBP"
    assert webp.notes == ("extension-mismatch: .jpg is WEBP",)
    jpeg = load_image(folder / "café photo ü.jpg")
    assert (jpeg.format, jpeg.original_mode, jpeg.notes) == ("JPEG", "RGB", ())
    assert load_image_bytes((folder / "webp_named.jpg").read_bytes()).notes == ()  # no name, no claim


def test_sha256_is_of_bytes_not_pixels(face):
    a = _png_bytes(Image.fromarray(face), compress_level=1)
    b = _png_bytes(Image.fromarray(face), compress_level=9)
    assert a != b
    loaded_a, loaded_b = load_image_bytes(a), load_image_bytes(b)
    np.testing.assert_array_equal(loaded_a.pixels, loaded_b.pixels)
    assert loaded_a.sha256 == hashlib.sha256(a).hexdigest() != loaded_b.sha256


# --------------------------------------------------------------------------- size limits


def test_max_pixels_is_checked_from_the_header_at_the_boundary(corpus):
    path = corpus[0] / "café photo ü.jpg"
    assert load_image(path, max_pixels=512 * 512).width == 512
    with pytest.raises(ImageTooLarge, match=r"512x512 = 262,144 pixels exceeds the limit of 262,143"):
        load_image(path, max_pixels=512 * 512 - 1)


def test_bomb_between_our_limit_and_pillows_is_refused_by_ours():
    bomb = png_bomb(8000)  # 64 MP: above DEFAULT_MAX_PIXELS, below Pillow's own warning threshold
    assert 8000 * 8000 > DEFAULT_MAX_PIXELS and len(bomb) < 100_000
    with pytest.raises(ImageTooLarge, match=r"'bomb\.png': 8000x8000 = 64,000,000 pixels"):
        load_image_bytes(bomb, name="bomb.png")


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_bomb_is_refused_without_allocating_its_pixels(corpus):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLarge):
        load_image(corpus[0] / "bomb_30000x30000.png", max_pixels=10**12)  # Pillow's limit still holds
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100 * 1024  # decoding would need ~900 MB


def test_png_bomb_generator_makes_real_decodable_images():
    loaded = load_image_bytes(png_bomb(2000))
    assert (loaded.width, loaded.height, loaded.original_mode) == (2000, 2000, "1")
    assert not loaded.pixels.any()


def test_invalid_limits_are_rejected(face):
    png = _png_bytes(Image.fromarray(face))
    for bad in (0, -5, 2.5, True):
        with pytest.raises(InvalidArgument):
            load_image_bytes(png, max_pixels=bad)


def test_pillow_globals_are_left_alone(corpus):
    max_before, truncated_before = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    for name in EXPECTED:
        try:
            load_image(corpus[0] / name, max_pixels=10_000)
        except (ImageUnreadable, ImageTooLarge):
            pass
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == (max_before, truncated_before)


# ------------------------------------------------------------------- unreadable paths, messages


def test_error_messages_for_paths_that_are_not_images(tmp_path):
    cases = {
        tmp_path / "missing.jpg": "file not found",
        tmp_path / "x.jpg": "is a directory, not a file",
        tmp_path / "empty.jpg": "file is empty (0 bytes)",
    }
    (tmp_path / "x.jpg").mkdir()
    (tmp_path / "empty.jpg").write_bytes(b"")
    for path, reason in cases.items():
        with pytest.raises(ImageUnreadable) as caught:
            load_image(path)
        assert str(caught.value) == f"cannot read image {str(path)!r}: {reason}"
    for path in list(cases)[:2]:
        with pytest.raises(ImageUnreadable, match="cannot read image"):
            sha256_file(path)


def test_truncated_png_and_corrupt_jpeg_body_are_unreadable(face):
    png = _png_bytes(Image.fromarray(face))
    with pytest.raises(ImageUnreadable, match=r"'cut\.png': corrupt or truncated PNG data"):
        load_image_bytes(png[: len(png) * 2 // 3], name="cut.png")
    jpeg = bytearray(_jpeg_bytes(face))
    jpeg[len(jpeg) // 3 : len(jpeg) // 3 + 2000] = bytes(2000)  # header intact, body wiped
    jpeg = bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageUnreadable, match=r"'body\.jpg'"):
        load_image_bytes(jpeg, name="body.jpg")


def test_load_image_bytes_rejects_non_bytes():
    with pytest.raises(InvalidArgument):
        load_image_bytes("not bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- downscaling


def test_downscale_returns_same_array_when_small_enough(face):
    small, scale = downscale_for_detection(face, 512)
    assert small is face and scale == 1.0


def test_downscale_shrinks_longer_side_and_scale_maps_back():
    pixels = np.zeros((4000, 6000, 3), dtype=np.uint8)
    pixels[1000:1400, 3000:3600] = 200  # a bright rectangle whose position must survive
    small, scale = downscale_for_detection(pixels, 1500)
    assert small.shape == (1000, 1500, 3) and small.dtype == np.uint8 and scale == 4.0
    rows, cols = np.nonzero(small[:, :, 0] > 100)
    assert (rows.min() * scale, (rows.max() + 1) * scale) == (1000, 1400)
    assert (cols.min() * scale, (cols.max() + 1) * scale) == (3000, 3600)
    tall, tall_scale = downscale_for_detection(np.zeros((1001, 7, 3), np.uint8), 100)
    assert tall.shape == (100, 1, 3) and tall_scale == pytest.approx(10.01)
    single, _ = downscale_for_detection(np.zeros((300, 200, 1), np.uint8), 150)
    assert single.shape == (150, 100, 1)


def test_downscale_uses_area_averaging():
    stripes = np.zeros((8, 8), dtype=np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes: area averaging gives flat grey, nearest gives 0 or 255
    small, _ = downscale_for_detection(stripes, 4)
    assert np.all(np.abs(small.astype(int) - 128) <= 1)


def test_downscale_rejects_bad_arguments(face):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgument):
            downscale_for_detection(face, bad)
    with pytest.raises(InvalidArgument):
        downscale_for_detection(np.zeros(5, np.uint8), 3)


# ------------------------------------------------------------- the face survives every conversion


@pytest.fixture(scope="module")
def face_recognition_module():
    return pytest.importorskip("face_recognition")


@pytest.fixture(scope="module")
def reference_box(face_recognition_module, face):
    """The astronaut's face as HOG finds it in the original array: (top, right, bottom, left)."""
    boxes = face_recognition_module.face_locations(face)
    assert boxes, "HOG must find the astronaut's face in the original image"
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))


def _iou(a, b) -> float:
    top, right = max(a[0], b[0]), min(a[1], b[1])
    bottom, left = min(a[2], b[2]), max(a[3], b[3])
    inter = max(0, bottom - top) * max(0, right - left)
    area = lambda box: (box[2] - box[0]) * (box[1] - box[3])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("name", ["exif_rot6.jpg", "grey16.png", "cmyk.jpg"])
def test_face_is_still_detected_where_it_was(corpus, face_recognition_module, reference_box, name):
    loaded = load_image(corpus[0] / name)
    boxes = face_recognition_module.face_locations(loaded.pixels)
    assert max((_iou(box, reference_box) for box in boxes), default=0.0) > 0.7, boxes


def test_face_in_huge_image_is_found_after_downscaling(corpus, face_recognition_module, reference_box):
    loaded = load_image(corpus[0] / "huge_6000x4000.jpg")
    assert (loaded.width, loaded.height) == HUGE_SIZE
    small, scale = downscale_for_detection(loaded.pixels, 1500)
    boxes = face_recognition_module.face_locations(small, number_of_times_to_upsample=0)
    mapped = [tuple(round(v * scale) for v in box) for box in boxes]
    x, y = HUGE_FACE_OFFSET
    t, r, b, l = (v * HUGE_FACE_SCALE for v in reference_box)
    expected = (t + y, r + x, b + y, l + x)
    assert max((_iou(box, expected) for box in mapped), default=0.0) > 0.6, (mapped, expected)


# ------------------------------------------------------------------------------------ helpers


def _png_bytes(image: Image.Image, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save_args)
    return buffer.getvalue()


def _jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_truncation_is_refused_even_when_another_library_set_pillows_global(tmp_path, monkeypatch):
    from PIL import ImageFile
    from skimage import data as skdata

    from tests.bad_inputs import write_bad_input_corpus

    write_bad_input_corpus(tmp_path, skdata.astronaut())
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as `import face_recognition` does
    with pytest.raises(ImageUnreadable, match="truncated JPEG"):
        load_image(tmp_path / "truncated.jpg")
    assert load_image(tmp_path / "grey.png").width == 512
