"""dlib's 128-d face descriptor network, run with NumPy: the same weights and outputs, ~8x less CPU.

The dlib wheels available here (dlib-bin) are built without a BLAS library, so dlib's own forward pass
of its ResNet costs ~130 ms of CPU per face; it is the dominant cost of ingestion. This module reads the
very same model file (``dlib_face_recognition_resnet_model_v1.dat`` from face_recognition_models) and
runs the network with NumPy, whose matrix multiply is OpenBLAS: ~15 ms per face, and descriptors equal
to dlib's to within ~1e-6 per component (float32 rounding; checked in tests/test_descriptor_net.py).

The network (dlib's ``dnn_face_recognition_ex.cpp``) takes a 150x150 RGB face chip, subtracts the
per-channel means (122.782, 117.001, 104.298) and divides by 256, then: conv 7x7/2 (32) + affine +
relu, max pool 3x3/2, residual blocks of two 3x3 convs with affine (batch-norm) layers, 3 x 32, 4 x 64,
3 x 128, 3 x 256 and one more 256 block (the first block of each width, and the last, downsample: a
stride-2 unpadded conv whose shortcut is a 2x2/2 average pool, added with zero padding where the
shapes differ, as dlib's ``add_prev`` does), a global average pool and a 256 -> 128 linear layer.
dlib pads stride-1 convs by half the kernel and never pads stride-2 ones or the pools.

Face chips come from ``dlib.get_face_chips`` (the same alignment dlib's ``compute_face_descriptor``
uses internally), so :meth:`DescriptorNet.compute_face_descriptor` is a drop-in for dlib's method.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from facematch.errors import InvalidArgument

__all__ = ["CHIP_SIZE", "DescriptorNet"]

log = logging.getLogger(__name__)

#: Side of the aligned face chip the network takes, in pixels.
CHIP_SIZE = 150
#: dlib ``input_rgb_image_sized<150>`` channel means (R, G, B), subtracted before dividing by 256.
_CHANNEL_MEANS = np.array([122.782, 117.001, 104.298], dtype=np.float32)
#: (output channels, downsampling) of each residual block, input to output.
_BLOCKS = ([(32, False)] * 3 + [(64, True)] + [(64, False)] * 3 + [(128, True)] + [(128, False)] * 2
           + [(256, True)] + [(256, False)] * 2 + [(256, True)])
_LAYER_NAMES = ("con_4", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_", "fc_2")
#: A layer name as dlib serialises a string: one length byte count (1), the length, the characters.
_LAYER_NAME = re.compile(b"|".join(re.escape(bytes([1, len(n)]) + n.encode()) for n in _LAYER_NAMES))


@dataclass(frozen=True)
class _Conv:
    """A convolution with its affine (batch-norm) layer folded in: ``y = im2col(x) @ weights + bias``."""

    weights: np.ndarray  # (k * k * c_in, c_out) float32, rows ordered (ky, kx, c_in) to match im2col
    bias: np.ndarray  # (c_out,) float32
    size: int
    stride: int
    padding: int


class DescriptorNet:
    """dlib's face descriptor ResNet with NumPy arithmetic; weights load on first use.

    Parameters: ``model_path``, the dlib model file (default: the one in face_recognition_models).
    """

    def __init__(self, model_path: str | Path | None = None):
        self.model_path = model_path
        self._lock = threading.Lock()
        self._layers: tuple[_Conv, list[tuple[_Conv, _Conv]], np.ndarray] | None = None

    def load(self) -> "DescriptorNet":
        """Read the weights now rather than on the first call; returns self."""
        self._weights()
        return self

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        """Descriptors of aligned face chips.

        Parameters: ``chips`` ``(n, 150, 150, 3) uint8`` RGB, as ``dlib.get_face_chips(.., 150, ..)``
        returns them. Returns ``(n, 128) float32``. Raises ``InvalidArgument`` for another shape.
        """
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise InvalidArgument(f"chips must be (n, {CHIP_SIZE}, {CHIP_SIZE}, 3), got {chips.shape}")
        if len(chips) == 0:
            return np.zeros((0, 128), dtype=np.float32)
        stem, blocks, fc = self._weights()
        with _one_blas_thread():
            x = (chips.astype(np.float32) - _CHANNEL_MEANS) / np.float32(256.0)
            x = _max_pool_3x3_2(np.maximum(_conv(x, stem), 0))
            for first, second in blocks:
                shortcut = _avg_pool_2x2_2(x) if first.stride == 2 else x
                y = _conv(np.maximum(_conv(x, first), 0), second)
                x = np.maximum(_add_padded(y, shortcut), 0)
            return (x.mean(axis=(1, 2)) @ fc).astype(np.float32)

    def compute_face_descriptor(self, img, faces=None, num_jitters: int = 1, padding: float = 0.25):
        """Drop-in for ``dlib.face_recognition_model_v1.compute_face_descriptor``, same overloads.

        ``(img, faces)``: ``img`` ``(H, W, 3) uint8`` RGB and ``faces`` a ``dlib.full_object_detections``
        (5 or 68 points) -> ``(n, 128) float32``; ``(img, face)`` one ``full_object_detection`` ->
        ``(128,)``; ``(chip)`` one ``(150, 150, 3)`` chip -> ``(128,)``; ``(chips)`` a list of chips ->
        a list of ``(128,)``; ``(images, faces_per_image)`` lists -> a list of ``(n_i, 128)``.
        ``padding`` is the chip margin, as dlib's. With ``num_jitters`` above 1 each chip is replaced by
        the mean descriptor of that many jittered copies (:meth:`chip_descriptors`; dlib's recipe, but
        reproducible, where dlib's own draws carry on from call to call).
        """
        import dlib

        if num_jitters < 1:
            raise InvalidArgument(f"num_jitters must be at least 1, got {num_jitters}")
        if faces is None:
            if isinstance(img, np.ndarray) and img.ndim == 3:
                return self.chip_descriptors(img[np.newaxis], num_jitters)[0]
            return list(self.chip_descriptors(np.stack(img), num_jitters)) if len(img) else []
        if isinstance(faces, dlib.full_object_detection):
            return self.compute_face_descriptor(img, dlib.full_object_detections([faces]), num_jitters,
                                                padding)[0]
        if isinstance(img, (list, tuple)):
            return [self.compute_face_descriptor(i, f, num_jitters, padding)
                    for i, f in zip(img, faces, strict=True)]
        if len(faces) == 0:
            return np.zeros((0, 128), dtype=np.float32)
        chips = dlib.get_face_chips(np.ascontiguousarray(img), faces, size=CHIP_SIZE, padding=padding)
        return self.chip_descriptors(np.stack(chips), num_jitters)

    def chip_descriptors(self, chips: np.ndarray, num_jitters: int = 1) -> np.ndarray:
        """:meth:`descriptors`, each the mean over ``num_jitters`` jittered copies when above 1.

        The copies are :func:`facematch.faces.augment.jittered_chips`: dlib's recipe with fixed draws, so the
        same chip always gets the same descriptor.
        """
        if num_jitters <= 1:
            return self.descriptors(chips)
        from facematch.faces.augment import jittered_chips

        out = np.empty((len(chips), 128), dtype=np.float32)
        for i, chip in enumerate(chips):
            out[i] = self.descriptors(jittered_chips(np.ascontiguousarray(chip), num_jitters)).mean(axis=0)
        return out

    def _weights(self):
        with self._lock:
            if self._layers is None:
                started = time.perf_counter()
                self._layers = _read_model(self._path())
                log.debug("loaded descriptor network weights in %.2f s", time.perf_counter() - started)
            return self._layers

    def _path(self) -> Path:
        if self.model_path is not None:
            return Path(self.model_path)
        import face_recognition_models

        return Path(face_recognition_models.face_recognition_model_location())


_blas_controller = None


def _one_blas_thread():
    """Limit OpenBLAS to one thread for a forward pass.

    The matrices are small (at most 1,225 x 288 by 288 x 32 per face): extra BLAS threads cost more
    in start-up and spinning than they gain, and ingestion already runs one worker per core. Measured
    on the shared 2-core machine: 15 ms CPU / 55 ms wall per face with one thread, 223 ms CPU / 768 ms
    wall with OpenBLAS's default two. (OpenBLAS's thread count is process-wide: a concurrent BLAS call
    in another thread of this process also runs single-threaded meanwhile.)
    """
    global _blas_controller
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # a dependency; without it results are the same, only slower
            log.warning("threadpoolctl is not installed: OpenBLAS keeps its default thread count")
            _blas_controller = False
        else:
            _blas_controller = ThreadpoolController()
    if not _blas_controller:
        return contextlib.nullcontext()
    return _blas_controller.limit(limits=1, user_api="blas")


# --- arithmetic (pure functions over NHWC float32 arrays) ------------------------------------------


def _conv(x: np.ndarray, conv: _Conv) -> np.ndarray:
    """``(n, H, W, c_in)`` -> ``(n, H', W', c_out)``: one im2col matrix multiply."""
    if conv.padding:
        p, (n, height, width, channels) = conv.padding, x.shape
        padded = np.zeros((n, height + 2 * p, width + 2 * p, channels), dtype=np.float32)
        padded[:, p:p + height, p:p + width] = x  # (np.pad does the same, ~5% slower overall)
        x = padded
    n, height, width, channels = x.shape
    k, s = conv.size, conv.stride
    out_h, out_w = (height - k) // s + 1, (width - k) // s + 1
    windows = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]  # (n, H', W', c, k, k)
    columns = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * out_h * out_w, k * k * channels)
    return (columns @ conv.weights + conv.bias).reshape(n, out_h, out_w, -1)


def _max_pool_3x3_2(x: np.ndarray) -> np.ndarray:
    return sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def _avg_pool_2x2_2(x: np.ndarray) -> np.ndarray:
    h, w = (x.shape[1] // 2) * 2, (x.shape[2] // 2) * 2  # dlib drops a trailing odd row/column
    x = x[:, :h, :w]
    return (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]) * np.float32(0.25)


def _add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib's ``add_prev``: the sum over the larger shape, each input zero-padded at the far end."""
    if a.shape == b.shape:
        return a + b
    out = np.zeros([max(i, j) for i, j in zip(a.shape, b.shape)], dtype=np.float32)
    out[:, :a.shape[1], :a.shape[2], :a.shape[3]] += a
    out[:, :b.shape[1], :b.shape[2], :b.shape[3]] += b
    return out


