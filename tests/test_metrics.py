"""Accuracy metrics against small cases computed by hand (distances: lower = more similar)."""

import math

import numpy as np
import pytest

from facematch.errors import InvalidArgument
from facematch.evaluation import metrics as M
from facematch.evaluation.metrics import SearchOutcome

# 4 mated and 6 non-mated distances. Matching when d <= t:
#   t      FMR   FNMR
#   -inf   0/6   4/4
#   0.30   0/6   3/4
#   0.40   0/6   2/4
#   0.45   1/6   2/4
#   0.50   1/6   1/4   <- t1: last with FMR <= FNMR (sum 5/12)
#   0.60   2/6   1/4   <- t2: first with FMR >= FNMR (sum 7/12)
#   0.65   3/6   1/4
#   0.70   3/6   0/4
#   0.80   4/6 ... 1.00  6/6, 0/4
MATED = [0.30, 0.40, 0.50, 0.70]
NONMATED = [0.45, 0.60, 0.65, 0.80, 0.90, 1.00]


def test_roc_points_by_hand():
    fmr, fnmr, thr = M.roc(MATED, NONMATED)
    assert thr[0] == -np.inf
    np.testing.assert_allclose(thr[1:], [0.30, 0.40, 0.45, 0.50, 0.60, 0.65, 0.70, 0.80, 0.90, 1.00])
    np.testing.assert_allclose(fmr * 6, [0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 6])
    np.testing.assert_allclose(fnmr * 4, [4, 3, 2, 2, 1, 1, 1, 0, 0, 0, 0])
    assert M.det(MATED, NONMATED)[0].tolist() == fmr.tolist()


def test_roc_similarity_scores_give_thresholds_in_caller_units():
    fmr, fnmr, thr = M.roc([-x for x in MATED], [-x for x in NONMATED], higher_is_better=True)
    np.testing.assert_allclose(fmr * 6, [0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 6])
    assert thr[0] == np.inf and thr[4] == pytest.approx(-0.50)


def test_eer_by_hand():
    # FVC rule: t1 = 0.50 has the smaller FMR+FNMR sum, so EER = (1/6 + 1/4) / 2 = 5/24.
    value, threshold = M.eer(MATED, NONMATED)
    assert value == pytest.approx(5 / 24)
    assert threshold == pytest.approx(0.50)


def test_eer_exact_crossing_and_perfect_separation():
    # mated [0.1, 0.2], non-mated [0.15, 0.3]: at t = 0.15 FMR = FNMR = 1/2.
    assert M.eer([0.1, 0.2], [0.15, 0.3]) == (pytest.approx(0.5), pytest.approx(0.15))
    assert M.eer([0.1, 0.2], [0.5, 0.6])[0] == 0.0


def test_tar_at_far_by_hand():
    # FAR 1/6: one false match allowed -> threshold just below the 2nd non-mated (0.60);
    # mated below 0.60: 0.30, 0.40, 0.50 -> TAR 3/4, FMR reached 1/6.
    r = M.tar_at_far(MATED, NONMATED, 1 / 6)
    assert r.tar == pytest.approx(0.75) and r.fmr == pytest.approx(1 / 6) and r.n_nonmated == 6
    assert 0.50 < r.threshold < 0.60
    # FAR 0.5: three allowed -> below 0.80: all mated -> TAR 1, FMR 3/6.
    r = M.tar_at_far(MATED, NONMATED, 0.5)
    assert (r.tar, r.fmr) == (1.0, 0.5)
    assert M.threshold_for_fmr(NONMATED, 0.5) == r.threshold


def test_tar_at_far_below_resolution_is_nan():
    r = M.tar_at_far(MATED, NONMATED, 0.1)  # 0.1 < 1/6
    assert math.isnan(r.tar) and math.isnan(r.threshold) and r.n_nonmated == 6
    assert math.isnan(M.threshold_for_fmr(NONMATED, 0.1))


def test_threshold_for_fmr_respects_ties():
    # Two non-mated at 0.4: allowing one false match cannot include either of them.
    t = M.threshold_for_fmr([0.4, 0.4, 0.9, 1.0], 0.25)
    assert t < 0.4 and np.mean(np.array([0.4, 0.4, 0.9, 1.0]) <= t) == 0.0
    assert M.threshold_for_fmr([0.4, 0.5], 1.0) == math.inf


def test_empty_or_bad_inputs_raise_clear_errors():
    with pytest.raises(InvalidArgument, match="no non-mated scores"):
        M.eer(MATED, [])
    with pytest.raises(InvalidArgument, match="no mated scores"):
        M.roc([], NONMATED)
    with pytest.raises(InvalidArgument, match="between 0 and 1"):
        M.tar_at_far(MATED, NONMATED, 1.5)


