"""A multi-still search analysed in worker processes (facematch/search/parallel.py) gives exactly what one
process gives: the same rows, detections, descriptors, candidates and distances; a corrupt still among
good ones is still reported on its own row."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, require_data

from facematch.search.parallel import can_fork, probe_workers
from facematch.service import worker
from facematch.settings import Settings

SUBJECT = "041"


@pytest.fixture(scope="module")
def stills(tmp_path_factory):
    """Three real CCTV crops of one enrolled person with a corrupt JPEG second among them."""
    crops = require_data("frmdb-dev", "cctv_crops", SUBJECT)
    corrupt = tmp_path_factory.mktemp("corrupt") / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF truncated here")
    good = sorted(crops.glob("Img_0*.jpg"))[:3]
    return [good[0], corrupt, *good[1:]]


_FRESH_SEARCH = """
import json, logging, sys
from pathlib import Path
from facematch.api import Facematch

def comparable(result):
    doc = result.to_dict()
    del doc["search_id"], doc["created_at"]
    return doc

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    data, stills = Path(sys.argv[1]), sys.argv[2:]
    fm = Facematch(data / "data", index_dir=data / "indexes")
    kwargs = dict(one_person=True, top=5, user="dc-parallel", reason="parallel test")
    parallel = fm.search(stills, workers=2, **kwargs)  # a fresh process: forked workers
    serial = fm.search(stills, workers=1, **kwargs)
    print(json.dumps({"same": comparable(parallel) == comparable(serial), "doc": comparable(parallel)}))
"""

_FRESH_ANALYSIS = """
import json, sys
from dataclasses import asdict
from pathlib import Path
import numpy as np
from facematch.faces.pipeline import FacePipeline
from facematch.search.parallel import analyse_probes_parallel, can_fork
from facematch.search.ranking import analyse_probes
from facematch.settings import Settings

if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    paths, pipeline = [Path(p) for p in sys.argv[1:]], FacePipeline(Settings())
    fresh = can_fork()
    parallel = analyse_probes_parallel(pipeline, paths, workers=2, max_pixels=50_000_000, one_person=True)
    after = can_fork()  # dlib ran here now: no fork any more
    serial = analyse_probes(pipeline, paths, max_pixels=50_000_000, one_person=True)
    same = [asdict(a) == asdict(b) and (ea is None and eb is None or np.array_equal(ea, eb))
            for (a, ea), (b, eb) in zip(parallel, serial)]
    print(json.dumps({"fresh": fresh, "after": after, "rows": len(parallel), "same": same}))
"""


def _run_fresh(script: str, *args) -> tuple[dict, str]:
    """Run ``script`` in a new Python process (the CLI's case: nothing analysed yet); its JSON and stderr."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def _workers_analysed(stderr: str) -> int:
    found = re.search(r"analysed on 2 processes: (\d+) by the forked workers", stderr)
    assert found, stderr
    return int(found.group(1))


def test_parallel_person_search_equals_serial(frmdb_gallery, stills, tmp_path):
    """Candidates, distances, bands and rows of a person-level search: the same with forked workers."""
    _, _, shared = frmdb_gallery
    root = tmp_path / "gallery"  # the searches are stored: on a copy, never on the session's shared gallery
    shutil.copytree(shared, root)
    report, stderr = _run_fresh(_FRESH_SEARCH, root, *stills)
    assert report["same"] and _workers_analysed(stderr) >= 1  # a worker really analysed some stills
    doc = report["doc"]
    assert [p["outcome"] for p in doc["probes"]] == ["searched", "unreadable", "searched", "searched"]
    assert [p["probe_no"] for p in doc["probes"]] == [1, 2, 3, 4]
    assert doc["person"]["stills"] == 4 and doc["person"]["stills_searched"] == 3
    assert doc["person"]["candidates"][0]["subject"] == SUBJECT


_FRESH_HUNG_CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np
from facematch.faces.pipeline import FacePipeline
from facematch.search import parallel
from facematch.search.ranking import analyse_probes
from facematch.settings import Settings

def hang(*args):  # a forked worker that never answers (as one stuck on a copied lock would)
    time.sleep(600)

if __name__ == "__main__":
    paths, pipeline = [Path(p) for p in sys.argv[1:]], FacePipeline(Settings())
    parallel._child, parallel.CHILD_SILENCE_S = hang, 2.0
    started = time.monotonic()
    rows = parallel.analyse_probes_parallel(pipeline, paths, workers=2, max_pixels=50_000_000, one_person=True)
    took = time.monotonic() - started
    serial = analyse_probes(pipeline, paths, max_pixels=50_000_000, one_person=True)
    same = all(a.outcome == b.outcome and (ea is None and eb is None or np.array_equal(ea, eb))
               for (a, ea), (b, eb) in zip(rows, serial))
    print(json.dumps({"rows": len(rows), "same": same, "seconds": took}))
"""


def test_a_hung_worker_is_ended_and_the_search_completes_here(stills):
    """A forked worker that never answers is ended after CHILD_SILENCE_S; the caller analyses every still
    itself, with the serial results (the search never hangs in front of the investigator)."""
    report, stderr = _run_fresh(_FRESH_HUNG_CHILD, *stills)
    assert report["rows"] == 4 and report["same"] and report["seconds"] < 60
    assert "sent nothing for 2 s" in stderr


def test_forked_workers_give_the_serial_descriptors_bit_for_bit(stills):
    report, stderr = _run_fresh(_FRESH_ANALYSIS, *stills)
    assert report["fresh"] is True and report["after"] is False
    assert report["rows"] == 4 and all(report["same"]) and _workers_analysed(stderr) >= 1


def test_after_an_analysis_this_process_stays_serial(frmdb_gallery, stills, caplog):
    """Once dlib ran in a process, forking it would deadlock: a later multi-image search runs serially."""
    fm, _, _ = frmdb_gallery
    fm.pipeline.analyse(np.zeros((64, 64, 3), np.uint8), purpose="probe")
    assert not can_fork()
    with caplog.at_level(logging.INFO, logger="facematch.search.parallel"):
        result = fm.search(stills[:2], top=3, user="dc-parallel", reason="parallel test", workers=2)
    assert "2 probe images analysed serially" in caplog.text
    assert [p.outcome for p in result.probes] == ["searched", "unreadable"]


def test_how_many_workers():
    cores = os.cpu_count() or 1
    assert probe_workers(None, 5) == min(5, cores)
    assert probe_workers(None, 1) == 1
    assert probe_workers(8, 3) == 3 and probe_workers(1, 5) == 1


def test_service_search_workers_analyse_serially(tmp_path, monkeypatch):
    """The service's search workers are a process pool already: their searches never start another."""
    monkeypatch.setattr(worker, "_FM", None)
    monkeypatch.setitem(os.environ, "OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    worker._init(Settings(data_dir=tmp_path / "data", index_dir=tmp_path / "indexes", search_workers=2))
    assert worker._FM.settings.search_workers == 1
