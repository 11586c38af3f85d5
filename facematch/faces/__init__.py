"""Pixels to faces: decoding, detection, landmarks, descriptors and quality (dlib lives only here)."""
