"""Load on loopback: N concurrent investigators searching real CCTV stills while an ingest job runs.

Starts ``facematch serve`` on a catalogue prepared by scripts/service_demo.py, adds load users, then for
``--seconds`` runs the searches, one operator ingest and a page poller; prints throughput, p50/p95, errors,
the page's p95 and the load average. Bounded in users, time and requests.

    python scripts/load_service.py facematch-data/service --users 20 --seconds 30
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
from pathlib import Path

import httpx

from facematch.api import Facematch
from facematch.cli.demo import find_data_root
from facematch.errors import Conflict
from facematch.settings import Settings

PASSWORD = "load-password"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def _searcher(client, name, stills, stop, lat, errors):
    r = await client.post("/api/login", json={"username": name, "password": PASSWORD})
    headers = {"X-CSRF-Token": r.json()["csrf_token"]}
    while time.monotonic() < stop:
        still = random.choice(stills)
        t = time.perf_counter()
        r = await client.post("/api/searches", headers=headers, files=[("images", (still.name, still.read_bytes()))],
                              data={"case": "LOAD-1", "reason": "load test", "top": "10"})
        (lat if r.status_code == 201 else errors).append(time.perf_counter() - t if r.status_code == 201 else r.status_code)


async def _pages(client, stop, lat):
    r = await client.post("/api/login", json={"username": "nina", "password": "demo-password"})
    while time.monotonic() < stop:
        t = time.perf_counter()
        r = await client.get("/", headers={"Accept": "text/html"})
        if r.status_code == 200:
            lat.append(time.perf_counter() - t)
        await asyncio.sleep(0.25)


async def _run(base, users, seconds, stills, ingest_root):
    lat, errors, pages = [], [], []
    limits = httpx.Limits(max_connections=users + 4)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as shared:
        op = await shared.post("/api/login", json={"username": "otto", "password": "demo-password"})
        job = await shared.post("/api/ingest", data={"folder": str(ingest_root)},
                                headers={"X-CSRF-Token": op.json()["csrf_token"]})
        stop = time.monotonic() + seconds
        started = time.monotonic()
        clients = [httpx.AsyncClient(base_url=base, timeout=120) for _ in range(users + 1)]
        await asyncio.gather(*[_searcher(clients[i], f"load{i:02d}", stills, stop, lat, errors) for i in range(users)],
                             _pages(clients[-1], stop, pages))
        elapsed = time.monotonic() - started
        ingest = (await shared.get(f"/api/ingest/{job.json()['id']}")).json() if job.status_code == 202 else job.json()
        for c in clients:
            await c.aclose()
    return lat, errors, pages, elapsed, ingest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root = find_data_root(None)
    fm = Facematch(settings=Settings.from_env(data_dir=Path(args.data_dir)))
    for i in range(args.users):
        try:
            fm.accounts.add_user(f"load{i:02d}", PASSWORD, agency="north", roles=["investigator"], actor="load")
        except Conflict:
            pass
    stills = sorted((root / "frmdb-dev" / "cctv_crops").glob("04*/Img_0*.jpg"))
    ingest_root = Path(tempfile.mkdtemp(prefix="facematch-load-"))
    for subject in ("061", "062"):
        shutil.copytree(root / "frmdb-dev" / "mugshots" / subject, ingest_root / subject)
    port = _port()
    server = subprocess.Popen([sys.executable, "-m", "facematch", "--data-dir", args.data_dir, "serve", "--port",
                               str(port), "--workers", str(args.workers), "--ingest-root", str(ingest_root)])
    try:
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/login", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        lat, errors, pages, elapsed, ingest = asyncio.run(
            _run(f"http://127.0.0.1:{port}", args.users, args.seconds, stills, ingest_root))
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(ingest_root, ignore_errors=True)
    print(f"{args.users} users, {elapsed:.0f} s, {args.workers} workers: {len(lat)} searches "
          f"({len(lat) / elapsed:.2f}/s), errors {len(errors)} {sorted(set(errors))}")
    print(f"search latency p50 {_pct(lat, 0.5):.2f} s, p95 {_pct(lat, 0.95):.2f} s; "
          f"page p95 {_pct(pages, 0.95) * 1000:.0f} ms over {len(pages)} loads")
    print(f"ingest job meanwhile: {ingest.get('state')} {ingest.get('done')}/{ingest.get('total')}; "
          f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
