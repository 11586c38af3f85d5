"""Person-level evaluation: probes grouped by person, distances fused as search fuses them, per-group CMC
and FNIR, the report section, and the progress line long evaluations print."""

from pathlib import Path

import numpy as np
import pytest

from facematch.cli.evaluation_commands import _Progress, progress_line
from facematch.errors import InvalidArgument, ProtocolError
from facematch.evaluation import metrics as M
from facematch.evaluation.grouped import describe, fnir_at_zero_fpir, group_outcomes, probe_groups
from facematch.evaluation.protocols import GalleryEntry, ProbeEntry, Protocol
from facematch.evaluation.report import identification_summary, write_report
from facematch.settings import PersonSettings

SUBJECTS = ["A", "B", "C"]
INF = np.inf
# probe: (id, true subject, person attribute, distances to A, B, C; inf row = no face acquired)
ROWS = [
    ("a1", "A", "pa", [0.70, 0.50, 0.60]),   # alone, this still ranks B first
    ("a2", "A", "pa", [0.40, 0.65, 0.55]),
    ("a3", "A", "pa", [0.62, 0.60, 0.70]),
    ("b1", "B", "pb", [INF, INF, INF]),      # no face
    ("b2", "B", "pb", [0.58, 0.52, 0.45]),   # C closer than B: B at rank 2
    ("c1", "C", "pc", [INF, INF, INF]),      # the whole group failed to acquire
    ("x1", None, "px", [0.66, 0.59, 0.80]),  # not enrolled
    ("x2", None, "px", [0.48, 0.75, 0.70]),
]


def _protocol():
    probes = [ProbeEntry(i, Path(f"/p/{i}.jpg"), s, {"person": g}) for i, s, g, _ in ROWS]
    gallery = [GalleryEntry(s, Path(f"/g/{s}.jpg")) for s in SUBJECTS]
    return Protocol("synthetic", "by hand", gallery, probes, Path("/"))


def _fused():
    d = np.array([r[3] for r in ROWS], dtype=float)
    return d, np.isfinite(d).all(axis=1)


def test_group_outcomes_by_hand_min_and_mean2():
    protocol = _protocol()
    name, groups = probe_groups(protocol)
    assert name == "person" and groups["a3"] == "pa" and groups["x2"] == "px"
    d, ok = _fused()
    quality = [50.0] * len(ROWS)
    by = {o.probe_id: o for o in group_outcomes(protocol.probes, groups, SUBJECTS, d, ok, quality,
                                                PersonSettings(fusion="min"))}
    assert by["pa"].candidates == (("A", 0.40), ("B", 0.50), ("C", 0.55))  # the smallest over a1-a3
    assert by["pb"].candidates == (("C", 0.45), ("B", 0.52), ("A", 0.58))  # b2 alone: b1 had no face
    assert not by["pc"].acquired and by["pc"].true_subject == "C"
    assert by["px"].true_subject is None and by["px"].candidates[0] == ("A", 0.48)
    mean2 = {o.probe_id: o for o in group_outcomes(protocol.probes, groups, SUBJECTS, d, ok, quality,
                                                   PersonSettings(fusion="mean-k", fusion_k=2))}
    # A: mean(0.40, 0.62) = 0.51; B: mean(0.50, 0.60) = 0.55; C: mean(0.55, 0.60) = 0.575
    assert [s for s, _ in mean2["pa"].candidates] == ["A", "B", "C"]
    assert np.allclose([v for _, v in mean2["pa"].candidates], [0.51, 0.55, 0.575])
    # one acquired still: mean-2 falls back to it
    assert mean2["pb"].candidates == by["pb"].candidates
    # the per-group metrics: 3 mated groups (pa hit at 1, pb at 2, pc a miss), 1 non-mated
    summary = identification_summary(list(by.values()), ranks=(1, 2, 3), n_boot=0)
    cmc = {c["rank"]: c["hit_rate"] for c in summary["cmc"]}
    assert summary["n_mated"] == 3 and summary["n_nonmated"] == 1
    assert cmc == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 2 / 3})
    assert summary["failures"]["fta_mated"] == pytest.approx(1 / 3)
    # FPIR 0: threshold just below the non-mated group's 0.48: only pa (0.40) is a hit at rank 1
    zero = fnir_at_zero_fpir(list(by.values()))
    assert zero["fpir"] == 0 and zero["fnir"] == pytest.approx(2 / 3) and zero["threshold"] < 0.48


