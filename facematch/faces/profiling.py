"""Per-stage timings of ingestion: where the CPU goes (decode, detect, landmarks, encode, quality, store).

A ``StageClock`` accumulates calls, wall seconds and CPU seconds per stage in one process. Worker
processes time their own stages (``TimedModels`` wraps the dlib models a pipeline calls, so the
pipeline's code is timed as it runs, unchanged) and send the per-image figures back with each result;
the ingest loop adds them up in its summary. CPU seconds are the figure to scale by: on a shared
machine wall seconds also count the time other processes held the core.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from typing import Iterator

from facematch.faces.models import DlibModels

__all__ = ["StageClock", "TimedModels"]


class StageClock:
    """Calls, wall and CPU seconds per stage name: ``{stage: [calls, wall_s, cpu_s]}``."""

    def __init__(self):
        self.stages: dict[str, list[float]] = {}

    def add(self, stage: str, wall: float, cpu: float, calls: int = 1) -> None:
        entry = self.stages.setdefault(stage, [0, 0.0, 0.0])
        entry[0] += calls
        entry[1] += wall
        entry[2] += cpu

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Time the ``with`` body as one call of ``stage``: wall time and this thread's CPU time.

        Thread CPU time, not process CPU time: reading the process clock costs milliseconds while other
        threads of the process run (OpenBLAS's, spinning), and the analysis runs on one thread.
        """
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - wall, time.thread_time() - cpu)

    def merge(self, stages: dict[str, list[float]]) -> None:
        """Add another clock's ``stages`` (e.g. one image's, sent back by a worker)."""
        for stage, (calls, wall, cpu) in stages.items():
            self.add(stage, wall, cpu, int(calls))

    def take(self) -> dict[str, list[float]]:
        """The stages so far, and start again from zero (a worker sends one image's worth)."""
        stages, self.stages = self.stages, {}
        return stages

    def report(self) -> dict[str, dict]:
        """``{stage: {"calls", "wall_s", "cpu_s", "cpu_ms_per_call"}}``, rounded for logs and JSON."""
        return {stage: {"calls": int(calls), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                        "cpu_ms_per_call": round(1000 * cpu / calls, 2) if calls else 0.0}
                for stage, (calls, wall, cpu) in self.stages.items()}


class _Timed:
    """Forwards calls (and ``run``, ``detect``) to a model, timing each as one call of ``stage``."""

    def __init__(self, model, clock: StageClock, stage: str):
        self._model, self._clock, self._stage = model, clock, stage

    def __call__(self, *args, **kwargs):
        with self._clock.time(self._stage):
            return self._model(*args, **kwargs)

    def run(self, *args, **kwargs):
        with self._clock.time(self._stage):
            return self._model.run(*args, **kwargs)

    def detect(self, *args, **kwargs):  # MTCNN's entry point
        with self._clock.time(self._stage):
            return self._model.detect(*args, **kwargs)

    def compute_face_descriptor(self, *args, **kwargs):
        with self._clock.time(self._stage):
            return self._model.compute_face_descriptor(*args, **kwargs)

    def __getattr__(self, name):  # anything else the model offers, untimed
        return getattr(self._model, name)


def _timed_model(name: str, stage: str) -> functools.cached_property:
    """A cached property loading ``DlibModels.<name>`` under the "load" stage, its calls timed as ``stage``."""
    def load(self):
        with self.clock.time("load"):
            return _Timed(getattr(DlibModels, name).func(self), self.clock, stage)

    load.__name__ = name
    return functools.cached_property(load)


class TimedModels(DlibModels):
    """``DlibModels`` whose detectors, landmark predictors and encoder report to ``clock``.

    Stages: ``detect`` (HOG and CNN detector calls), ``landmarks`` (shape predictor calls, one per
    face), ``encode`` (descriptor calls, one per image), ``load`` (each model's first use). ``encoder``
    replaces the default descriptor network when given (e.g. dlib's own, to compare). Models still load lazily,
    once.
    """

    def __init__(self, clock: StageClock, encoder=None):
        super().__init__()
        self.clock = clock
        self._encoder_override = encoder

    hog_detector = _timed_model("hog_detector", "detect")
    cnn_detector = _timed_model("cnn_detector", "detect")
    landmarks_68 = _timed_model("landmarks_68", "landmarks")
    landmarks_5 = _timed_model("landmarks_5", "landmarks")
    mtcnn = _timed_model("mtcnn", "detect")

    @functools.cached_property
    def encoder(self):
        with self.clock.time("load"):
            model = self._encoder_override or DlibModels.encoder.func(self)  # the default loads itself
            if self._encoder_override is not None and hasattr(model, "load"):
                model.load()
        return _Timed(model, self.clock, "encode")
