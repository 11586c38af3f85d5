"""Defaults defined once: a settings dataclass read from the environment, passed down explicitly.

Every tunable of the pipeline lives here so that the CLI, the Python API, the evaluation and the demo all
agree, and so a search or evaluation can record exactly which settings produced it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from facematch.errors import InvalidArgument

__all__ = ["FACE_RECOGNITION_TOLERANCE", "AUDIT_KEY_ENV", "DEFAULT_AUDIT_KEY", "default_audit_key_file",
    "BandThresholds", "DetectionSettings", "EmbeddingSettings", "QualitySettings", "FmrTargets",
    "FalseCandidateTargets", "EvaluationSettings", "PersonSettings", "FUSION_RULES", "ServiceSettings", "TextLimits",
    "RetentionSettings", "MAX_INT", "Settings"]

#: The largest integer an id, rank or limit may be: SQLite's signed 64-bit integer.
MAX_INT = 2**63 - 1

#: face_recognition's documented tolerance: distances at or below it are "a match" in its README.
FACE_RECOGNITION_TOLERANCE = 0.6

#: The audit chain's HMAC key: ``<data_dir>/keys/audit.key`` unless this variable names another file. The
#: default sits beside the catalogue (whoever can read both can rewrite the chain); a deployment should keep
#: the key where the catalogue's writers cannot read it (README, "Audit log").
AUDIT_KEY_ENV = "FACEMATCH_AUDIT_KEY_FILE"
DEFAULT_AUDIT_KEY = Path("keys") / "audit.key"


def default_audit_key_file(data_dir: str | Path, environ: dict | None = None) -> Path:
    """The audit key file of a catalogue in ``data_dir``: ``$FACEMATCH_AUDIT_KEY_FILE`` or the default."""
    env = os.environ if environ is None else environ
    return Path(env[AUDIT_KEY_ENV]) if env.get(AUDIT_KEY_ENV) else Path(data_dir) / DEFAULT_AUDIT_KEY


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
    names the stage it follows: "hog" (the default since session 8: dlib's CNN then runs only on
    MTCNN's misses; same ranks within noise on four CCTV probe sets, 45-55% less CPU on HD and 80 px
    stills), "cnn" (session 5's choice, before the probe augmentation) or "rotated" (docs/cctv-probes.md).
    ``mtcnn_rotation_angles``: when every other pass found nothing, MTCNN runs on copies of the probe
    (at most ``mtcnn_max_side`` px) turned by these angles, looking for faces of at least
    ``mtcnn_rotated_min_face`` px: heads bowed and turned under a high camera. Chosen on the 352x288
    frames of protocols/frmdb-lowres-cctv.json (5 of the 22 frames no stage acquired, every face checked
    by eye; +-45 degrees found no other face and more background; smaller faces were all background),
    confirmed on the crops and the dev CCTV protocol.
    ``mtcnn_stretch_factors``: when even those found nothing, MTCNN runs on copies of the probe (scaled as
    the turned passes' copies) stretched vertically by these factors: a head bowed under a high camera
    shows a face foreshortened top to bottom. Chosen on the frames (4 of their 17 faceless frames, every
    face checked by eye), confirmed on the crops (3 of 24, the same faces; docs/cctv-probes.md).
    ``probe_budget_s``: CPU seconds the probe cascade may spend; a stage that would overrun it is skipped
    (the first HOG and CNN passes always run, the CNN only when MTCNN found nothing).
    ``custody_cnn``: when HOG finds no face in a custody image, run the CNN detector (profile views) on a
    copy of about ``custody_cnn_pixels`` pixels (never enlarged): 25k px finds 40 of FRMDB's 42 profile
    mugshots, as 60k px does, for ~0.2 s instead of ~0.5 s of CPU (docs/cctv-probes.md). In a large,
    uncropped photo (longer side at least twice ``custody_detect_side``, as for ``custody_max_side``) the
    face is smaller in that copy: the copy is then about ``custody_cnn_large_pixels`` pixels (50k finds 49
    of the 50 eye-level FRMDB lowres custody photos' faces that 25k missed or HOG placed on an eye).
    ``custody_mtcnn_side``: in a large custody photo, when HOG finds nothing, MTCNN on a copy this many
    px long (faces from ``custody_mtcnn_min_face`` px in the copy: 80 px in a 972 px photo, the size
    hog-fine looked for; hog-fine no longer runs), ~16 ms: on the 50 eye-level FRMDB lowres custody
    photos it finds 17 of the 18 profiles HOG misses (027/Img_13, which the CNN misses, but not
    033/Img_13), on all 420 FRMDB lowres custody photos 118 faces HOG misses, every box on a head
    (checked by eye). 0 turns MTCNN off: the CNN and hog-fine, as before.
    ``custody_mtcnn_cnn_fallback``: the CNN on the whole ~50k-pixel copy of every large photo MTCNN
    misses, ~0.3 s each (the default before ``custody_rescue_turns``; it finds 033/Img_13, and without
    033 the frames protocol lost 3 of 50 rank-10 hits, 44% -> 38%). Of the 178 of the 420 photos that
    HOG and MTCNN miss it finds 7 and nothing in the other 171, mostly backs and tops of heads, so
    ingest of the 420 ran at 4.5 photos per CPU-second. ``custody_rescue_turns`` (used when that is
    off): MTCNN on the mirrored copy turned by these angles shows the CNN where to look; the CNN then
    scans only a square ``custody_rescue_margin`` times that face's side, cut from its own copy on its
    stride grid: same box as the full-photo CNN. On the 420 photos it finds 033/Img_13 and 029/Img_12
    (the full-photo CNN's boxes) and 026/Img_04 (a head turned away, CNN score 0.01); it loses 5 of the
    7 (four views beyond profile, ear and cheek, and the profile 026/Img_03), and ingest runs at 15.1
    photos per CPU-second instead of 4.5 (same run, load 4-5; 0.74-0.76x MTCNN alone in two other runs). All 50
    protocol photos enrol, with the same boxes, and the frames protocol's ranks are the fallback's
    (docs/cctv-probes.md). () turns it off (033 lost).
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
    mtcnn_after: str = "hog"
    mtcnn_rotation_angles: tuple[float, ...] = (30.0, -30.0)
    mtcnn_rotated_min_face: float = 20.0
    mtcnn_stretch_factors: tuple[float, ...] = (1.25, 1.5)
    probe_budget_s: float = 1.8
    custody_cnn: bool = True
    custody_cnn_pixels: int = 25_000
    custody_cnn_large_pixels: int = 50_000
    custody_mtcnn_side: int = 486
    custody_mtcnn_min_face: float = 40.0
    custody_mtcnn_cnn_fallback: bool = False
    custody_rescue_turns: tuple[float, ...] = (-30.0,)
    custody_rescue_margin: float = 2.0
    landmarks: str = "5"


@dataclass(frozen=True)
class EmbeddingSettings:
    """How descriptors are computed.

    ``num_jitters``: re-samples per face at enrolment (1 = none, as face_recognition);
    ``probe_jitters``: the same for probe faces (a probe is embedded once per search, so it can afford more).
    ``padding``: margin of the aligned chip around the face (dlib's 0.25).
    ``probe_flip``: a probe's descriptor is the mean of those of its aligned chip and of the chip's mirror
    image (none at enrolment).
    Probes get 4 jitters and the mirror (8 network passes, ~0.1 s CPU per probe face) since session 7:
    chosen on the field frames (frmdb-lowres-cctv, 50 mated stills: rank-1 / 10 / 20 from 14 / 22 / 22 to
    16 / 22 / 25, person-level rank-1 8 -> 10 of 10), confirmed on their crops (10 / 19 / 22 -> 11 / 20 /
    23, person 6 -> 7) and neutral on the HD dev crops (50 / 66 / 74 -> 51 / 68 / 74 of 105; person-level
    18 -> 17 of 21). 8 jitters did no better; either alone was mixed (docs/cctv-probes.md).
    """

    num_jitters: int = 1
    probe_jitters: int = 4
    padding: float = 0.25
    probe_flip: bool = True


@dataclass(frozen=True)
class QualitySettings:
    """Thresholds for quality decisions (the score itself does not depend on them).

    ``min_inter_eye_px`` (30): below it a custody image is unfit for enrolment. ISO/IEC
    19794-5 full-frontal images (and ICAO portraits) ask at least 90 px, but dlib aligns faces to a
    150-px chip in which the eyes are about 52 px apart, so more pixels add little; at 30 px the
    descriptor already moves by about 0.13 (measured), a fifth of the way to the match threshold.
    ``min_face_px`` (40): face box width below which a custody image is unfit and a probe is always
    warned; dlib's HOG detector cannot find smaller faces (its window is 80 px, 40 px with one
    upsampling), so these come from marked boxes, and the descriptor has moved by about 0.2.
    ``enrol_min_score`` (40): custody faces below it are flagged unfit for enrolment (frontal FRMDB
    mugshots score 95 on average, 45-degree views 65-70, profiles and views from 60 degrees above 20).
    ``probe_warn_score`` (50): probes below it carry the low-quality warning; at 50 the image alone
    uses up about 0.25 of the 0.6 descriptor distance that separates a match from a non-match, and
    on FRMDB's CCTV crops those below it were ranked first a third as often as those above.
    """

    min_inter_eye_px: float = 30.0
    min_face_px: int = 40
    enrol_min_score: float = 40.0
    probe_warn_score: float = 50.0

    def __post_init__(self):
        for name in ("min_inter_eye_px", "min_face_px", "enrol_min_score", "probe_warn_score"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"QualitySettings.{name} must be a finite number >= 0, got {value!r}")
        for name in ("enrol_min_score", "probe_warn_score"):
            value = getattr(self, name)
            if value > 100:
                raise InvalidArgument(f"QualitySettings.{name} is a 0..100 score, got {value!r}")


@dataclass(frozen=True)
class FmrTargets:
    """Target false-match rates (per comparison) of the reference thresholds ``facematch calibrate`` records.

    Search no longer bands by these fixed rates (their meaning changes with the gallery size: see
    :class:`FalseCandidateTargets`); the calibration file keeps them, with TAR, as a summary of the curve.
    """

    strong: float = 1e-4
    possible: float = 1e-3
    weak: float = 1e-2

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FalseCandidateTargets:
    """What each review band means to a reviewer, at every gallery size.

    A band holds candidates up to the distance at which at most this many *false* candidates are
    expected per search (per probe face) of a person who is not enrolled, among the N subjects enrolled
    now: with N = 1,000 "possible" needs a per-subject false-match rate of 1e-4, with N = 20 million
    5e-9. Search derives each band's distance from the calibration's FMR curve at the live N
    (``facematch.search.bands``); a band the calibration cannot support at that N holds no candidates.
    """

    strong: float = 0.01
    possible: float = 0.1
    weak: float = 1.0

    def __post_init__(self):
        if not (0 < self.strong <= self.possible <= self.weak):
            raise InvalidArgument(f"expected false candidates per band must satisfy 0 < strong <= possible "
                                  f"<= weak, got {self.strong}, {self.possible}, {self.weak}")

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EvaluationSettings:
    """Defaults of the evaluation and calibration commands.

    ``n_boot``: bootstrap replicates for the 95% intervals (0: none); ``seed``: folder split and
    bootstrap seed; ``gallery_per_subject``/``holdout_fraction``: how a labelled folder is split into a
    protocol (images enrolled per identity; fraction of identities held out as non-mated probes);
    ``cache_dir``: the embedding cache, relative to the working directory; ``fmr_targets``: the bands'
    calibration targets.
    """

    n_boot: int = 1000
    seed: int = 0
    gallery_per_subject: int = 1
    holdout_fraction: float = 0.2
    cache_dir: Path = Path(".cache") / "facematch-eval"
    fmr_targets: FmrTargets = field(default_factory=FmrTargets)


#: How a person-level search fuses each custody subject's distances over the stills of one person
#: (facematch/search/person.py): the smallest, the mean of the k smallest, or quality-weighted.
FUSION_RULES = ("min", "mean-k", "quality-mean", "quality-min")


@dataclass(frozen=True)
class PersonSettings:
    """Person-level search: several stills (or a clip) of one unknown person, one fused candidate list.

    ``fusion``: one of ``FUSION_RULES``, ``fusion_k``: the k of "mean-k" (the mean of each subject's k
    smallest distances over the stills; fewer stills: all of them). "min" was chosen on the frmdb-lowres
    frames protocol (rank-1 8 of 10 people, rank-10 10 of 10; mean-2 7 and 10) and confirmed on the
    crops (tied best) and frmdb-dev (one person from the best rank-1): docs/evaluation.md, "Person-level search".
    ``quality_penalty``: for "quality-min", distance added per unit of missing quality (score 0 -> +this).
    ``frame_step``/``max_frames``/``keep_frames``: a video probe is sampled every ``frame_step``-th
    frame, at most ``max_frames`` frames are analysed, and the ``keep_frames`` faces of best quality
    (the largest face of each frame, or the face in the marked box) are searched as the person.
    """

    fusion: str = "min"
    fusion_k: int = 2
    quality_penalty: float = 0.1
    frame_step: int = 5
    max_frames: int = 12
    keep_frames: int = 5

    def __post_init__(self):
        if self.fusion not in FUSION_RULES:
            raise InvalidArgument(f"fusion must be one of {', '.join(FUSION_RULES)}, got {self.fusion!r}")
        for name in ("fusion_k", "frame_step", "max_frames", "keep_frames"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InvalidArgument(f"{name.replace('_', ' ')} must be an integer >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.quality_penalty <= 1.0:
            raise InvalidArgument(f"quality penalty must be within 0-1, got {self.quality_penalty}")


@dataclass(frozen=True)
class ServiceSettings:
    """Defaults of ``facematch serve`` (docs/service.md): where it listens, its limits, its worker processes.

    ``workers``: processes doing probe analysis (detection, descriptors), each with the models loaded.
    ``max_upload_bytes``: one request's body; ``max_probe_pixels``: one probe image (width x height);
    ``searches_per_minute``/``logins_per_minute``: per user (per client address for logins).
    ``ingest_roots``: server folders an operator may ingest from (none: uploads only).
    ``audit_page_size``: entries per page of the supervisor's audit view (the API's default ``limit``).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    max_upload_bytes: int = 25 * 2**20
    max_probe_pixels: int = 40_000_000
    max_images_per_search: int = 10
    searches_per_minute: int = 120
    logins_per_minute: int = 10
    session_hours: float = 8.0
    ingest_roots: tuple[Path, ...] = ()
    audit_page_size: int = 100