def test_lfw_protocol_by_hand():
    # Three folds of 2 mated (s) + 2 non-mated (n) pairs.
    # fold 0: s .20 .48  n .40 .90 | fold 1: s .30 .35  n .60 .70 | fold 2: s .45 .80  n .55 1.0
    # Held-out 0: train (1,2) best accuracy 7/8 for t in [.45,.55) -> t = .50; fold 0: 3/4 (n .40 matches)
    # Held-out 1: train (0,2) best 6/8 first in [.48,.55) -> t = .515; fold 1: 4/4
    # Held-out 2: train (0,1) best 7/8 first in [.35,.40) -> t = .375; fold 2: 2/4 (both s missed)
    d = [.20, .48, .40, .90, .30, .35, .60, .70, .45, .80, .55, 1.0]
    same = [1, 1, 0, 0] * 3
    fold = [0] * 4 + [1] * 4 + [2] * 4
    r = M.lfw_10fold_accuracy(d, same, fold)
    np.testing.assert_allclose(r.accuracies, [0.75, 1.0, 0.5])
    np.testing.assert_allclose(r.thresholds, [0.50, 0.515, 0.375])
    assert r.mean == pytest.approx(0.75)
    assert r.std == pytest.approx(0.25)  # deviations 0, +.25, -.25; ddof = 1
    assert r.sem == pytest.approx(0.25 / math.sqrt(3))


def test_lfw_protocol_needs_folds():
    with pytest.raises(InvalidArgument, match="two folds"):
        M.lfw_10fold_accuracy([0.1, 0.9], [1, 0], [0, 0])


def _outcomes():
    """Five mated (p1-p4, p8) and three non-mated (p5-p7) searches; p4 and p7 failed to acquire."""
    return [
        SearchOutcome("p1", "A", [("A", 0.30), ("B", 0.50), ("C", 0.70)]),   # rank 1
        SearchOutcome("p2", "B", [("A", 0.40), ("C", 0.45), ("B", 0.55)]),   # rank 3
        SearchOutcome("p3", "C", [("A", 0.20), ("B", 0.60)]),                # not listed
        SearchOutcome("p4", "D", [], acquired=False),                        # FTA: a miss
        SearchOutcome("p5", None, [("A", 0.35), ("B", 0.80)]),               # top .35
        SearchOutcome("p6", None, [("C", 0.65), ("A", 0.70)]),               # top .65
        SearchOutcome("p7", None, [], acquired=False),                       # never a false positive
        SearchOutcome("p8", "E", [("E", 0.50), ("A", 0.50)]),                # tie: rank 2
    ]


def test_true_rank_breaks_ties_against_the_true_subject():
    ranks = [M.true_rank(o) for o in _outcomes()]
    assert ranks == [1, 3, None, None, None, None, None, 2]


def test_cmc_counts_failures_to_acquire_as_misses():
    # Hits over the 5 mated searches: rank 1 -> p1; rank 2 -> +p8; rank 3 -> +p2; p3, p4 never.
    assert M.cmc(_outcomes(), ranks=(1, 2, 3, 5, 50)) == {1: 0.2, 2: 0.4, 3: 0.6, 5: 0.6, 50: 0.6}


def test_fnir_fpir_at_threshold_by_hand():
    # T = 0.5, R = 1: hits p1 only -> FNIR 4/5; false positives p5 only -> FPIR 1/3.
    p = M.fnir_fpir_at_threshold(_outcomes(), 0.5)
    assert (p.fnir, p.fpir, p.n_mated, p.n_nonmated) == (pytest.approx(0.8), pytest.approx(1 / 3), 5, 3)
    # R = 3: p8 (rank 2, 0.50) now hits; p2 (rank 3, 0.55 > T) does not -> FNIR 3/5.
    assert M.fnir_fpir_at_threshold(_outcomes(), 0.5, rank=3).fnir == pytest.approx(0.6)


def test_fnir_at_fpir_by_hand():
    # Non-mated top distances: .35, .65, (none). Target 0.34 allows one: T just below .65.
    # R=1 hits below .65: p1 -> FNIR .8. R=3: p1, p8 (.50), p2 (.55) -> FNIR .4.
    # Target 0.1 < 1/3 cannot be resolved. Target .67 allows two: T = inf, FPIR 2/3.
    low, one, two = M.fnir_at_fpir(_outcomes(), (0.1, 0.34, 0.67))
    assert math.isnan(low.fnir) and math.isnan(low.threshold) and low.fpir_target == 0.1
    assert 0.55 < one.threshold < 0.65
    assert (one.fnir, one.fpir) == (pytest.approx(0.8), pytest.approx(1 / 3))
    assert M.fnir_at_fpir(_outcomes(), (0.34,), rank=3)[0].fnir == pytest.approx(0.4)
    assert two.threshold == math.inf and two.fpir == pytest.approx(2 / 3)


