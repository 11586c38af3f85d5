"""Reliability of concurrent writers, deletions and crashes on real faces, over many rounds.

The slow variants of tests/test_integrity_index.py. Each round uses a fresh data directory and real
``facematch`` CLI processes on frmdb-dev mugshots, then checks, without opening (and so repairing) the
index, that the saved index file holds exactly the catalogue's face ids and that every vector equals the
stored embedding (``Facematch.verify_index``), that no image is stored twice and no ``.tmp`` file is left.

Scenarios:
  concurrent  two ingests at once (disjoint sets, plus a few images both ingest)
  race        an ingest, a ``delete subject`` of an enrolled subject and a second ingest at once
  kill        an ingest SIGKILLed at a random moment (or at a named point of an index save), then re-run

Prints per scenario: rounds, failures, seconds per round (mean, max), faces in the catalogues checked;
then each failure.

Example:
  nice -n 5 .venv/bin/python scripts/reliability.py --rounds 3 --images 10
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facematch.api import Facematch  # noqa: E402
from facematch.settings import Settings  # noqa: E402
from facematch.store.index_files import FAULT_VARIABLE  # noqa: E402

VIEWS = ("Img_33.jpg", "Img_23.jpg", "Img_43.jpg", "Img_32.jpg", "Img_34.jpg")
SUBJECTS = [f"{n:03d}" for n in range(40, 68)]
FAULTS = ("index-save-written", "index-save-renamed")


def _images(mugshots: Path, subjects: list[str], n: int) -> list[tuple[Path, str]]:
    pairs = [(mugshots / s / v, s) for s in subjects for v in VIEWS]
    return pairs[:n]


def _manifest(path: Path, images: list[tuple[Path, str]]) -> Path:
    path.write_text("path,subject_id\n" + "".join(f"{p},{s}\n" for p, s in images))
    return path


def _cli(root: Path, *args, fault: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != FAULT_VARIABLE} | {"PYTHONPATH": str(REPO)}
    if fault:
        env[FAULT_VARIABLE] = fault
    cmd = [sys.executable, "-m", "facematch", "--data-dir", str(root / "data"), "--index-dir",
           str(root / "indexes"), *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _ingest(root: Path, manifest: Path, fault: str | None = None) -> subprocess.Popen:
    return _cli(root, "ingest", "custody", manifest, "--workers", "1", "--batch-size", "2", fault=fault)


def _done(*procs: subprocess.Popen) -> list[str]:
    problems = []
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            problems.append(f"{' '.join(proc.args[7:9])} exited {proc.returncode}: {err.decode()[-300:]}")
    return problems


def _open(root: Path) -> Facematch:
    return Facematch(settings=Settings(data_dir=root / "data", index_dir=root / "indexes", workers=1))


def _check(root: Path, absent_subject: str | None = None) -> list[str]:
    """What is wrong with the saved catalogue and index (nothing opened for search, nothing repaired)."""
    with _open(root) as fm:
        problems = []
        check = fm.verify_index()["custody"]
        _FACES.append(check["catalogue_faces"])
        if check["catalogue_faces"] == 0:
            problems.append("no face stored")
        if not check["ok"]:
            problems.append(f"index differs: {check}")
        dup = fm.catalogue.conn.execute("SELECT COUNT(*) - COUNT(DISTINCT sha256) FROM images").fetchone()[0]
        if dup:
            problems.append(f"{dup} image(s) stored twice")
        if list(fm.index_store.folder.glob(".*.tmp")):
            problems.append("temporary files left")
        if absent_subject and fm.catalogue.subject_id(absent_subject) is not None:
            problems.append(f"subject {absent_subject} still in the catalogue")
        return problems


def _wait_images(root: Path, n: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (root / "data" / "catalogue.sqlite3").exists():
            with _open(root) as fm:
                if fm.catalogue.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] >= n:
                    return
        time.sleep(0.2)


def concurrent(root: Path, mugshots: Path, n: int, rng: random.Random) -> list[str]:
    subjects = rng.sample(SUBJECTS, len(SUBJECTS))
    a = _images(mugshots, subjects[:14], n)
    b = _images(mugshots, subjects[14:], n) + a[: max(1, n // 5)]  # a few images both ingest
    procs = [_ingest(root, _manifest(root / f"{name}.csv", images)) for name, images in (("a", a), ("b", b))]
    return _done(*procs) + _check(root)


def race(root: Path, mugshots: Path, n: int, rng: random.Random) -> list[str]:
    subjects = rng.sample(SUBJECTS, len(SUBJECTS))
    doomed = subjects[0]
    problems = _done(_ingest(root, _manifest(root / "doomed.csv", _images(mugshots, [doomed], 4))))
    first = _ingest(root, _manifest(root / "a.csv", _images(mugshots, subjects[1:14], n)))
    _wait_images(root, 4 + rng.randint(1, max(1, n // 2)))
    delete = _cli(root, "delete", "subject", doomed, "--reason", "reliability")
    second = _ingest(root, _manifest(root / "b.csv", _images(mugshots, subjects[14:], max(2, n // 2))))
    return problems + _done(first, delete, second) + _check(root, absent_subject=doomed)


def kill(root: Path, mugshots: Path, n: int, rng: random.Random) -> list[str]:
    manifest = _manifest(root / "a.csv", _images(mugshots, rng.sample(SUBJECTS, 10), n))
    problems = _done(_ingest(root, _manifest(root / "first.csv", _images(mugshots, ["067"], 2))))
    fault = rng.choice((None, *FAULTS))
    proc = _ingest(root, manifest, fault=fault)
    if fault is None:
        _wait_images(root, 2 + rng.randint(1, max(1, n - 3)))
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=900)
    if proc.returncode != -signal.SIGKILL:
        problems.append(f"the ingest was not killed ({fault or 'timed kill'}): exit {proc.returncode}")
    problems += _done(_ingest(root, manifest))
    with _open(root) as fm:
        statuses = [r[0] for r in fm.catalogue.conn.execute("SELECT status FROM ingest_runs ORDER BY id")]
    if statuses != ["finished", "interrupted", "finished"]:
        problems.append(f"run statuses {statuses}")
    return problems + _check(root)


SCENARIOS = {"concurrent": concurrent, "race": race, "kill": kill}
_FACES: list[int] = []  # faces in the catalogue at each round's check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario [3]")
    parser.add_argument("--images", type=int, default=10, help="images per ingest [10]")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append", help="[all]")
    parser.add_argument("--data-root", type=Path, default=Path(os.environ.get(
        "FACEMATCH_TEST_DATA", REPO.parent / "shared" / "data")), help="face data [../shared/data]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mugshots = args.data_root / "frmdb-dev" / "mugshots"
    if not mugshots.exists():
        parser.error(f"no frmdb-dev mugshots under {args.data_root}")
    rng, failures = random.Random(args.seed), []
    print(f"{'scenario':<12} {'rounds':>6} {'failures':>8} {'mean s':>8} {'max s':>8} {'faces checked':>14}")
    for name in args.scenario or list(SCENARIOS):
        times, failed = [], 0
        _FACES.clear()
        for round_no in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix=f"fm-rel-{name}-") as tmp:
                started = time.perf_counter()
                problems = SCENARIOS[name](Path(tmp), mugshots, args.images, rng)
                times.append(time.perf_counter() - started)
            if problems:
                failed += 1
                failures.append(f"{name} round {round_no + 1}: " + "; ".join(problems))
        print(f"{name:<12} {args.rounds:>6} {failed:>8} {sum(times) / len(times):>8.1f} {max(times):>8.1f} "
              f"{sum(_FACES):>14}", flush=True)
    for line in failures:
        print("FAILED", line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
