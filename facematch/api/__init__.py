"""The Python API: one ``Facematch`` object per data directory, mirroring the CLI command for command.

``facematch.api.facematch`` holds ingest, search, review and audit; its bases hold the shared plumbing
(``base``), the data's life cycle (``lifecycle``) and accuracy measurement (``measurement``).
"""

from facematch.api.base import default_user
from facematch.api.facematch import CANDIDATE_LISTS, DECISIONS, Facematch

__all__ = ["Facematch", "CANDIDATE_LISTS", "DECISIONS", "default_user"]
