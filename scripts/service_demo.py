"""Set up the demo catalogue for ``make serve``: two agencies, one user per role, the frmdb-dev demo gallery
in north-custody. Idempotent: what exists already is kept. Usage: python scripts/service_demo.py DATA_DIR"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from facematch.api import Facematch
from facematch.cli.demo import DEMO_SUBJECTS, DEMO_VIEWS, find_data_root
from facematch.errors import Conflict
from facematch.settings import Settings

PASSWORD = "demo-password"
USERS = {"nina": ["investigator"], "rita": ["reviewer"], "ravi": ["reviewer"], "sue": ["supervisor"],
         "otto": ["operator"], "adam": ["admin"]}


def main(data_dir: str) -> None:
    fm = Facematch(settings=Settings.from_env(data_dir=Path(data_dir)))
    accounts = fm.accounts
    for agency in ("north", "south"):
        try:
            accounts.add_agency(agency, actor="service-demo")
        except Conflict:
            pass
    for name, roles in USERS.items():
        try:
            accounts.add_user(name, PASSWORD, agency="north", roles=roles, actor="service-demo")
        except Conflict:
            pass
    root = find_data_root(None)
    if root is None:
        sys.exit("../shared/data not found: the service demo needs frmdb-dev")
    with tempfile.TemporaryDirectory() as scratch:
        manifest = Path(scratch) / "custody.csv"
        rows = [f"{root / 'frmdb-dev' / 'mugshots' / s / v},frmdb-{s}" for s in DEMO_SUBJECTS for v in DEMO_VIEWS]
        manifest.write_text("path,subject_id\n" + "\n".join(rows) + "\n")
        summary = fm.ingest_custody(manifest, workers=2, user="service-demo", collection="north-custody")
    print(f"north-custody: {summary.total} images ({summary.to_dict().get('counts', '')})")
    print(f"users (log in with agency north, password {PASSWORD!r}): " + ", ".join(f"{u} ({'/'.join(r)})" for u, r in USERS.items()))
    print(f"probes to try: {root / 'frmdb-dev' / 'cctv_crops'}/040 .. 060")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "facematch-data/service")
