"""Load on loopback: N concurrent investigators searching real CCTV stills while an ingest job runs.

Starts ``facematch serve`` on a catalogue prepared by scripts/service_demo.py, adds load users, then for
``--seconds`` runs the searches (each user: one search after another, a CCTV still of a subject enrolled
in the demo gallery), one operator ingest of a folder of mugshots under an ingest root, and a page poller
(GET of a server-rendered page, by default the load case's page, every 0.25 s). Prints throughput
(searches completed within the window / window), p50/p95 latency, errors by kind, the page's p50/p95
(also split into while the ingest ran and after), the ingest job's progress and the load average.
Bounded in users, time and requests; the server is always stopped.

    python scripts/load_service.py facematch-data/service --users 20 --seconds 60

A transport error (connection reset, server gone) is counted as an error of its kind with the idle time
of that connection before the request, never raised: one failed request does not end the run. The
server's stderr goes to a log file whose tail is printed when anything failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from facematch.api import Facematch
from facematch.cli.demo import DEMO_SUBJECTS, find_data_root
from facematch.errors import Conflict
from facematch.settings import Settings

PASSWORD = "load-password"
CASE = "LOAD-1"
#: Seconds an idle client connection is reused. Below the server's keep-alive timeout (uvicorn's
#: ``timeout_keep_alive``), so the client never sends on a connection the server is closing.
CLIENT_KEEPALIVE_S = 2.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _client(base: str, timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=4, keepalive_expiry=float(os.environ.get("LOAD_KEEPALIVE_S", CLIENT_KEEPALIVE_S)))
    return httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits)


class Tally:
    """What every task records: search latencies, errors by kind, page loads, with times from the start."""

    def __init__(self, started: float, stop: float):
        self.started, self.stop = started, stop
        self.searches: list[tuple[float, float]] = []   # (finished at, latency)
        self.errors: list[tuple[str, float, float]] = []  # (kind, at, idle before the request)
        self.pages: list[tuple[float, float]] = []      # (at, latency)
        self.ingest: list[tuple[float, dict]] = []

    def error(self, kind: str, idle: float) -> None:
        self.errors.append((kind, time.monotonic() - self.started, idle))


async def _request(client: httpx.AsyncClient, tally: Tally, last: list[float], method: str, url: str, **kw):
    """One request; a transport error is tallied (with the connection's idle time) and gives ``None``."""
    idle = time.monotonic() - last[0]
    try:
        r = await client.request(method, url, **kw)
    except httpx.TransportError as exc:
        tally.error(type(exc).__name__, idle)
        return None
    finally:
        last[0] = time.monotonic()
    return r


async def _login(client, tally, last, name: str, password: str) -> dict | None:
    for _ in range(3):
        r = await _request(client, tally, last, "POST", "/api/login", json={"username": name, "password": password,
                                                                          "agency": "north"})
        if r is not None and r.status_code == 200:
            return {"X-CSRF-Token": r.json()["csrf_token"]}
        if r is not None:
            tally.error(f"login HTTP {r.status_code}", 0.0)
        await asyncio.sleep(1)
    return None


async def _searcher(base, timeout, name, stills, tally: Tally, think: float):
    last = [time.monotonic()]
    async with _client(base, timeout) as client:
        headers = await _login(client, tally, last, name, PASSWORD)
        while headers and time.monotonic() < tally.stop:
            still = random.choice(stills)
            t = time.perf_counter()
            r = await _request(client, tally, last, "POST", "/api/searches", headers=headers,
                               files=[("images", (still.name, still.read_bytes(), "image/jpeg"))],
                               data={"case": CASE, "reason": "load test", "top": "10"})
            if r is None:
                await asyncio.sleep(0.5)
            elif r.status_code == 201:
                tally.searches.append((time.monotonic() - tally.started, time.perf_counter() - t))
                if think:  # the investigator reads the list before the next search (exponential, mean `think`)
                    await asyncio.sleep(min(random.expovariate(1 / think), 5 * think))
            else:
                tally.error(f"HTTP {r.status_code}", 0.0)
                await asyncio.sleep(float(r.headers.get("retry-after", 1)) if r.status_code == 429 else 0.5)


async def _pages(base, timeout, page, tally: Tally):
    last = [time.monotonic()]
    async with _client(base, timeout) as client:
        if not await _login(client, tally, last, "nina", "demo-password"):
            return
        while time.monotonic() < tally.stop:
            t = time.perf_counter()
            r = await _request(client, tally, last, "GET", page, headers={"Accept": "text/html"})
            if r is not None and r.status_code == 200:
                tally.pages.append((time.monotonic() - tally.started, time.perf_counter() - t))
            elif r is not None:
                tally.error(f"page HTTP {r.status_code}", 0.0)
            await asyncio.sleep(0.25)


async def _ingest(base, timeout, ingest_root, tally: Tally):
    """The operator's ingest of a server folder, polled every second until it ends (or the window does)."""
    last = [time.monotonic()]
    async with _client(base, timeout) as client:
        headers = await _login(client, tally, last, "otto", "demo-password")
        if not headers:
            return
        r = await _request(client, tally, last, "POST", "/api/ingest", data={"folder": str(ingest_root)},
                           headers=headers)
        if r is None or r.status_code != 202:
            tally.error(f"ingest HTTP {getattr(r, 'status_code', '-')}", 0.0)
            return
        job = r.json()
        while job.get("state") == "running" and time.monotonic() < tally.stop + 120:
            await asyncio.sleep(1)
            r = await _request(client, tally, last, "GET", f"/api/ingest/{job['id']}")
            if r is not None and r.status_code == 200:
                job = r.json()
                tally.ingest.append((time.monotonic() - tally.started, job))


async def _run(base, users, seconds, stills, ingest_root, page, timeout, think) -> tuple[Tally, float]:
    started = time.monotonic()
    tally = Tally(started, started + seconds)
    await asyncio.gather(_ingest(base, timeout, ingest_root, tally),
                         *[_searcher(base, timeout, f"load{i:02d}", stills, tally, think) for i in range(users)],
                         _pages(base, timeout, page, tally))
    return tally, time.monotonic() - started


def _report(tally: Tally, args, drained: float) -> bool:
    window = args.seconds
    within = [lat for at, lat in tally.searches if at <= window]
    lat = [lat for _, lat in tally.searches]
    kinds = Counter(kind for kind, _, _ in tally.errors)
    pace = f"think time {args.think:g} s (mean)" if args.think else "back to back"
    print(f"{args.users} users ({pace}), {window:.0f} s window (+{drained - window:.0f} s to drain), {args.workers} workers: "
          f"{len(within)} searches completed within the window ({len(within) / window:.2f}/s), {len(lat)} in all")
    print(f"search latency p50 {_pct(lat, 0.5):.2f} s, p95 {_pct(lat, 0.95):.2f} s, max {max(lat, default=0):.2f} s")
    print(f"errors: {len(tally.errors)} {dict(kinds)}")
    for kind, at, idle in tally.errors[:10]:
        print(f"  {kind} at {at:.1f} s, connection idle {idle:.2f} s before the request")
    ended = next((at for at, job in tally.ingest if job.get("state") != "running"), None)
    last = tally.ingest[-1][1] if tally.ingest else {}
    pages = [lat for _, lat in tally.pages]
    print(f"page {args.page}: p50 {_pct(pages, 0.5) * 1000:.0f} ms, p95 {_pct(pages, 0.95) * 1000:.0f} ms "
          f"over {len(pages)} loads")
    if ended is not None:
        during = [lat for at, lat in tally.pages if at <= ended]
        after = [lat for at, lat in tally.pages if at > ended]
        print(f"  while the ingest ran (0-{ended:.0f} s): p95 {_pct(during, 0.95) * 1000:.0f} ms over {len(during)}; "
              f"after: p95 {_pct(after, 0.95) * 1000:.0f} ms over {len(after)}")
    print(f"ingest job: {last.get('state')} {last.get('done')}/{last.get('total')}"
          + (f", ended at {ended:.0f} s" if ended is not None else "")
          + (f", {last.get('summary', {}).get('images_per_second')} images/s" if last.get("summary") else ""))
    print(f"load average {tuple(round(v, 2) for v in os.getloadavg())}")
    return bool(tally.errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ingest-subjects", default="061,062,063,064",
                        help="frmdb-dev mugshot folders the operator ingests (not in the demo gallery)")
    parser.add_argument("--page", default=f"/cases/{CASE}", help="server-rendered page polled meanwhile")
    parser.add_argument("--think", type=float, default=0.0,
                        help="mean seconds a user reads the results before the next search (0: back to back)")
    parser.add_argument("--timeout", type=float, default=120, help="client timeout per request, seconds")
    args = parser.parse_args()
    if not (1 <= args.users <= 50 and 1 <= args.seconds <= 300):
        sys.exit("keep it bounded: 1-50 users, 1-300 seconds")
    root = find_data_root(None)
    fm = Facematch(settings=Settings.from_env(data_dir=Path(args.data_dir)))
    for i in range(args.users):
        try:
            fm.accounts.add_user(f"load{i:02d}", PASSWORD, agency="north", roles=["investigator"], actor="load")
        except Conflict:
            pass
    fm.close()
    # probes: CCTV stills (Img_0x: the CCTV views) of subjects enrolled in the demo gallery
    stills = sorted(p for s in DEMO_SUBJECTS for p in (root / "frmdb-dev" / "cctv_crops" / s).glob("Img_0*.jpg"))
    work = Path(tempfile.mkdtemp(prefix="facematch-load-"))
    ingest_root = work / "ingest"
    for subject in args.ingest_subjects.split(","):
        shutil.copytree(root / "frmdb-dev" / "mugshots" / subject.strip(), ingest_root / subject.strip())
    port = _port()
    server_log = work / "server.log"
    with open(server_log, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "facematch", "--data-dir", args.data_dir, "serve", "--port",
                                   str(port), "--workers", str(args.workers), "--ingest-root", str(ingest_root)],
                                  stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    failed = True
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            try:
                httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before answering")
        print(f"{len(stills)} CCTV stills of {len(DEMO_SUBJECTS)} enrolled subjects; ingesting "
              f"{sum(1 for _ in ingest_root.rglob('*.*'))} mugshots from {ingest_root}", flush=True)
        tally, drained = asyncio.run(_run(f"http://127.0.0.1:{port}", args.users, args.seconds, stills, ingest_root,
                                          args.page, args.timeout, args.think))
        alive = server.poll() is None
        failed = _report(tally, args, drained) or not alive
        print(f"server {'still running' if alive else f'exited with {server.returncode}'} at the end")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        if failed and server_log.exists():
            print("server log (tail):\n" + server_log.read_text(errors="replace")[-3000:])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