@dataclass(frozen=True)
class TextLimits:
    """Longest accepted free text, in characters (facematch.validation refuses longer values).

    ``ident``: subject ids, custody and case references; ``name``: users and reviewers;
    ``note``: reviewers' notes and the reasons given for searches and deletions.
    """

    ident: int = 128
    name: int = 128
    note: int = 2000


@dataclass(frozen=True)
class RetentionSettings:
    """When custody images fall due for retention review.

    ``review_after_days``: an image's review date is its capture date (the manifest's ``captured_at``,
    else the date it was ingested) plus this period (6 years: the review period of the UK's
    Management of Police Information guidance for custody images). Images of people not convicted
    (manifest column ``not_convicted``) are due at once: they are kept only until a request is acted on.
    """

    review_after_days: int = 6 * 365


@dataclass(frozen=True)
class Settings:
    """All defaults of facematch, in one place.

    Built from the environment with :meth:`from_env`; the CLI overrides individual fields from flags.
    """

    data_dir: Path = Path("facematch-data")
    index_dir: Path = Path("indexes")
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: processes analysing a search's probe images (facematch/search/parallel.py): None = one per image, at
    #: most the CPU cores; 1 = in the calling process (the service's search workers: a pool already)
    search_workers: int | None = None
    batch_size: int = 32
    max_pixels: int = 50_000_000
    top: int = 20
    #: audit-log entries ``facematch audit`` shows
    audit_limit: int = 50
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    bands: BandThresholds = field(default_factory=BandThresholds)
    #: calibrated bands: expected false candidates per search of someone not enrolled (at the live gallery size)
    band_targets: FalseCandidateTargets = field(default_factory=FalseCandidateTargets)
    quality: QualitySettings = field(default_factory=QualitySettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    text_limits: TextLimits = field(default_factory=TextLimits)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    person: PersonSettings = field(default_factory=PersonSettings)
    calibration_file: Path | None = None
    #: HMAC key of the audit chain (None: ``<data_dir>/keys/audit.key``; see ``AUDIT_KEY_ENV``)
    audit_key_file: Path | None = None
    #: Added to the distance of custody faces only the CNN found (profile views), so a distance means the
    #: same false-match rate for every view: facematch.search.matching. 0.12 = the FMR-equalising shift measured
    #: on non-mated comparisons of the dev CCTV protocol (0.127 full crops, 0.107 coarse; docs/cctv-probes.md).
    nonfrontal_offset: float = 0.12
    #: Seconds a write (ingest batch, deletion, index rebuild, calibration) waits for another process
    #: writing the same data directory before giving up with ``WriterBusy``; an ingest holds the lock
    #: only while it commits a batch and updates the index, so a minute covers any batch.
    writer_wait_s: float = 120.0
    #: Every time an index is opened its face ids are compared with the catalogue's; its vectors too,
    #: all of them up to this many faces, beyond that a random sample of ``index_verify_sample`` (and all
    #: after deletions). At 50k faces an open took 0.13-0.27 s with ids only, 0.24-0.38 s with the sample
    #: and 0.48-0.69 s with every vector (shared 2-core machine under load). ``index verify`` checks all.
    index_verify_full_max: int = 50_000
    index_verify_sample: int = 2_000

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
        if env.get("FACEMATCH_SEARCH_WORKERS"):
            values["search_workers"] = _positive_int("FACEMATCH_SEARCH_WORKERS", env["FACEMATCH_SEARCH_WORKERS"])
        if env.get("FACEMATCH_WRITER_WAIT"):
            values["writer_wait_s"] = _seconds("FACEMATCH_WRITER_WAIT", env["FACEMATCH_WRITER_WAIT"])
        if env.get("FACEMATCH_CALIBRATION"):
            values["calibration_file"] = Path(env["FACEMATCH_CALIBRATION"])
        if env.get(AUDIT_KEY_ENV):
            values["audit_key_file"] = Path(env[AUDIT_KEY_ENV])
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes) -> "Settings":
        """A copy with ``changes`` applied (None values are ignored)."""
        new = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        new.validate()
        return new

    @property
    def audit_key_path(self) -> Path:
        """The audit chain's key file: ``audit_key_file``, else ``<data_dir>/keys/audit.key``."""
        return self.audit_key_file or self.data_dir / DEFAULT_AUDIT_KEY

    def validate(self) -> None:
        """Raise InvalidArgument for values that make no sense."""
        if self.workers < 1:
            raise InvalidArgument(f"workers must be at least 1, got {self.workers}")
        if self.search_workers is not None and self.search_workers < 1:
            raise InvalidArgument(f"search workers must be at least 1, got {self.search_workers}")
        if self.batch_size < 1:
            raise InvalidArgument(f"batch size must be at least 1, got {self.batch_size}")
        if self.top < 1:
            raise InvalidArgument(f"top must be at least 1, got {self.top}")
        if not 0.0 <= self.nonfrontal_offset <= 1.0:
            raise InvalidArgument(f"nonfrontal offset must be within 0-1, got {self.nonfrontal_offset}")
        if self.max_pixels < 1:
            raise InvalidArgument(f"max pixels must be positive, got {self.max_pixels}")
        if not (math.isfinite(self.writer_wait_s) and self.writer_wait_s >= 0):
            raise InvalidArgument(f"writer wait must be a number of seconds >= 0, got {self.writer_wait_s}")
        if self.index_verify_full_max < 0 or self.index_verify_sample < 0:
            raise InvalidArgument("index verification sizes must be >= 0")

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


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"{name} must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise InvalidArgument(f"{name} must be a number of seconds >= 0, got {value}")
    return value
