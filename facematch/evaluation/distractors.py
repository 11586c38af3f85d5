"""Rank among the probed subjects only: a check that a gain is identity, not the gallery's two sources.

The CCTV protocols enrol a few people photographed under one set of conditions (FRMDB custody photos) beside
a thousand distractors from another source (LFW). A descriptor that only tells the two sources apart puts
the few probed people above every distractor and so "gains" rank-10 and rank-20 without knowing who anyone
is: session 9 measured exactly that (docs/cctv-probes.md). Ranking each mated search among the subjects
that some probe shows (the distractors, subjects no probe shows, removed) takes that shortcut away; rank-1
there is compared with chance, one over the number of those subjects. A real gain moves both figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facematch.evaluation import metrics as M

__all__ = ["probed_subject_columns", "without_distractors"]


def probed_subject_columns(subjects: Sequence[str], probed: set[str]) -> np.ndarray:
    """Column indices of the gallery subjects that some probe shows, in ``subjects`` order."""
    return np.array([j for j, s in enumerate(subjects) if s in probed], dtype=int)


def without_distractors(outcomes: Sequence[M.SearchOutcome], subjects: Sequence[str], fused: np.ndarray, *,
                        ranks: Sequence[int] = (1, 5), n_boot: int = 0, seed: int = 0) -> dict | None:
    """CMC of the mated searches ranked among the probed subjects only, with chance rank-1.

    ``outcomes`` and ``fused`` (probes x ``subjects`` fused distances) are those of the full gallery; a
    failure to acquire stays a miss. ``n_boot`` > 0 adds 95% bootstrap intervals (resampling people, as
    every other rate of the report). Returns None when nothing would change (no distractor subject) or fewer than two
    subjects are probed (no ranking to speak of).
    """
    probed = {o.true_subject for o in outcomes if o.mated}
    columns = probed_subject_columns(subjects, probed)
    if len(columns) < 2 or len(columns) == len(subjects):
        return None
    kept = [subjects[j] for j in columns]
    restricted = []
    for i, o in enumerate(outcomes):
        if not o.mated:
            continue
        if not o.acquired:
            restricted.append(o)
            continue
        row = fused[i, columns]
        order = np.argsort(row, kind="stable")
        cands = tuple((kept[j], float(row[j])) for j in order if np.isfinite(row[j]))
        restricted.append(M.SearchOutcome(o.probe_id, o.true_subject, cands, cluster=o.cluster))
    hits = M.cmc(restricted, ranks=ranks)
    return {"n_subjects": len(columns), "n_distractor_subjects": len(subjects) - len(columns),
            "n_mated": len(restricted), "chance_rank1": 1 / len(columns),
            "cmc": [{"rank": r, "hit_rate": hits[r],
                     "ci": list(M.bootstrap_ci(restricted, lambda o, r=r: M.cmc(o, ranks=(r,))[r], n_boot=n_boot,
                                               seed=seed)) if n_boot else None}
                    for r in ranks]}
