"""Evaluation protocols: which images are enrolled (gallery), which are searched (probes), who is who.

Three sources, one shape:

- a protocol JSON file (:func:`load_protocol_json`, written by :func:`save_protocol_json`);
- a labelled folder ``<identity>/<image>`` split by a documented, seeded rule (:func:`protocol_from_folder`);
- the LFW View 2 pairs file for 1:1 verification (:func:`load_lfw_pairs`).

Probe ids are ``"<identity folder>/<file name>"`` where the protocol comes from a folder, as in the
shared ``frmdb-dev-cctv.json``. A probe's ``subject`` is its enrolled subject, or None for a
non-mated probe (its person is not in the gallery). ``attributes`` carry breakdown labels
(camera, identity ...) as strings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facematch.errors import InvalidArgument, ProtocolError
from facematch.settings import EvaluationSettings

_DEFAULTS = EvaluationSettings()

__all__ = [
    "GalleryEntry", "ProbeEntry", "Protocol", "Pair", "IMAGE_EXTENSIONS",
    "load_protocol_json", "save_protocol_json", "protocol_from_folder", "load_lfw_pairs",
    "camera_from_filename",
]

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".tif", ".tiff", ".webp"})
_MAX_LISTED = 3  # missing files named in an error message


@dataclass(frozen=True)
class GalleryEntry:
    """One image to enrol under ``subject``; ``path`` is absolute (resolved against the data root)."""

    subject: str
    path: Path


@dataclass(frozen=True)
class ProbeEntry:
    """One image to search. ``subject`` is the enrolled subject it shows, None when non-mated."""

    id: str
    path: Path
    subject: str | None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Protocol:
    """A named gallery/probe split; paths are absolute and ``root`` is the folder they were relative to."""

    name: str
    description: str
    gallery: list[GalleryEntry]
    probes: list[ProbeEntry]
    root: Path

    @property
    def gallery_subjects(self) -> set[str]:
        return {g.subject for g in self.gallery}

    @property
    def mated_probes(self) -> list[ProbeEntry]:
        return [p for p in self.probes if p.subject is not None]

    @property
    def nonmated_probes(self) -> list[ProbeEntry]:
        return [p for p in self.probes if p.subject is None]


@dataclass(frozen=True)
class Pair:
    """One LFW verification pair: ``same`` is True for a mated pair; ``fold`` counts from 0."""

    fold: int
    path_a: Path
    path_b: Path
    same: bool
    subject_a: str
    subject_b: str


def _check_files(paths: list[Path], source: Path, root: Path) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
                          for p in missing[:_MAX_LISTED])
        more = " ..." if len(missing) > _MAX_LISTED else ""
        raise ProtocolError(f"{source.name}: {len(missing)} of {len(paths)} image files do not exist "
                            f"under {root}: {shown}{more}")


def _field(entry: object, key: str, where: str, source: Path):
    if not isinstance(entry, dict) or key not in entry:
        raise ProtocolError(f"{source.name}: {where} lacks the key {key!r}")
    return entry[key]


def camera_from_filename(probe: ProbeEntry) -> dict[str, str]:
    """``{"camera": "N"}`` for FRMDB surveillance crops named ``Img_0N``; ``{}`` for other names.

    In ``frmdb-dev/cctv_crops`` each person has one still per camera, Img_01 .. Img_05 = cameras 1..5.
    """
    m = re.fullmatch(r"Img_0*(\d+)", probe.path.stem)
    return {"camera": m.group(1)} if m else {}


def load_protocol_json(path: str | Path, data_root: str | Path | None = None, *,
                       attributes_fn: Callable[[ProbeEntry], dict[str, str]] | None = None,
                       check_files: bool = True) -> Protocol:
    """Read a protocol file: ``{"description", "gallery": [{subject, path}], "probes": [{id, path,
    subject|null, attributes?}]}`` with optional ``"name"`` and ``"data_root"``.

    Relative paths resolve against, in order: ``data_root`` if given; the file's ``"data_root"`` key
    (itself relative to the file's folder); else the folder above the file's folder, because protocols
    live in ``<data>/protocols/`` with paths relative to ``<data>`` (as ``frmdb-dev-cctv.json``).
    ``attributes_fn(probe)`` adds attributes on top of the file's (e.g. :func:`camera_from_filename`).
    Raises ProtocolError for unreadable JSON, missing keys, duplicate probe ids or, with
    ``check_files``, image files that do not exist (the count and the first few are named).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{path}: cannot read protocol JSON ({exc})") from exc
    for key in ("gallery", "probes"):
        if not isinstance(_field(doc, key, "the file", path), list):
            raise ProtocolError(f"{path.name}: {key!r} must be a list")
    if data_root is not None:
        root = Path(data_root)
    elif doc.get("data_root"):
        root = path.parent / doc["data_root"]
    else:
        root = path.parent.parent
    root = root.resolve()
    gallery = [GalleryEntry(str(_field(g, "subject", f"gallery entry {i}", path)),
                            root / _field(g, "path", f"gallery entry {i}", path))
               for i, g in enumerate(doc["gallery"])]
    probes, seen = [], set()
    for i, p in enumerate(doc["probes"]):
        where = f"probe entry {i}"
        pid = str(_field(p, "id", where, path))
        if pid in seen:
            raise ProtocolError(f"{path.name}: probe id {pid!r} appears twice")
        seen.add(pid)
        subject = _field(p, "subject", where, path)
        attrs = {str(k): str(v) for k, v in (p.get("attributes") or {}).items()}
        probe = ProbeEntry(pid, root / _field(p, "path", where, path),
                           None if subject is None else str(subject), attrs)
        if attributes_fn is not None:
            probe = ProbeEntry(probe.id, probe.path, probe.subject, {**attrs, **attributes_fn(probe)})
        probes.append(probe)
    if check_files:
        _check_files([g.path for g in gallery] + [p.path for p in probes], path, root)
    log.info("protocol %s: %d gallery images, %d probes (%d non-mated)", path.name, len(gallery),
             len(probes), sum(p.subject is None for p in probes))
    return Protocol(str(doc.get("name") or path.stem), str(doc.get("description", "")), gallery, probes,
                    root)


def save_protocol_json(protocol: Protocol, path: str | Path, *, root: str | Path | None = None) -> Path:
    """Write ``protocol`` as JSON with paths relative to ``root`` (default ``protocol.root``).

    The file records ``data_root`` relative to its own folder, so :func:`load_protocol_json` finds the
    images wherever the file is kept. Written atomically (temporary file, then rename). Returns ``path``.
    """
    path = Path(path)
    root = Path(root if root is not None else protocol.root).resolve()

    def rel(p: Path) -> str:
        return Path(os.path.relpath(Path(p).resolve(), root)).as_posix()

    probes = []
    for p in protocol.probes:
        entry = {"id": p.id, "path": rel(p.path), "subject": p.subject}
        if p.attributes:
            entry["attributes"] = dict(sorted(p.attributes.items()))
        probes.append(entry)
    doc = {
        "name": protocol.name,
        "description": protocol.description,
        "data_root": Path(os.path.relpath(root, path.parent.resolve())).as_posix(),
        "gallery": [{"subject": g.subject, "path": rel(g.path)} for g in protocol.gallery],
        "probes": probes,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _labelled_images(folder: Path) -> dict[str, list[Path]]:
    people = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
        if files:
            people[sub.name] = files
    return people


def protocol_from_folder(folder: str | Path, *, gallery_per_subject: int = _DEFAULTS.gallery_per_subject,
                         holdout_fraction: float = _DEFAULTS.holdout_fraction, seed: int = _DEFAULTS.seed, name: str | None = None) -> Protocol:
    """Split a labelled folder ``<identity>/<image>`` into gallery and probes, deterministically.

    Rule: identities are the sub-folders holding images (by extension, see ``IMAGE_EXTENSIONS``), sorted
    by name, and their images are sorted by name. ``round(holdout_fraction * n_identities)`` identities,
    drawn by ``numpy.random.default_rng(seed)``, are held out: all their images become non-mated probes.
    Each other identity enrols ``gallery_per_subject`` images drawn by a generator seeded with
    ``(seed, crc32(identity))`` (so adding a person does not change the others' split); its remaining
    images become mated probes. An identity with no more images than ``gallery_per_subject`` is enrolled
    whole and has no probe. Every probe gets ``attributes["identity"]`` (its folder name).
    Raises ProtocolError for a missing folder or one without labelled images, InvalidArgument for bad
    parameters.
    """
    folder = Path(folder).resolve()
    if gallery_per_subject < 1 or not 0.0 <= holdout_fraction < 1.0:
        raise InvalidArgument("need gallery_per_subject >= 1 and 0 <= holdout_fraction < 1, got "
                              f"{gallery_per_subject} and {holdout_fraction}")
    if not folder.is_dir():
        raise ProtocolError(f"{folder}: not a folder")
    people = _labelled_images(folder)
    if not people:
        raise ProtocolError(f"{folder}: no <identity>/<image> sub-folders with images")
    names = sorted(people)
    n_out = int(round(holdout_fraction * len(names)))
    held = set(np.random.default_rng(seed).permutation(names)[:n_out].tolist())
    gallery, probes = [], []
    for person in names:
        files = people[person]
        if person in held:
            probes += [ProbeEntry(f"{person}/{f.name}", f, None, {"identity": person}) for f in files]
            continue
        rng = np.random.default_rng([seed, zlib.crc32(person.encode("utf-8"))])
        chosen = set(rng.choice(len(files), size=min(gallery_per_subject, len(files)), replace=False).tolist())
        for i, f in enumerate(files):
            if i in chosen:
                gallery.append(GalleryEntry(person, f))
            else:
                probes.append(ProbeEntry(f"{person}/{f.name}", f, person, {"identity": person}))
    description = (f"{folder.name}: {len(names) - n_out} enrolled identities ({gallery_per_subject} gallery "
                   f"image(s) each), {n_out} held out as non-mated; seed {seed}")
    return Protocol(name or folder.name, description, gallery, probes, folder)


def _pair_path(root: Path, name: str, index: str, source: Path, line_no: int) -> Path:
    if not index.isdigit():
        raise ProtocolError(f"{source.name} line {line_no}: image number {index!r} is not an integer")
    return root / name / f"{name}_{int(index):04d}.jpg"


def load_lfw_pairs(pairs_txt: str | Path, image_root: str | Path | None = None, *,
                   check_files: bool = True) -> list[Pair]:
    """Read an LFW pairs file (View 2 ``pairs.txt``, or View 1 ``pairsDevTrain.txt``).

    Format: a header ``"<n_folds> <n_per_fold>"`` (View 1: just ``"<n>"``, one fold), then per fold
    n mated lines ``name i j`` followed by n non-mated lines ``name1 i name2 j``; image ``i`` of a
    person is ``<image_root>/<name>/<name>_<i:04d>.jpg``. ``image_root`` defaults to the file's folder.
    Raises ProtocolError on a malformed header or line, a wrong line count, or missing image files.
    """
    source = Path(pairs_txt)
    root = (Path(image_root) if image_root is not None else source.parent).resolve()
    try:
        lines = [ln.split() for ln in source.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{source}: cannot read pairs file ({exc})") from exc
    header = lines[0] if lines else []
    if not header or len(header) > 2 or not all(h.isdigit() for h in header):
        raise ProtocolError(f"{source.name}: first line must be '<n_folds> <n_per_fold>' or '<n>'")
    n_folds, per = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    if len(lines) - 1 != n_folds * per * 2:
        raise ProtocolError(f"{source.name}: expected {n_folds * per * 2} pair lines for {n_folds} folds "
                            f"of {per} + {per}, found {len(lines) - 1}")
    pairs = []
    for k, parts in enumerate(lines[1:]):
        line_no, fold, same = k + 2, k // (2 * per), (k % (2 * per)) < per
        if same and len(parts) == 3:
            a, b = (parts[0], parts[1]), (parts[0], parts[2])
        elif not same and len(parts) == 4:
            a, b = (parts[0], parts[1]), (parts[2], parts[3])
        else:
            kind = "mated 'name i j'" if same else "non-mated 'name1 i name2 j'"
            raise ProtocolError(f"{source.name} line {line_no}: expected a {kind} line, got {' '.join(parts)!r}")
        pairs.append(Pair(fold, _pair_path(root, *a, source, line_no), _pair_path(root, *b, source, line_no),
                          same, a[0], b[0]))
    if check_files:
        paths = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
        _check_files(paths, source, root)
    return pairs
