"""A multi-still search analysed in worker processes (facematch/search/parallel.py) gives exactly what one
process gives: the same rows, detections, descriptors, candidates and distances; a corrupt still among
good ones is still reported on its own row."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, require_data

from facematch.search.parallel import probe_workers
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


def _comparable(result) -> dict:
    doc = result.to_dict()
    del doc["search_id"], doc["created_at"]
    return doc


def test_parallel_person_search_equals_serial(frmdb_gallery, stills, caplog):
    fm, _, _ = frmdb_gallery
    serial = fm.search(stills, one_person=True, top=5, user="dc-parallel", reason="parallel test", workers=1)
    with caplog.at_level(logging.INFO, logger="facematch.search.parallel"):
        parallel = fm.search(stills, one_person=True, top=5, user="dc-parallel", reason="parallel test", workers=3)
    assert "4 probe images analysed on 3 processes" in caplog.text
    assert _comparable(parallel) == _comparable(serial)
    assert [p.outcome for p in parallel.probes] == ["searched", "unreadable", "searched", "searched"]
    assert [p.probe_no for p in parallel.probes] == [1, 2, 3, 4]
    assert parallel.person.stills == 4 and parallel.person.stills_searched == 3
    assert parallel.person.candidates[0].subject == SUBJECT


_FRESH_PROCESS = """
import json, sys
from dataclasses import asdict
from pathlib import Path
import numpy as np
from facematch.faces.pipeline import FacePipeline
from facematch.search.parallel import analyse_probes_parallel, start_method
from facematch.search.ranking import analyse_probes
from facematch.settings import Settings

if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    paths, pipeline = [Path(p) for p in sys.argv[1:]], FacePipeline(Settings())
    method = start_method()  # a fresh process: fork, the children inherit the loaded models
    parallel = analyse_probes_parallel(pipeline, paths, workers=2, max_pixels=50_000_000, one_person=True)
    serial = analyse_probes(pipeline, paths, max_pixels=50_000_000, one_person=True)
    same = [asdict(a) == asdict(b) and (ea is None and eb is None or np.array_equal(ea, eb))
            for (a, ea), (b, eb) in zip(parallel, serial)]
    print(json.dumps({"method": method, "rows": len(parallel), "same": same,
                      "outcomes": [p.outcome for p, _ in parallel]}))
"""


def test_forked_workers_give_the_serial_rows_bit_for_bit(stills):
    """The CLI's case, a fresh process: workers forked with the loaded models, descriptors compared exactly."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, *map(str, stills)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["method"] == "fork" and report["rows"] == 4 and all(report["same"])
    assert report["outcomes"] == ["searched", "unreadable", "searched", "searched"]
    by_workers = re.search(r"on 2 processes \(fork\): (\d+) by the worker processes", done.stderr)
    assert by_workers and int(by_workers.group(1)) >= 1, done.stderr  # the child really analysed some


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