def test_grouping_choices_and_errors():
    protocol = _protocol()
    assert probe_groups(protocol, "none") == (None, None)
    name, groups = probe_groups(protocol, "subject")
    assert name == "subject" and groups["a1"] == "A" and groups["x1"] == "x1"  # no folder: its own group
    unlabelled = Protocol("u", "", protocol.gallery, [ProbeEntry("061/Img_01.jpg", Path("/p"), None),
                                                      ProbeEntry("061/Img_02.jpg", Path("/q"), None)], Path("/"))
    assert probe_groups(unlabelled) == (None, None)  # auto: no person attribute, no grouping
    assert probe_groups(unlabelled, "subject")[1] == {"061/Img_01.jpg": "061", "061/Img_02.jpg": "061"}
    with pytest.raises(InvalidArgument, match="2 probes lack that attribute"):
        probe_groups(unlabelled, "camera")
    mixed = Protocol("m", "", protocol.gallery, [ProbeEntry("1", Path("/a"), "A", {"person": "p"}),
                                                 ProbeEntry("2", Path("/b"), "B", {"person": "p"})], Path("/"))
    with pytest.raises(ProtocolError, match="group 'p'"):
        probe_groups(mixed)


def test_report_shows_per_still_and_person_level_tables(tmp_path):
    protocol = _protocol()
    d, ok = _fused()
    per_still = [M.SearchOutcome(p.id, p.subject, tuple((SUBJECTS[j], float(d[i, j])) for j in np.argsort(d[i]))
                                 if ok[i] else (), acquired=bool(ok[i])) for i, p in enumerate(protocol.probes)]
    _, groups = probe_groups(protocol)
    person = PersonSettings(fusion="min")
    grouped = group_outcomes(protocol.probes, groups, SUBJECTS, d, ok, [None] * len(ROWS), person)
    section = {"identification": identification_summary(per_still, ranks=(1, 10, 20), n_boot=0),
               "person_identification": describe("person", person, grouped, len(ROWS))
               | identification_summary(grouped, ranks=(1, 10, 20), n_boot=0)}
    paths = write_report({"title": "t", "systems": {"facematch": section}}, tmp_path)
    text = paths["markdown"].read_text()
    assert "## Identification (1:N)" in text
    assert "## Person-level identification (1:N, one search per person group, fusion min)" in text
    assert "8 probes in 4 groups" in text
    person_part = text.split("## Person-level identification")[1]
    assert "| mated / non-mated searches | 3 / 1 |" in person_part
    assert "| rank-1 hit rate (95% CI) | 33.3% |" in person_part and "FNIR (rank 1) at FPIR 0" in person_part
    assert "| mated / non-mated searches | 6 / 2 |" in text.split("## Person-level")[0]


def test_progress_lines_are_rate_limited_with_rate_and_time_left(capsys):
    now = [0.0]
    progress = _Progress(every_s=3.0, clock=lambda: now[0])
    for done in range(0, 11):
        now[0] = done * 1.0
        progress("facematch probes", done, 10)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "facematch probes: 0/10 images (0.00/s, time left not known yet)"
    assert lines[1] == "facematch probes: 3/10 images (1.00/s, about 7 s left)"
    assert lines[-1] == "facematch probes: 10/10 images (1.00/s, done)"
    assert len(lines) == 5  # at 0, 3, 6, 9 s and the end
    assert progress_line("x", 10, 400, 5.0, 10) == "x: 10/400 images (2.00/s, about 3 min 15 s left)"
