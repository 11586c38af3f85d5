"""Rank among the probed subjects only: the check that a gain is identity, not the gallery's sources."""

from __future__ import annotations

import numpy as np

from facematch.evaluation import metrics as M
from facematch.evaluation.distractors import without_distractors
from facematch.evaluation.protocols import ProbeEntry
from facematch.evaluation.runner import search_outcomes

SUBJECTS = ["a", "b", "c", "d", "x1", "x2", "x3", "x4"]  # x*: distractors, no probe shows them


def _probes():
    return [ProbeEntry(f"{s}/{k}", f"/nowhere/{s}{k}.jpg", s) for s in "abcd" for k in range(3)] + [
        ProbeEntry("z/0", "/nowhere/z0.jpg", None, {"identity": "z"})]


def test_a_source_shortcut_gains_rank_k_but_not_rank_among_probed_subjects():
    """Distances that only put the probed people before the distractors, in an order unrelated to who the
    probe shows: rank-4 is perfect on the full gallery, rank-1 among the probed subjects is at chance."""
    probes = _probes()
    rng = np.random.default_rng(3)
    fused = np.full((len(probes), len(SUBJECTS)), 0.9)
    fused[:, :4] = 0.5 + rng.permuted(np.tile(np.arange(4) * 0.01, (len(probes), 1)), axis=1)
    ok = np.ones(len(probes), bool)
    outcomes = search_outcomes(probes, SUBJECTS, fused, ok)
    assert M.cmc(outcomes, ranks=(4,))[4] == 1.0
    section = without_distractors(outcomes, SUBJECTS, fused, ranks=(1, 4))
    assert section["n_subjects"] == 4 and section["n_distractor_subjects"] == 4 and section["n_mated"] == 12
    assert section["chance_rank1"] == 0.25
    rank1 = section["cmc"][0]["hit_rate"]
    hits = sum(int(np.argmin(fused[i, :4]) == "abcd".index(p.subject)) for i, p in enumerate(probes[:12]))
    assert rank1 == hits / 12 and rank1 < 0.5
    assert section["cmc"][1]["hit_rate"] == 1.0


def test_identity_keeps_its_rank_and_failures_stay_misses():
    probes = _probes()
    fused = np.full((len(probes), len(SUBJECTS)), 0.8)
    for i, p in enumerate(probes[:12]):
        fused[i, "abcd".index(p.subject)] = 0.3
        fused[i, 4] = 0.2  # one distractor closer than the true subject: rank 2 on the full gallery
    ok = np.ones(len(probes), bool)
    ok[0] = False  # a failure to acquire is a miss on both lists
    outcomes = search_outcomes(probes, SUBJECTS, fused, ok)
    assert M.cmc(outcomes, ranks=(1,))[1] == 0.0
    section = without_distractors(outcomes, SUBJECTS, fused, n_boot=50, seed=1)
    assert section["cmc"][0]["hit_rate"] == 11 / 12
    low, high = section["cmc"][0]["ci"]
    assert low <= 11 / 12 <= high


def test_nothing_to_report_without_distractors_or_with_one_probed_subject():
    probes = _probes()
    fused = np.random.default_rng(0).random((len(probes), 4))
    outcomes = search_outcomes(probes, SUBJECTS[:4], fused, np.ones(len(probes), bool))
    assert without_distractors(outcomes, SUBJECTS[:4], fused) is None
    one = [p for p in probes if p.subject in ("a", None)]
    fused = np.random.default_rng(0).random((len(one), len(SUBJECTS)))
    outcomes = search_outcomes(one, SUBJECTS, fused, np.ones(len(one), bool))
    assert without_distractors(outcomes, SUBJECTS, fused) is None
