"""Jittered copies of an aligned face chip, the same every time.

dlib's ``num_jitters`` averages the descriptors of randomly perturbed copies of the chip (a small shift,
scale change and rotation, and a mirror image half of the time). Its random generator lives inside dlib
and carries on from call to call, so the same probe searched twice would get slightly different
distances. Here the perturbations follow dlib's recipe but are drawn once from a fixed seed: the n-th
copy of every chip is always made with the same transform, so a repeated search gives the same list.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

__all__ = ["MAX_ROTATION_DEGREES", "MAX_SHIFT", "SCALE_RANGE", "SEED", "jittered_chips"]

#: dlib's ``jitter_image`` ranges: rotation (degrees), shift (fraction of the size), face height kept.
MAX_ROTATION_DEGREES = 3.0
MAX_SHIFT = 0.02
SCALE_RANGE = (0.97, 1.0)
SEED = 20170212  # fixed: reproducibility, not secrecy


@functools.lru_cache(maxsize=16)
def _transforms(size: int, count: int) -> tuple[tuple[np.ndarray, bool], ...]:
    """``count`` (2x3 affine matrix, mirror?) pairs for a ``size`` x ``size`` chip, from :data:`SEED`."""
    rng = np.random.default_rng(SEED)
    out = []
    centre = (size - 1) / 2.0
    for _ in range(count):
        angle = rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES)
        scale = rng.uniform(*SCALE_RANGE)  # the face keeps 97-100% of its height: a slightly wider crop
        shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=2) * size
        matrix = cv2.getRotationMatrix2D((centre, centre), angle, scale)
        matrix[:, 2] += shift
        out.append((matrix.astype(np.float64), bool(rng.random() > 0.5)))
    return tuple(out)


def jittered_chips(chip: np.ndarray, count: int) -> np.ndarray:
    """``count`` perturbed copies of one ``(S, S, 3) uint8`` chip: ``(count, S, S, 3) uint8``.

    Each copy is the chip rotated by up to 3 degrees, shifted by up to 2% and shrunk by up to 3%
    (borders filled by reflection), and mirrored for about half of the copies.
    """
    size = chip.shape[0]
    copies = np.empty((count, *chip.shape), dtype=np.uint8)
    for i, (matrix, mirror) in enumerate(_transforms(size, count)):
        warped = cv2.warpAffine(chip, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT_101)
        copies[i] = warped[:, ::-1] if mirror else warped
    return copies

