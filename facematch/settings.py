"""Defaults defined once: a settings dataclass read from the environment, passed down explicitly.

Every tunable of the pipeline lives here so that the CLI, the Python API, the evaluation and the demo all
agree, and so a search or evaluation can record exactly which settings produced it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidArgument

#: face_recognition's documented tolerance: distances at or below it are "a match" in its README.
FACE_RECOGNITION_TOLERANCE = 0.6


@dataclass(frozen=True)
class BandThresholds:
    """Upper distance limits of the review bands (Euclidean distance between 128-d descriptors).

    A candidate at distance <= ``strong`` is in band "strong", <= ``possible`` "possible", <= ``weak``
    "weak", else "below" (still listed in investigation mode, but with no band). The uncalibrated
    defaults sit under face_recognition's 0.6 tolerance; ``facematch calibrate`` replaces them with
    thresholds measured for target false-match rates.
    """

    strong: float = 0.40
    possible: float = 0.50
    weak: float = FACE_RECOGNITION_TOLERANCE

    def __post_init__(self):
        if not (0 < self.strong <= self.possible <= self.weak):
            raise InvalidArgument(
                f"band thresholds must satisfy 0 < strong <= possible <= weak, got "
                f"{self.strong}, {self.possible}, {self.weak}"
            )


@dataclass(frozen=True)
class DetectionSettings:
    """How faces are found.

    ``custody_detect_side``/``custody_threshold``: custody photos are posed portraits whose face spans
    at least about a quarter of the frame, so HOG runs without upsampling on a copy at most this many
    pixels long (boxes mapped back), keeping hits that score above the threshold (dlib's default is 0).
    ``custody_max_side``: when that finds nothing in a large photo, a second pass at this size looks
    for smaller faces (an uncropped photo).
    ``probe_max_side``: probes larger than this are searched on a downscaled copy first (a 24 MP photo
    would otherwise cost tens of seconds of HOG).
    ``upsample``: HOG upsampling passes for probes (finds faces down to ~40 px at 1).
    ``retry_upsample``/``retry_max_side``: a more sensitive pass when nothing was found, only for images
    no larger than ``retry_max_side`` (small CCTV stills), where it stays affordable.
    ``cnn_fallback``: when probe HOG finds nothing, run dlib's CNN detector (finds 3x more faces in CCTV
    stills, see docs/cctv-probes.md) on a copy of about ``cnn_max_pixels`` pixels (enlarged at most
    ``cnn_max_upscale`` times: an 80 px coarse still becomes 240 px, its face ~100 px), then on turned
    copies, then on a copy twice as large, then upsampled HOG.
    ``rotation_angles``: when no upright face was found, the CNN runs on copies of the probe turned by
    these angles (degrees, counter-clockwise, in this order): a head bowed under a camera high on a wall
    lies tilted in the frame. Each copy is about ``rotated_max_pixels`` pixels, enlarged
    ``rotated_max_upscale`` times at most. Chosen on the dev CCTV crops (docs/cctv-probes.md).
    ``mtcnn``: when dlib's passes found nothing, run MTCNN (``facematch/mtcnn.py``; trained on faces in
    every pose), which finds most heads seen from above or the side that dlib misses: first on a copy
    whose longer side is ``mtcnn_side`` px (enlarged at most 3x), then on the probe itself (at most
    ``mtcnn_max_side`` px), with the published stage thresholds ``mtcnn_thresholds``. ``mtcnn_after``
    names the stage it follows ("cnn" or "rotated": after the turned passes). Chosen on the dev CCTV
    crops (docs/cctv-probes.md).
    ``mtcnn_rotation_angles``: when every other pass found nothing, MTCNN runs on copies of the probe
    (at most ``mtcnn_max_side`` px) turned by these angles, looking for faces of at least
    ``mtcnn_rotated_min_face`` px: heads bowed and turned under a high camera. Chosen on the 352x288
    frames of protocols/frmdb-lowres-cctv.json (5 of the 22 frames no stage acquired, every face checked
    by eye; +-45 degrees found no other face and more background; smaller faces were all background),
    confirmed on the crops and the dev CCTV protocol.
    ``probe_budget_s``: CPU seconds the probe cascade may spend; a stage that would overrun it is skipped
    (the first HOG and CNN passes always run).
    ``custody_cnn``: when HOG finds no face in a custody image, run the CNN detector (profile views) on a
    copy of about ``custody_cnn_pixels`` pixels (never enlarged): 25k px finds 40 of FRMDB's 42 profile
    mugshots, as 60k px does, for ~0.2 s instead of ~0.5 s of CPU (docs/cctv-probes.md).
    ``landmarks``: "5" or "68", the dlib landmark model that aligns faces for the descriptor (both sides);
    "5" ranks CCTV probes better (it was trained on HOG and CNN boxes alike; docs/cctv-probes.md).
    """

    custody_detect_side: int = 320
    custody_threshold: float = -0.2
    custody_max_side: int = 800
    probe_max_side: int = 1280
    upsample: int = 1
    retry_upsample: int = 2
    retry_max_side: int = 640
    cnn_fallback: bool = True
    cnn_max_pixels: int = 60_000
    cnn_max_upscale: float = 3.0
    rotation_angles: tuple[float, ...] = (25.0, -25.0, 50.0)
    rotated_max_pixels: int = 40_000
    rotated_max_upscale: float = 3.0
    mtcnn: bool = True
    mtcnn_side: int = 200
    mtcnn_max_side: int = 640
    mtcnn_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    mtcnn_after: str = "cnn"
    mtcnn_rotation_angles: tuple[float, ...] = (30.0, -30.0)
    mtcnn_rotated_min_face: float = 20.0
    probe_budget_s: float = 1.8
    custody_cnn: bool = True
    custody_cnn_pixels: int = 25_000
    landmarks: str = "5"


@dataclass(frozen=True)
class EmbeddingSettings:
    """How descriptors are computed.

    ``num_jitters``: re-samples per face at enrolment (1 = none, as face_recognition);
    ``probe_jitters``: the same for probe faces (a probe is embedded once per search, so it can afford more).
    ``padding``: margin of the aligned chip around the face (dlib's 0.25).
    ``probe_flip``: a probe's descriptor is the mean of those of its aligned chip and of the chip's mirror
    image (one more network pass per probe face, none at enrolment). Off: on the CCTV dev protocol it
    moved rank-10 by +3 and -1 probes and rank-1 by 0 and -3 (coarse, full crops): unproven
    (docs/cctv-probes.md).
    """

    num_jitters: int = 1
    probe_jitters: int = 1
    padding: float = 0.25
    probe_flip: bool = False


@dataclass(frozen=True)
class Settings:
    """All defaults of facematch, in one place.

    Built from the environment with :meth:`from_env`; the CLI overrides individual fields from flags.
    """

    data_dir: Path = Path("facematch-data")
    index_dir: Path = Path("indexes")
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    batch_size: int = 32
    max_pixels: int = 50_000_000
    top: int = 20
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    bands: BandThresholds = field(default_factory=BandThresholds)
    calibration_file: Path | None = None
    #: Added to the distance of custody faces only the CNN found (profile views), so a distance means the
    #: same false-match rate for every view: facematch.matching. 0.12 = the FMR-equalising shift measured
    #: on non-mated comparisons of the dev CCTV protocol (0.127 full crops, 0.107 coarse; docs/cctv-probes.md).
    nonfrontal_offset: float = 0.12

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "Settings":
        """Settings from ``FACEMATCH_*`` environment variables, then explicit ``overrides`` (None = keep)."""
        env = os.environ if environ is None else environ
        values: dict = {}
        if env.get("FACEMATCH_DATA_DIR"):
            values["data_dir"] = Path(env["FACEMATCH_DATA_DIR"])
        if env.get("FACEMATCH_INDEX_DIR"):
            values["index_dir"] = Path(env["FACEMATCH_INDEX_DIR"])
        if env.get("FACEMATCH_WORKERS"):
            values["workers"] = _positive_int("FACEMATCH_WORKERS", env["FACEMATCH_WORKERS"])
        if env.get("FACEMATCH_CALIBRATION"):
            values["calibration_file"] = Path(env["FACEMATCH_CALIBRATION"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes) -> "Settings":
        """A copy with ``changes`` applied (None values are ignored)."""
        new = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        new.validate()
        return new

    def validate(self) -> None:
        """Raise InvalidArgument for values that make no sense."""
        if self.workers < 1:
            raise InvalidArgument(f"workers must be at least 1, got {self.workers}")
        if self.batch_size < 1:
            raise InvalidArgument(f"batch size must be at least 1, got {self.batch_size}")
        if self.top < 1:
            raise InvalidArgument(f"top must be at least 1, got {self.top}")
        if not 0.0 <= self.nonfrontal_offset <= 1.0:
            raise InvalidArgument(f"nonfrontal offset must be within 0-1, got {self.nonfrontal_offset}")
        if self.max_pixels < 1:
            raise InvalidArgument(f"max pixels must be positive, got {self.max_pixels}")

    def describe_pipeline(self) -> dict:
        """The settings that change embeddings or scores, recorded with searches and calibrations."""
        return {
            "detection": dataclasses.asdict(self.detection),
            "embedding": dataclasses.asdict(self.embedding),
            "matching": {"nonfrontal_offset": self.nonfrontal_offset},
        }


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, got {text!r}") from None
    if value < 1:
        raise InvalidArgument(f"{name} must be at least 1, got {value}")
    return value