# --- reading dlib's serialisation ----------------------------------------------------------------


class _Reader:
    """dlib ``serialize`` primitives: packed integers, strings and version-2 float32 tensors."""

    def __init__(self, data: bytes, position: int):
        self.data, self.position = data, position

    def integer(self) -> int:
        head = self.data[self.position]
        size = head & 0x0F
        value = int.from_bytes(self.data[self.position + 1:self.position + 1 + size], "little")
        self.position += 1 + size
        return -value if head & 0x80 else value

    def string(self) -> str:
        size = self.integer()
        text = self.data[self.position:self.position + size].decode("ascii")
        self.position += size
        return text

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise InvalidArgument(f"unsupported dlib tensor serialisation version {version}")
        count = int(np.prod([self.integer() for _ in range(4)]))
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.position)
        self.position += 4 * count
        return values.astype(np.float32)


def _read_layers(data: bytes) -> list[tuple]:
    """The network's layers, input to output, as ``(name, values...)`` tuples.

    dlib serialises a network from its input layer up; each layer starts with its type name. The scan
    resumes after each layer's data, so weight bytes are never mistaken for names.
    """
    layers, position = [], 0
    while (match := _LAYER_NAME.search(data, position)) is not None:
        reader = _Reader(data, match.start())
        name = reader.string()
        if name == "con_4":
            params = reader.tensor()
            layers.append(("con", params, *[reader.integer() for _ in range(7)]))
        elif name == "affine_":
            layers.append(("affine", reader.tensor()))
        elif name == "fc_2":
            outputs, inputs = reader.integer(), reader.integer()
            layers.append(("fc", reader.tensor(), outputs, inputs))
        elif name in ("max_pool_2", "avg_pool_2"):
            layers.append((name[:-2], *[reader.integer() for _ in range(6)]))
        else:
            layers.append((name.rstrip("_"),))
        position = reader.position
    return layers


