"""Accuracy evaluation (NIST FRTE / ISO/IEC 19795-1 metrics) and threshold calibration."""
