"""Person-level evaluation: a protocol's probes grouped by person, each group searched as one person.

An investigator with five stills of one person runs one person-level search (``facematch.search.person``);
this measures that search. Probes that share a group key (an attribute such as ``person``, or the
person the probe shows) form one search: each subject's distances over the group's acquired stills are
fused by the same rule search uses (``search.person.fuse_distances``), and the fused list is scored as
one 1:N search. A group none of whose stills gave a template is a failure to acquire (a miss when mated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from facematch.errors import InvalidArgument, ProtocolError
from facematch.evaluation import metrics as M
from facematch.evaluation.protocols import ProbeEntry, Protocol
from facematch.search.person import fuse_distances, fusion_name
from facematch.settings import PersonSettings

__all__ = ["AUTO_GROUP", "SUBJECT_GROUP", "NO_GROUP", "probe_groups", "group_outcomes", "fnir_at_zero_fpir", "describe"]

#: ``group_by`` values: the ``person`` attribute when every probe has it (else no grouping); the person each
#: probe shows (its subject, or for a non-mated probe its identity attribute or the folder part of its id);
#: no grouping. Any other value names a probe attribute.
AUTO_GROUP, SUBJECT_GROUP, NO_GROUP = "auto", "subject", "none"
_AUTO_ATTRIBUTE = "person"


def _shown_person(probe: ProbeEntry) -> str:
    return probe.subject or probe.attributes.get("identity") or (
        probe.id.split("/")[0] if "/" in probe.id else probe.id)


def probe_groups(protocol: Protocol, group_by: str | None = AUTO_GROUP) -> tuple[str | None, dict[str, str] | None]:
    """``(name, {probe id: group key})`` for ``group_by``, or ``(None, None)`` when the probes are not grouped.

    Raises InvalidArgument when a named attribute is missing from some probe, ProtocolError when a group
    mixes probes of different enrolled subjects.
    """
    if group_by in (None, NO_GROUP):
        return None, None
    if group_by == AUTO_GROUP:
        if not protocol.probes or not all(_AUTO_ATTRIBUTE in p.attributes for p in protocol.probes):
            return None, None
        group_by = _AUTO_ATTRIBUTE
    if group_by == SUBJECT_GROUP:
        mapping = {p.id: _shown_person(p) for p in protocol.probes}
    else:
        missing = [p.id for p in protocol.probes if group_by not in p.attributes]
        if missing:
            raise InvalidArgument(f"group by {group_by!r}: {len(missing)} probes lack that attribute "
                                  f"(e.g. {missing[0]}); use 'subject' to group by the person shown")
        mapping = {p.id: str(p.attributes[group_by]) for p in protocol.probes}
    subjects: dict[str, set] = {}
    for p in protocol.probes:
        subjects.setdefault(mapping[p.id], set()).add(p.subject)
    mixed = sorted(g for g, s in subjects.items() if len(s) > 1)
    if mixed:
        raise ProtocolError(f"group {mixed[0]!r} (by {group_by}) holds probes of different subjects")
    return group_by, mapping


def group_outcomes(probes: Sequence[ProbeEntry], groups: dict[str, str], subjects: Sequence[str], fused: np.ndarray,
                   probe_ok: np.ndarray, quality: Sequence[float | None], person: PersonSettings, *,
                   top: int = 50) -> list[M.SearchOutcome]:
    """One :class:`metrics.SearchOutcome` per group: the ``top`` subjects by fused distance.

    ``fused`` ``(p, n_subjects)`` holds each probe's distance to each subject (+inf: no template) and
    ``probe_ok`` ``(p,)`` which probes gave one; ``quality`` ``(p,)`` their 0-100 scores (None: unknown).
    """
    if fused.shape != (len(probes), len(subjects)):
        raise InvalidArgument(f"distances {fused.shape} do not match {len(probes)} probes x {len(subjects)} subjects")
    members: dict[str, list[int]] = {}
    for i, p in enumerate(probes):
        members.setdefault(groups[p.id], []).append(i)
    out = []
    for key in sorted(members):
        rows = members[key]
        truth = probes[rows[0]].subject
        ok = [i for i in rows if probe_ok[i]]
        if not ok:
            out.append(M.SearchOutcome(key, truth, (), acquired=False, cluster=key))
            continue
        row = fuse_distances(fused[ok], [quality[i] for i in ok], rule=person.fusion, k=person.fusion_k,
                             penalty=person.quality_penalty)
        order = np.argsort(row, kind="stable")[:top]
        out.append(M.SearchOutcome(key, truth, tuple((subjects[j], float(row[j])) for j in order
                                                     if math.isfinite(row[j])), cluster=key))
    return out


def fnir_at_zero_fpir(outcomes: Sequence[M.SearchOutcome]) -> dict | None:
    """FNIR (rank 1) at the threshold just below every non-mated search's top distance (FPIR 0).

    With few non-mated groups (5 people in frmdb-lowres) FNIR at FPIR 5% cannot be resolved (it needs
    20); this is the strictest point that can. None without mated or non-mated searches.
    """
    tops = [o.candidates[0][1] for o in outcomes if not o.mated and o.candidates]
    if not any(o.mated for o in outcomes) or not any(not o.mated for o in outcomes):
        return None
    threshold = float(np.nextafter(min(tops), -np.inf)) if tops else math.inf
    return M.fnir_fpir_at_threshold(outcomes, threshold)._asdict()


def describe(group_by: str, person: PersonSettings, outcomes: Sequence[M.SearchOutcome], n_probes: int) -> dict:
    """What the person-level section was computed from (shown above its table), and FNIR at FPIR 0."""
    return {"group_by": group_by, "fusion": fusion_name(person.fusion, person.fusion_k),
            "n_groups": len(outcomes), "n_probes": n_probes,
            "n_groups_without_still": sum(not o.acquired for o in outcomes),
            "fnir_at_zero_fpir": fnir_at_zero_fpir(outcomes)}
