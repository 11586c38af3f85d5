"""Time the whole CLI person-level search (import, models, stills, ranking, storing) for one or more checkouts.

Runs ``python -m facematch --data-dir DATA search STILLS... --one-person --reason bench --json`` with
``PYTHONPATH`` set to each checkout in turn, ``--runs`` times, interleaved (A B A B ...) so both see the
same load. Reports per run the wall time, the CPU time of the command and its children (user + sys,
from ``os.wait4``), and the 1-minute load average before it started; then the median of each.

The machine's kernel shares CPU fairly between sessions (autogroups): while another session keeps the
cores busy, a command gets its session's share however many processes it runs, so parallel analysis
only shows on an idle machine; ``--when-idle`` waits for one and each round says how idle it was.

Example (the gallery of protocols/frmdb-lowres-cctv.json ingested into /tmp/pp-data):
    python scripts/bench_person_search.py --data-dir /tmp/pp-data --runs 5 \\
        --checkout before=/tmp/main-checkout --checkout after=. --checkout serial=.@"--workers 1" \\
        ../shared/data/frmdb-lowres/cctv_frames/027/Img_0{1..5}.jpg
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_once(checkout: Path, data_dir: Path, stills: list[str], extra: list[str]) -> tuple[float, float, int]:
    """(wall s, CPU s of the command and its children, exit status) of one CLI search."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    cmd = [sys.executable, "-m", "facematch", "--data-dir", str(data_dir), "--index-dir",
           str(data_dir / "indexes"), "search", *stills, "--one-person", "--reason", "bench", "--json", *extra]
    started = time.perf_counter()
    # run from the checkout: ``python -m`` puts the working directory first on sys.path, before PYTHONPATH
    proc = subprocess.Popen(cmd, env=env, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode:
        print(err, file=sys.stderr)
    # children of the command (its worker processes) are included in its rusage once it reaped them
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def idle_share(seconds: float = 2.0) -> float:
    """Share of the machine's CPU time that was idle over the next ``seconds`` (from /proc/stat)."""
    def sample():
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stills", nargs="+")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--checkout", action="append", required=True,
                        help="NAME=PATH or NAME=PATH@OPTIONS (this one's search options, e.g. @--workers 1; repeat)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--when-idle", type=float, default=0.0, metavar="SHARE",
                        help="start each round only once the CPUs were at least SHARE idle over 2 s (e.g. 0.8); "
                        "measures an unloaded machine on a shared one")
    parser.add_argument("--extra", default="", help="more search options, e.g. '--workers 1'")
    args = parser.parse_args()
    args.data_dir = args.data_dir.resolve()
    args.stills = [str(Path(still).resolve()) for still in args.stills]
    checkouts = []
    for spec in args.checkout:
        name, rest = spec.split("=", 1)
        path, _, options = rest.partition("@")
        checkouts.append((name, Path(path).resolve(), options.split()))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in checkouts}
    for run in range(1, args.runs + 1):
        while (idle := idle_share()) < args.when_idle:
            time.sleep(10)
        for name, path, options in checkouts:
            load = os.getloadavg()[0]
            wall, cpu, rc = run_once(path, args.data_dir, args.stills, args.extra.split() + options)
            times[name].append((wall, cpu))
            print(f"run {run} {name:>8}: wall {wall:5.2f} s  CPU {cpu:5.2f} s  load {load:5.2f}  "
                  f"(CPUs {idle:.0%} idle before the round)  rc {rc}", flush=True)
    for name, rows in times.items():
        print(f"median {name:>8}: wall {statistics.median(w for w, _ in rows):5.2f} s "
              f"(min {min(w for w, _ in rows):.2f}, max {max(w for w, _ in rows):.2f})  "
              f"CPU {statistics.median(c for _, c in rows):5.2f} s")


if __name__ == "__main__":
    main()
