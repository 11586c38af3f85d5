"""facematch: retrospective facial-image comparison producing investigative leads for human review."""

__version__ = "0.1.0"

__all__ = ["__version__"]
