"""Calibration of the review bands (placeholder until the calibration module lands): uncalibrated defaults."""

from __future__ import annotations

from .bands import BandScheme
from .settings import Settings


def load_band_scheme(settings: Settings) -> BandScheme:
    """The band scheme search uses: the uncalibrated defaults of ``settings.bands``."""
    return BandScheme.uncalibrated(settings.bands)
