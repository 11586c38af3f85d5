"""FaceIndex: search against brute force for every kind, removal, persistence and torn-pair detection."""

import os
import shutil
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from facematch.errors import IndexMissing, IndexStale, InvalidArgument
from facematch.store.index import FaceIndex, IndexSpec, choose_index_spec, set_faiss_threads

DATA = Path(os.environ.get("FACEMATCH_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DIM = 128
SMALL_SPECS = {
    "flat": IndexSpec("flat"),
    "ivf_flat": IndexSpec("ivf_flat", {"nlist": 16, "nprobe": 4}),
    "ivf_pq": IndexSpec("ivf_pq", {"nlist": 16, "nprobe": 4, "m": 32, "nbits": 4, "shortlist_factor": 10}),
    "ivf_pq8": IndexSpec("ivf_pq", {"nlist": 16, "nprobe": 4, "m": 16, "nbits": 8, "shortlist_factor": 10}),
}


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """Tiny indexes gain nothing from threads, and OpenMP barriers stall on a busy shared machine."""
    before = faiss.omp_get_max_threads()
    set_faiss_threads(1)
    yield
    set_faiss_threads(before)


def clustered(n, seed=0, n_clusters=40):
    """(n, DIM) float32 vectors in Gaussian clusters (scale like dlib descriptors) and ids (n,) int64."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.1, (n_clusters, DIM))
    vectors = centres[rng.integers(0, n_clusters, n)] + rng.normal(0, 0.03, (n, DIM))
    ids = rng.permutation(10 * n)[:n].astype(np.int64) + 1  # sparse, unordered, like catalogue ids
    return vectors.astype(np.float32), ids


def brute_force(queries, vectors, ids, k):
    """Exact (D, I) by numpy in float64: Euclidean distances ascending."""
    d = np.linalg.norm(queries[:, None, :].astype(np.float64) - vectors[None].astype(np.float64), axis=2)
    order = np.argsort(d, axis=1)[:, :k]
    return np.take_along_axis(d, order, axis=1), ids[order]


@pytest.fixture(scope="module")
def gallery():
    vectors, ids = clustered(3000)
    rng = np.random.default_rng(1)
    planted = rng.choice(len(ids), 40, replace=False)  # queries are tiny perturbations of these vectors
    queries = (vectors[planted] + rng.normal(0, 1e-3, (40, DIM))).astype(np.float32)
    return vectors, ids, queries, planted


@pytest.fixture(scope="module")
def built(gallery):
    vectors, ids, _, _ = gallery
    return {kind: FaceIndex.build(ids, vectors, spec=spec) for kind, spec in SMALL_SPECS.items()}


def test_distances_are_euclidean_not_squared():
    index = FaceIndex(dim=4)
    index.add(np.array([10, 20]), np.array([[0, 0, 0, 0], [3, 4, 0, 0]], np.float32))
    D, I = index.search(np.zeros((1, 4), np.float32), 2)
    assert I.tolist() == [[10, 20]] and D.tolist() == [[0.0, 5.0]]
    assert D.dtype == np.float32 and I.dtype == np.int64


@pytest.mark.parametrize("kind", ["flat", "ivf_flat"])
def test_exact_kinds_equal_brute_force(gallery, built, kind):
    vectors, ids, queries, _ = gallery
    D, I = built[kind].search(queries, 10, nprobe=16)  # ivf_flat scanning every cell is exhaustive
    D_true, I_true = brute_force(queries, vectors, ids, 10)
    np.testing.assert_array_equal(I, I_true)
    np.testing.assert_allclose(D, D_true, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", list(SMALL_SPECS))
def test_planted_neighbour_found_and_distances_exact(gallery, built, kind):
    vectors, ids, queries, planted = gallery
    D, I = built[kind].search(queries, 10)  # default nprobe=4 of 16 cells
    assert (I[:, 0] == ids[planted]).all()
    row = {int(i): r for r, i in enumerate(ids)}
    exact = np.linalg.norm(vectors[[[row[int(i)] for i in q] for q in I]] - queries[:, None, :], axis=2)
    np.testing.assert_allclose(D, exact, rtol=1e-5, atol=1e-6)
    assert (np.diff(D, axis=1) >= 0).all()


@pytest.mark.parametrize("kind", ["ivf_pq", "ivf_pq8"])
def test_ivf_pq_recall_against_brute_force(gallery, built, kind):
    vectors, ids, queries, _ = gallery
    _, I = built[kind].search(queries, 10, nprobe=16)
    _, I_true = brute_force(queries, vectors, ids, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, I_true)])
    assert recall >= 0.95


@pytest.mark.parametrize("kind", list(SMALL_SPECS))
def test_padding_when_k_exceeds_ntotal(gallery, kind):
    vectors, ids, queries, _ = gallery
    index = FaceIndex.build(ids[:300], vectors[:300], spec=SMALL_SPECS[kind])
    D, I = index.search(queries[:3], 305, nprobe=16)
    assert (I[:, :300] >= 0).all() and np.isfinite(D[:, :300]).all()
    assert (I[:, 300:] == -1).all() and np.isinf(D[:, 300:]).all()
    assert set(I[0, :300].tolist()) == set(ids[:300].tolist())


def test_empty_index_search_is_all_padding():
    D, I = FaceIndex().search(np.zeros((2, DIM), np.float32), 3)
    assert (I == -1).all() and np.isinf(D).all() and D.shape == (2, 3)


@pytest.mark.parametrize("kind", list(SMALL_SPECS))
def test_remove(gallery, kind):
    vectors, ids, queries, planted = gallery
    index = FaceIndex.build(ids, vectors, spec=SMALL_SPECS[kind])
    gone = ids[planted[:20]]
    assert index.remove(np.concatenate([gone, [-5, 10**12]])) == 20  # unknown ids are ignored
    assert index.ntotal == len(ids) - 20
    np.testing.assert_array_equal(index.ids(), np.setdiff1d(ids, gone))
    _, I = index.search(queries, 10, nprobe=16)
    assert not np.isin(I, gone).any()
    assert (I[20:, 0] == ids[planted[20:]]).all()
    assert index.remove(gone) == 0
    index.add(gone[:1], vectors[planted[:1]])  # a removed id may come back
    assert index.search(queries[:1], 1)[1][0, 0] == gone[0]


@pytest.mark.parametrize("kind", list(SMALL_SPECS))
def test_remove_then_re_add_restores_results(gallery, built, kind):
    """Guards the fast-scan workaround: faiss leaves removed codes behind, corrupting re-added ones."""
    vectors, ids, queries, planted = gallery
    index = FaceIndex.build(ids, vectors, spec=SMALL_SPECS[kind])
    before = index.search(queries, 10, nprobe=16)
    index.remove(ids[::3])
    index.add(ids[::3], vectors[::3])
    for a, b in zip(index.search(queries, 10, nprobe=16), before):
        np.testing.assert_array_equal(a, b)


def test_duplicate_ids_rejected_and_index_unchanged(gallery):
    vectors, ids, _, _ = gallery
    index = FaceIndex.build(ids[:100], vectors[:100], spec=SMALL_SPECS["flat"])
    with pytest.raises(InvalidArgument, match="duplicate face id"):
        index.add(ids[99:101], vectors[99:101])
    with pytest.raises(InvalidArgument, match="duplicate face id"):
        index.add(np.array([7, 7]), vectors[:2])
    assert index.ntotal == 100


@pytest.mark.parametrize("bad", [np.zeros((2, 5)), np.full((2, DIM), np.nan)])
def test_malformed_vectors_rejected(bad):
    with pytest.raises(InvalidArgument):
        FaceIndex().add(np.array([1, 2]), bad)


def test_untrained_ivf_add_rejected(gallery):
    vectors, ids, _, _ = gallery
    with pytest.raises(InvalidArgument, match="not trained"):
        FaceIndex(spec=SMALL_SPECS["ivf_flat"]).add(ids, vectors)


@pytest.mark.parametrize("kind", list(SMALL_SPECS))
def test_save_load_round_trip(tmp_path, gallery, built, kind):
    vectors, ids, queries, planted = gallery
    path = tmp_path / "gallery.faiss"
    built[kind].save(path, {"catalogue": "abc", "model": "dlib"})
    loaded, sidecar = FaceIndex.load(path)
    assert sidecar["catalogue"] == "abc" and sidecar["index"]["ntotal"] == len(ids)
    assert loaded.spec == built[kind].spec
    np.testing.assert_array_equal(loaded.ids(), np.sort(ids))
    for a, b in zip(loaded.search(queries, 10), built[kind].search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left
    # a loaded index keeps working: remove, add, save again, load again
    loaded.remove(ids[planted[:5]])
    loaded.add(np.array([10**9]), queries[:1])
    loaded.save(path, sidecar)
    again, _ = FaceIndex.load(path)
    assert again.ntotal == len(ids) - 4
    assert again.search(queries[:1], 1)[1][0, 0] == 10**9


def test_resave_of_unchanged_ivf_pq_keeps_raw_vector_file(tmp_path, built, gallery):
    vectors, ids, queries, _ = gallery
    path = tmp_path / "g.faiss"
    built["ivf_pq"].save(path, {})
    loaded, _ = FaceIndex.load(path)
    inode = path.with_suffix(".vectors").stat().st_ino
    loaded.save(path, {"again": True})  # e.g. a sync with nothing new: gigabytes need not be rewritten
    assert path.with_suffix(".vectors").stat().st_ino == inode
    loaded.add(np.array([10**9]), queries[:1])
    loaded.save(path, {})
    assert path.with_suffix(".vectors").stat().st_ino != inode
    again, _ = FaceIndex.load(path)
    assert again.search(queries[:1], 1)[1][0, 0] == 10**9 and again.ntotal == len(ids) + 1


def _two_saves(tmp_path, gallery, kind):
    vectors, ids, _, _ = gallery
    a, b = tmp_path / "a.faiss", tmp_path / "b.faiss"
    FaceIndex.build(ids, vectors, spec=SMALL_SPECS[kind]).save(a, {"state": 1})
    index = FaceIndex.build(ids, vectors, spec=SMALL_SPECS[kind])
    index.remove(ids[:1])
    index.add(np.array([10**9]), vectors[:1])  # same count, other ids
    index.save(b, {"state": 2})
    return a, b


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_pq"])
def test_torn_pair_detected(tmp_path, gallery, kind):
    a, b = _two_saves(tmp_path, gallery, kind)
    shutil.copy(b.with_suffix(".json"), a.with_suffix(".json"))  # sidecar from another save
    with pytest.raises(IndexStale, match="facematch index rebuild"):
        FaceIndex.load(a)
    with open(b, "r+b") as f:  # truncated index file
        f.truncate(b.stat().st_size // 2)
    with pytest.raises(IndexStale, match="checksum"):
        FaceIndex.load(b)


def test_torn_raw_vectors_detected(tmp_path, gallery):  # the ivf_pq side file
    a, b = _two_saves(tmp_path, gallery, "ivf_pq")
    shutil.copy(b.with_suffix(".vectors"), a.with_suffix(".vectors"))
    with pytest.raises(IndexStale, match="raw vectors"):
        FaceIndex.load(a)
    b.with_suffix(".vectors").unlink()
    with pytest.raises(IndexStale, match="missing"):
        FaceIndex.load(b)


def test_missing_index(tmp_path, built):
    with pytest.raises(IndexMissing, match="facematch index rebuild"):
        FaceIndex.load(tmp_path / "none.faiss")
    built["flat"].save(tmp_path / "g.faiss", {})
    (tmp_path / "g.json").unlink()
    with pytest.raises(IndexStale, match="g.json is missing"):
        FaceIndex.load(tmp_path / "g.faiss")


def test_failed_save_keeps_previous_pair(tmp_path, built):
    path = tmp_path / "g.faiss"
    built["flat"].save(path, {"state": 1})
    with pytest.raises(InvalidArgument, match="JSON"):
        FaceIndex().save(path, {"state": object()})
    assert FaceIndex.load(path)[1]["state"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.faiss", "g.json"]


def test_build_is_deterministic(gallery):
    vectors, ids, queries, _ = gallery
    first = FaceIndex.build(ids, vectors, spec=SMALL_SPECS["ivf_pq"]).search(queries, 10)
    second = FaceIndex.build(ids, vectors, spec=SMALL_SPECS["ivf_pq"]).search(queries, 10)
    np.testing.assert_array_equal(first[1], second[1])


def test_concurrent_searches_match_serial(gallery, built):
    _, _, queries, _ = gallery
    expected = {kind: index.search(queries, 10) for kind, index in built.items()}
    results, errors = [], []

    def worker(kind):
        try:
            for _ in range(20):
                results.append((kind, built[kind].search(queries, 10)))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(kind,)) for kind in SMALL_SPECS for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 40 * len(SMALL_SPECS)
    for kind, (D, I) in results:
        np.testing.assert_array_equal(I, expected[kind][1])


def test_choose_index_spec_rule():
    assert choose_index_spec(0).kind == "flat"
    assert choose_index_spec(50_000).kind == "flat"
    small = choose_index_spec(200_000)  # small galleries scan at least 200k vectors' cells: all of them here
    assert small.kind == "ivf_pq" and small.params["nprobe"] == small.params["nlist"]
    one_million = choose_index_spec(1_000_000)
    assert one_million.kind == "ivf_pq" and one_million.params["nlist"] == 1024
    assert one_million.params["m"] == 64 and one_million.params["nbits"] == 4
    assert one_million.params["nprobe"] == 320  # 31% of the cells (docs/scale.md)
    ten_million = choose_index_spec(10_000_000)
    assert ten_million.kind == "ivf_pq" and ten_million.params["m"] == 64
    tight = choose_index_spec(10_000_000, memory_budget_bytes=400 * 2**20)  # 40 bytes a vector
    assert tight.params["m"] == 32 and DIM % tight.params["m"] == 0
    with pytest.raises(InvalidArgument, match="unknown index kind"):
        IndexSpec("hnsw")
    with pytest.raises(InvalidArgument, match="unknown parameter"):
        IndexSpec("flat", {"nprobe": 3})


@pytest.mark.slow
def test_real_descriptors_nearest_neighbour_is_same_subject():
    """dlib descriptors of 10 FRMDB subjects (frontal Img_33 and from-below Img_34): the frontal view's
    nearest other image is the same subject's, closer than dlib's 0.6 same-person threshold."""
    face_recognition = pytest.importorskip("face_recognition")
    root = DATA / "frmdb-dev" / "mugshots"
    if not root.is_dir():
        pytest.skip(f"FRMDB mugshots not found at {root} (set FACEMATCH_TEST_DATA)")
    subjects = [f"0{n}" for n in range(40, 50)]
    vectors, ids = [], []
    for s, subject in enumerate(subjects):
        for v, view in enumerate(("Img_33.jpg", "Img_34.jpg")):
            image = face_recognition.load_image_file(root / subject / view)
            boxes = face_recognition.face_locations(image, number_of_times_to_upsample=0)
            assert boxes, f"no face found in {subject}/{view}"
            vectors.append(face_recognition.face_encodings(image, boxes[:1])[0])
            ids.append(100 * s + v)  # id // 100 = subject, id % 100 = view
    vectors, ids = np.asarray(vectors, np.float32), np.asarray(ids)
    index = FaceIndex.build(ids, vectors)
    frontal = vectors[ids % 100 == 0]
    D, I = index.search(frontal, 3)
    assert (I[:, 0] == ids[ids % 100 == 0]).all() and (D[:, 0] == 0).all()
    assert (I[:, 1] // 100 == np.arange(10)).all() and (I[:, 1] % 100 == 1).all()
    np.testing.assert_allclose(D[:, 1], np.linalg.norm(frontal - vectors[ids % 100 == 1], axis=1), rtol=1e-5)
    assert (D[:, 1] < 0.6).all() and (D[:, 1] < D[:, 2]).all()