def test_identification_needs_both_kinds_of_search():
    mated_only = [o for o in _outcomes() if o.mated]
    with pytest.raises(InvalidArgument, match="no non-mated searches"):
        M.fnir_at_fpir(mated_only)
    with pytest.raises(InvalidArgument, match="no mated searches"):
        M.cmc([o for o in _outcomes() if not o.mated])


def test_search_outcome_validates_candidates():
    with pytest.raises(InvalidArgument, match="not sorted"):
        SearchOutcome("x", "A", [("A", 0.5), ("B", 0.4)])
    with pytest.raises(InvalidArgument, match="failed to acquire"):
        SearchOutcome("x", "A", [("A", 0.5)], acquired=False)


def test_search_scores_and_failure_rates():
    s = M.search_scores(_outcomes())
    assert sorted(s["mated"].tolist()) == [0.30, 0.50, 0.55]
    assert sorted(s["nonmated"].tolist()) == [0.35, 0.65]
    f = M.failure_rates(_outcomes(), n_gallery=10, n_gallery_failed=2)
    assert (f.fta, f.fta_mated, f.fta_nonmated, f.n_probes) == (0.25, 0.2, pytest.approx(1 / 3), 8)
    assert (f.fte, f.n_gallery) == (0.2, 10)
    assert math.isnan(M.failure_rates(_outcomes()).fte)


def _rank1(outcomes):
    return M.cmc(outcomes, ranks=(1,))[1]


def test_bootstrap_resamples_subjects_deterministically():
    rng = np.random.default_rng(5)
    outs = []
    for s in range(30):  # 30 subjects x 4 probes; a subject's probes all hit or all miss
        hit = rng.random() < 0.6
        for k in range(4):
            cands = [(f"S{s}", 0.3), ("Z", 0.5)] if hit else [("Z", 0.3)]
            outs.append(SearchOutcome(f"{s}/{k}", f"S{s}", cands))
    point = _rank1(outs)
    low, high = M.bootstrap_ci(outs, _rank1, n_boot=300, seed=1)
    assert (low, high) == M.bootstrap_ci(outs, _rank1, n_boot=300, seed=1)
    assert low <= point <= high and low < high
    # Resampling single probes ignores the correlation and gives a narrower interval.
    lo_i, hi_i = M.bootstrap_ci(outs, _rank1, n_boot=300, seed=1, cluster_of=lambda o: o.probe_id)
    assert hi_i - lo_i < high - low


def test_bootstrap_on_verification_pairs_by_index():
    rng = np.random.default_rng(0)
    d = np.concatenate([rng.normal(0.4, 0.1, 200), rng.normal(0.8, 0.1, 200)])
    same = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    person = np.r_[np.arange(200) // 4, np.arange(200) // 4]

    def stat(idx):
        idx = np.asarray(idx)
        return M.eer(d[idx][same[idx]], d[idx][~same[idx]])[0]

    low, high = M.bootstrap_ci(list(range(400)), stat, cluster_of=lambda i: person[i], n_boot=200)
    assert low <= stat(range(400)) <= high


def test_bootstrap_undefined_statistic_gives_nan():
    # One mated and one non-mated subject: most replicates lack one kind of search.
    outs = [SearchOutcome("a", "A", [("A", 0.3)]), SearchOutcome("b", None, [("A", 0.9)])]
    low, high = M.bootstrap_ci(outs, lambda o: M.fnir_fpir_at_threshold(o, 0.5).fnir, n_boot=50)
    assert math.isnan(low) and math.isnan(high)


def test_by_group_and_differential():
    groups = {"p1": "cam1", "p2": "cam1", "p3": "cam2", "p4": "cam2", "p8": "cam1", "p5": "cam2"}
    values = M.by_group(_outcomes(), groups, _rank1)
    # cam1: p1 hit, p2 miss, p8 miss -> 1/3; cam2: p3, p4 miss -> 0; unknown (p6, p7): no mated -> NaN
    assert values["cam1"] == pytest.approx(1 / 3) and values["cam2"] == 0.0
    assert math.isnan(values["unknown"])
    diff = M.differential(values)
    assert diff["max_group"] == "cam1" and diff["min_group"] == "cam2"
    assert diff["difference"] == pytest.approx(1 / 3) and math.isnan(diff["ratio"])
    assert M.differential({"a": 0.2, "b": 0.05})["ratio"] == pytest.approx(4.0)
    assert M.differential({"a": math.nan})["max_group"] is None
