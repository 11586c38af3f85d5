"""Benchmark the supervisor's audit view (facematch.store.audit_query) on a large synthetic audit log.

Writes N chained entries (5 users of 2 agencies, 2,000 searches in 400 cases, one entry every 30 s)
into a fresh catalogue under --root, then reports, per filter, the CPU time (thread_time) of the first
page and of the next pages (100 entries each), beside the former approach (the newest 20,000 entries
read and filtered in Python), and the CPU time to build each index of schema v9 on that log.

Example:  .venv/bin/python scripts/bench_audit_view.py 200000 --root /tmp/bench-audit
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import time
from pathlib import Path

from facematch.api import Facematch
from facematch.settings import Settings
from facematch.store import catalogue as catalogue_module
from facematch.store.audit_query import AuditFilter, audit_page

USERS = [("sue", "north"), ("nina", "north"), ("rita", "north"), ("sam", "south"), ("sol", "south")]
ACTIONS = ["search", "review", "review.first", "review.second", "decision", "login", "view.image"]
FILTERS = [("no filter", {}), ("actor rita", {"actor": "rita"}), ("action review.second", {"action": "review.second"}),
           ("case OP-7", {"case": "OP-7"}), ("one day, the oldest", {"since": "2025-01-02", "until": "2025-01-02"}),
           ("actor+action+case", {"actor": "nina", "action": "search", "case": "OP-9"})]


def build(root: Path, n: int) -> Facematch:
    shutil.rmtree(root, ignore_errors=True)
    fm = Facematch(settings=Settings(data_dir=root / "data", index_dir=root / "indexes"))
    for agency in ("north", "south"):
        fm.accounts.add_agency(agency, actor="setup")
    for name, agency in USERS:
        fm.accounts.add_user(name, "correct horse battery", agency=agency, roles=["supervisor"], actor="setup")
    users = {u.login: u for u in fm.accounts.users()}
    with fm.catalogue.atomic() as conn:
        for sid in range(1, 2001):
            owner = users["nina" if sid % 2 else "sam"]
            ref = f"OP-{sid % 200 * 2 + sid % 2}"
            case_id = fm.accounts.case_id(owner.agency_id, ref, create=True)
            conn.execute("INSERT INTO searches (id, created_at, user, case_ref, reason, params, bands, "
                         "gallery_subjects, gallery_faces) VALUES (?, '2025', ?, ?, 'x', '{}', '{}', 0, 0)",
                         (sid, owner.username, ref))
            conn.execute("INSERT INTO search_owners VALUES (?, ?, ?, ?, '[]')", (sid, owner.id, owner.agency_id, case_id))
    start, tick = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), iter(range(10**9))
    real_now = catalogue_module.utc_now
    catalogue_module.utc_now = lambda: (start + dt.timedelta(seconds=30 * next(tick))).isoformat()
    rng = random.Random(1)
    began = time.perf_counter()
    try:
        with fm.catalogue.atomic():
            for _ in range(n):
                action = rng.choice(ACTIONS)
                details = {} if action == "login" else {"search_id": rng.randint(1, 2000), "reason": "synthetic"}
                fm.catalogue.audit("{}@{}".format(*rng.choice(USERS)), action, details)  # as users are recorded
    finally:
        catalogue_module.utc_now = real_now
    print(f"{n:,} entries written in {time.perf_counter() - began:.1f} s wall")
    return fm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", type=int)
    parser.add_argument("--root", type=Path, default=Path("/tmp/bench-audit"))
    args = parser.parse_args()
    fm = build(args.root, args.entries)
    conn, north = fm.catalogue.conn, fm.accounts.agency_id("north")
    for label, filters in FILTERS:
        where = AuditFilter(north, **filters)
        t0 = time.thread_time()
        _, before = audit_page(conn, where, limit=100)
        t1 = time.thread_time()
        pages = 0
        while before is not None and pages < 4:
            _, before = audit_page(conn, where, before=before, limit=100)
            pages += 1
        t2 = time.thread_time()
        rows = fm.catalogue.audit_entries(limit=20_000)
        [r for r in rows if r["actor"] in {"sue", "nina", "rita"} and all(r.get(k) == v for k, v in filters.items()
                                                                           if k in ("actor", "action"))][:500]
        t3 = time.thread_time()
        more = f"next pages {1000 * (t2 - t1) / pages:5.1f} ms each" if pages else "one page only      "
        print(f"{label:22s} first page {1000 * (t1 - t0):5.1f} ms CPU, {more}; "
              f"former (newest 20,000 filtered in Python) {1000 * (t3 - t2):4.0f} ms")
    for name in ("audit_log_actor", "audit_log_action", "audit_log_at", "audit_log_search", "audit_log_case"):
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
        conn.execute(f"DROP INDEX {name}")
        t0 = time.thread_time()
        conn.execute(sql)
        print(f"build {name}: {time.thread_time() - t0:.2f} s CPU")
    fm.close()


if __name__ == "__main__":
    main()
