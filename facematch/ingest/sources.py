"""Ingestion sources: a folder or a CSV manifest, turned into a list of ``IngestItem``.

Custody folders are laid out ``<subject_id>/<image>``; scene folders may be any tree. A manifest is a CSV
with a header: ``path,subject_id`` (optional ``custody_ref,captured_at,source``) for custody, and
``path,case_ref`` (optional ``captured_at,source``) for scene images; custody manifests may also carry
``not_convicted`` (1/true/yes: the person was not convicted, the images are due for deletion at once).
Relative paths in a manifest are resolved against the manifest's folder; every path is made absolute, so
the catalogue never depends on the directory the ingest ran from. Fields are checked by
:mod:`facematch.validation`: a bad row becomes an item with a ``problem`` (recorded as that file's
failure by the ingest, which goes on), never a silently stored value.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, replace
from pathlib import Path

from facematch.errors import InvalidArgument, ManifestError, SourceNotFound
from facematch.settings import TextLimits
from facematch.validation import check_date, check_optional_text, check_text

__all__ = ["IMAGE_SUFFIXES", "IngestItem", "custody_items", "scene_items"]

#: File name endings taken from folders; manifests may name any file (bad ones get a recorded reason).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})


@dataclass(frozen=True)
class IngestItem:
    """One file to ingest and the facts known about it before it is opened."""

    path: Path
    subject_ref: str | None = None
    custody_ref: str | None = None
    case_ref: str | None = None
    captured_at: str | None = None
    source: str | None = None
    not_convicted: bool = False
    #: Why this item must not be stored (a field failed validation), or None.
    problem: str | None = None


#: Manifest values of ``not_convicted`` that mean yes (anything else but blank is refused).
_YES, _NO = ("1", "true", "yes", "y"), ("", "0", "false", "no", "n")


def _checked(item: IngestItem, limits: TextLimits | None, not_convicted: str = "") -> IngestItem:
    """``item`` with its fields validated: unchanged, or carrying the first ``problem`` found."""
    try:
        check_optional_text("subject id", item.subject_ref, "id", limits)
        check_optional_text("custody ref", item.custody_ref, "id", limits)
        check_optional_text("case ref", item.case_ref, "id", limits)
        check_optional_text("source", item.source, "note", limits)
        check_date("captured_at", item.captured_at)
        if not_convicted.lower() not in _YES + _NO:
            raise InvalidArgument(f"not_convicted must be one of {', '.join(_YES)} or blank/no, "
                                  f"got {not_convicted[:20]!r}")
    except InvalidArgument as exc:
        return replace(item, problem=str(exc))
    return replace(item, not_convicted=not_convicted.lower() in _YES)


def custody_items(source: str | Path, limits: TextLimits | None = None) -> list[IngestItem]:
    """Items of a custody source (``<subject_id>/<image>`` folder or manifest), sorted by path.

    Raises ``SourceNotFound`` or ``ManifestError``; a row with a bad field is an item with a ``problem``.
    """
    source = _existing(source)
    if source.is_dir():
        items = []
        for path in _image_files(source):
            rel = path.relative_to(source)
            if len(rel.parts) < 2:
                continue  # loose files at the top have no subject folder
            items.append(_checked(IngestItem(path=path, subject_ref=rel.parts[0], source=str(source)), limits))
        return items
    rows = _read_manifest(source, required=("path", "subject_id"))
    return [
        _checked(IngestItem(path=p, subject_ref=r["subject_id"], custody_ref=r.get("custody_ref") or None,
                            captured_at=r.get("captured_at") or None, source=r.get("source") or str(source)),
                 limits, r.get("not_convicted") or "")
        for p, r in rows
    ]


def scene_items(source: str | Path, case_ref: str | None = None, limits: TextLimits | None = None
                ) -> list[IngestItem]:
    """Items of a crime-scene source (any folder tree with ``case_ref``, or a manifest with ``case_ref``).

    A folder needs ``case_ref``; in a manifest a row's own ``case_ref`` wins, and ``case_ref`` fills blanks.
    Raises ``SourceNotFound``, ``ManifestError`` or ``InvalidArgument``.
    """
    source = _existing(source)
    if source.is_dir():
        if not case_ref:
            raise InvalidArgument("a case reference is required for crime-scene images (--case REF)")
        check_text("case ref", case_ref, "id", limits)
        return [IngestItem(path=p, case_ref=case_ref, source=str(source)) for p in _image_files(source)]
    rows = _read_manifest(source, required=("path",) if case_ref else ("path", "case_ref"))
    items = []
    for path, row in rows:
        ref = row.get("case_ref") or case_ref
        if not ref:
            raise ManifestError(f"manifest {source}: row for {path.name!r} has no case_ref")
        items.append(_checked(IngestItem(path=path, case_ref=ref, captured_at=row.get("captured_at") or None,
                                         source=row.get("source") or str(source)), limits))
    return items


def _existing(source: str | Path) -> Path:
    """The source as an absolute path (not resolved: a symlinked folder keeps the name it was given)."""
    path = Path(os.path.abspath(source))
    if not path.exists():
        raise SourceNotFound(f"source {str(source)!r} does not exist")
    return path


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _read_manifest(path: Path, required: tuple[str, ...]) -> list[tuple[Path, dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in columns]
            if missing:
                raise ManifestError(
                    f"manifest {path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})"
                )
            rows = []
            for line_no, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                for column in required:
                    if not row.get(column):
                        raise ManifestError(f"manifest {path}: line {line_no} has an empty {column}")
                file = Path(row["path"])
                rows.append((Path(os.path.abspath(path.parent / file)), row))
            return rows
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {path}: not a UTF-8 CSV file ({exc.reason})") from None
    except csv.Error as exc:
        raise ManifestError(f"manifest {path}: {exc}") from None
