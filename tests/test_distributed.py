"""The Dask ingestion backend gives the catalogue and index the local backend gives (Dask's local cluster)."""

import shutil

import numpy as np
import pytest
from conftest import make_facematch, require_data

from facematch.ingest.bulk import ingest
from facematch.ingest.sources import custody_items

distributed = pytest.importorskip(
    "distributed", reason="Dask is not installed (the optional extra: pip install 'facematch[dask]')")

from facematch.ingest.dask_backend import DaskAnalyser  # noqa: E402  (after the skip: needs the extra)

ROWS = """SELECT i.sha256, i.outcome, i.reason, f.box_left, f.box_top, f.box_right, f.box_bottom,
          f.embedding, s.reference FROM images i LEFT JOIN faces f ON f.image_id = i.id
          LEFT JOIN subjects s ON s.id = i.subject_id ORDER BY i.sha256"""


@pytest.fixture
def custody_folder(tmp_path):
    mugshots = require_data("frmdb-dev", "mugshots")
    folder = tmp_path / "custody"
    for subject in ("046", "047", "048"):
        (folder / subject).mkdir(parents=True)
        for view in ("Img_33.jpg", "Img_43.jpg"):
            shutil.copy(mugshots / subject / view, folder / subject / view)
    (folder / "048" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return folder


def test_dask_backend_gives_the_local_catalogue_and_index(tmp_path, custody_folder):
    local = make_facematch(tmp_path / "local")
    local.ingest_custody(custody_folder)
    fm = make_facematch(tmp_path / "dask")
    items = custody_items(custody_folder)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        analyser = DaskAnalyser(client, chunk_size=2, tasks_per_worker=1)
        summary = ingest(fm.catalogue, fm.index_store, items, kind="custody", settings=fm.settings,
                         user="test", source=str(custody_folder), analyse=analyser)
        again = ingest(fm.catalogue, fm.index_store, items, kind="custody", settings=fm.settings,
                       user="test", source=str(custody_folder), analyse=analyser)
    assert summary.processed == 7 and summary.outcomes.get("unreadable") == 1
    assert again.processed == 0 and again.already_stored == 7  # idempotent through the cluster too
    expected, got = local.catalogue.conn.execute(ROWS).fetchall(), fm.catalogue.conn.execute(ROWS).fetchall()
    assert sum(1 for r in got if r["embedding"]) >= 5
    def described(rows):  # everything but the embedding
        return [(r[0], r[1], r[2], *r[3:7], r[8]) for r in rows]

    assert described(got) == described(expected)
    for a, b in zip(got, expected):
        if a["embedding"]:
            difference = np.frombuffer(a["embedding"], np.float32) - np.frombuffer(b["embedding"], np.float32)
            assert np.abs(difference).max() < 1e-5
    faces = fm.catalogue.conn.execute("SELECT id, embedding FROM faces ORDER BY id").fetchall()
    assert fm.index_status()["custody"] == f"ok ({len(faces)} faces)"
    index = fm.index_store.load("custody")
    distances, ids = index.search(np.stack([np.frombuffer(r["embedding"], np.float32) for r in faces]), 1)
    assert list(ids[:, 0]) == [r["id"] for r in faces] and float(distances.max()) < 1e-4


def test_the_analyser_refuses_nonsense_sizes():
    from facematch.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        DaskAnalyser(client=None, chunk_size=0)
