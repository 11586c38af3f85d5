"""The demo job: ingest a real custody-style gallery, search it with real probe images, print leads.

With ``../shared/data`` (or ``$FACEMATCH_TEST_DATA``): frmdb-dev subjects 040-060 enrolled with five
eye-level mugshot views plus LFW distractors, then real CCTV crops searched, one of a person who is not
enrolled. Without it: the astronaut photograph shipped with scikit-image, enrolled, and searched with an
altered copy of itself (halved, mirrored, recompressed): a smoke test, not a measure of accuracy.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Callable

from facematch.api import Facematch
from facematch.cli import render
from facematch.settings import Settings

__all__ = ["DEMO_SUBJECTS", "DEMO_VIEWS", "DEMO_PROBES", "DEMO_DISTRACTORS", "find_data_root", "run_demo"]

DEMO_SUBJECTS = [f"{n:03d}" for n in range(40, 61)]
DEMO_VIEWS = ["Img_13.jpg", "Img_23.jpg", "Img_33.jpg", "Img_43.jpg", "Img_53.jpg"]
DEMO_PROBES = [("040", "Img_03.jpg"), ("045", "Img_02.jpg"), ("052", "Img_03.jpg"), ("062", "Img_03.jpg")]
DEMO_DISTRACTORS = 150


def find_data_root(explicit: Path | None = None) -> Path | None:
    """The shared face-data folder: ``explicit``, ``$FACEMATCH_TEST_DATA``, or ``../shared/data``."""
    candidates = [explicit] if explicit else []
    if os.environ.get("FACEMATCH_TEST_DATA"):
        candidates.append(Path(os.environ["FACEMATCH_TEST_DATA"]))
    candidates.append(Path.cwd().parent / "shared" / "data")
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for path in candidates:
        if path and (path / "frmdb-dev" / "mugshots").is_dir():
            return path
    return None


def run_demo(settings: Settings, *, workers: int | None = None, data_root: Path | None = None,
             echo: Callable[[str], None] = print) -> None:
    """Run the demo against the catalogue in ``settings.data_dir`` (re-running skips stored images)."""
    root = find_data_root(data_root)
    fm = Facematch(settings=settings)
    with tempfile.TemporaryDirectory(prefix="facematch-demo-") as scratch:
        if root:
            echo(f"Demo data: {root} (frmdb-dev mugshots of {len(DEMO_SUBJECTS)} subjects x "
                 f"{len(DEMO_VIEWS)} eye-level views, {DEMO_DISTRACTORS} LFW distractors; CCTV crops as probes)")
            manifest, probes, truth = _frmdb_inputs(root, Path(scratch))
        else:
            echo("Demo data: ../shared/data not found; using scikit-image's astronaut photograph "
                 "(a smoke test: the probe is an altered copy of the enrolled image)")
            manifest, probes, truth = _packaged_inputs(Path(scratch))
        summary = fm.ingest_custody(manifest, workers=workers)
        echo("\n".join(render.ingest_lines(summary)))
        for probe, expected in zip(probes, truth):
            result = fm.search([probe], top=5, case="DEMO", reason="facematch demo", user="demo")
            echo("")
            echo("\n".join(render.search_lines(result)))
            echo(f"  [demo] true identity: {expected}; " + _where(result, expected))


def _where(result, expected: str | None) -> str:
    if expected is None:
        return "not enrolled: every candidate above is a false lead."
    for probe in result.probes:
        for c in probe.subjects:
            if c.subject == expected:
                return f"found at rank {c.rank} ({c.band})."
    if all(p.outcome != "searched" for p in result.probes):
        return "no face could be searched in this probe."
    return "not in the top 5."


def _frmdb_inputs(root: Path, scratch: Path):
    rows = [(str(root / "frmdb-dev" / "mugshots" / s / v), f"frmdb-{s}") for s in DEMO_SUBJECTS for v in DEMO_VIEWS]
    lfw = root / "lfw"
    if lfw.is_dir():
        for person in sorted(p for p in lfw.iterdir() if p.is_dir())[:DEMO_DISTRACTORS]:
            first = sorted(person.iterdir())[0]
            rows.append((str(first), f"lfw-{person.name}"))
    manifest = scratch / "custody.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "subject_id", "source"])
        writer.writerows([(p, s, "facematch demo") for p, s in rows])
    probes = [root / "frmdb-dev" / "cctv_crops" / s / f for s, f in DEMO_PROBES]
    truth = [f"frmdb-{s}" if s in DEMO_SUBJECTS else None for s, _ in DEMO_PROBES]
    return manifest, probes, truth


def _packaged_inputs(scratch: Path):
    import cv2
    from skimage import data

    astronaut = data.astronaut()
    gallery = scratch / "custody" / "astronaut-eileen-collins"
    gallery.mkdir(parents=True)
    cv2.imwrite(str(gallery / "astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    altered = cv2.resize(astronaut[:, ::-1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    probe = scratch / "probe-astronaut-altered.jpg"
    cv2.imwrite(str(probe), cv2.cvtColor(altered, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 60])
    return scratch / "custody", [probe], ["astronaut-eileen-collins"]