def _read_model(path: Path):
    """``(stem conv, [(conv, conv) per residual block], fc (256, 128))`` with affine layers folded in."""
    layers = _read_layers(path.read_bytes())
    expected = ["con", "affine", "relu", "max_pool"]
    for _, down in _BLOCKS:
        shortcut = ["avg_pool"] if down else []
        expected += ["con", "affine", "relu", "con", "affine", *shortcut, "add_prev", "relu"]
    expected += ["avg_pool", "fc"]
    if [layer[0] for layer in layers] != expected:
        raise InvalidArgument(f"{path} is not dlib's face descriptor ResNet (unexpected layer sequence)")
    convs = [_folded(c, a) for c, a in zip(*[[layer for layer in layers if layer[0] == kind]
                                             for kind in ("con", "affine")])]
    fc = layers[-1]
    stem, rest = convs[0], convs[1:]
    blocks = [(rest[2 * i], rest[2 * i + 1]) for i in range(len(_BLOCKS))]
    for (channels, down), (first, second) in zip(_BLOCKS, blocks):
        if first.weights.shape[1] != channels or (first.stride == 2) != down or second.stride != 1:
            raise InvalidArgument(f"{path}: unexpected block geometry")
    return stem, blocks, fc[1].reshape(fc[3], fc[2])


def _folded(con: tuple, affine: tuple) -> _Conv:
    """A dlib ``con_`` layer followed by its ``affine_`` layer, as one ``_Conv``."""
    _, params, filters, rows, cols, stride_y, stride_x, pad_y, pad_x = con
    if rows != cols or stride_y != stride_x or pad_y != pad_x:
        raise InvalidArgument("only square kernels, strides and paddings are supported")
    channels = (params.size - filters) // (filters * rows * cols)
    weights = params[:filters * channels * rows * cols].reshape(filters, channels, rows, cols)
    bias = params[filters * channels * rows * cols:]
    gamma, beta = affine[1][:filters], affine[1][filters:]
    matrix = weights.transpose(2, 3, 1, 0).reshape(rows * cols * channels, filters) * gamma
    return _Conv(np.ascontiguousarray(matrix, dtype=np.float32), (bias * gamma + beta).astype(np.float32),
                 rows, stride_y, pad_y)
