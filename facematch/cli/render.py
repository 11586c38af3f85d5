"""Plain-text rendering of results for the CLI (the library returns data; this turns it into lines).

Every value that reaches a terminal goes through :func:`safe` (commands print nothing else): stored text
written before validation existed, file names, or any value from a database someone else wrote must not
be able to move the cursor, recolour the screen or forge an extra line.
"""

from __future__ import annotations

import json

from facematch.search.bands import REACH_HEADING, one_in, reach_summary
from facematch.search.ranking import SearchResult
from facematch.validation import forbidden_character

__all__ = ["safe", "search_lines", "band_lines", "person_lines", "ingest_lines", "audit_line", "verify_lines"]


def safe(value) -> str:
    """``str(value)`` with every control, line-separator and bidi character escaped (``\\x1b``, ``\\u202e``)."""
    text = str(value)
    if forbidden_character(text) is None:
        return text
    return "".join(char if forbidden_character(char) is None else ascii(char)[1:-1] for char in text)


def audit_line(entry: dict) -> str:
    """One audit-log entry as one line (details as JSON, which escapes control characters itself)."""
    return safe(f"{entry['id']:>6} {entry['at']} {entry['actor']:<12} {entry['action']:<24} "
                f"{json.dumps(entry['details'])}")


def search_lines(result: SearchResult, decisions: list | None = None) -> list[str]:
    """A search as an investigator reads it: notice, bands, then each probe face's candidate lists."""
    lines = [
        f"Search {result.search_id}  ({result.created_at}, user {result.user}, case {result.case_ref or '-'})",
        f"NOTICE: {result.notice}",
        f"Gallery: {result.gallery_subjects} custody subjects ({result.gallery_faces} enrolled faces).",
    ] + band_lines(result.bands, result.expected_false_candidates)
    if result.scene_bands and result.scene_bands.get("bands") and result.scene_bands.get("gallery_subjects"):
        lines.append(f"Scene-face bands ({result.scene_bands['gallery_subjects']} unidentified faces): " + "; ".join(
            f"{b['band']} <= {b['threshold']:.3f}" if b["threshold"] is not None else f"{b['band']} not supported"
            for b in result.scene_bands["bands"]))
    if result.person is not None:
        lines += [""] + person_lines(result.person, result.top)
    for probe in result.probes:
        lines.append("")
        head = f"Probe {probe.probe_no}: {probe.path}"
        if probe.outcome != "searched":
            lines.append(f"{head}  -- not searched: {probe.reason}")
            continue
        x, y, w, h = probe.box
        lines.append(f"{head}  face {probe.face_no + 1} at x={x} y={y} w={w} h={h} "
                     f"({probe.detector}), quality {probe.quality_score:.0f}/100")
        if probe.warning:
            lines.append(f"  WARNING: {probe.warning}")
        lines += [f"  If enrolled, the calibration's searches with probes of this quality reached: {line}"
                  for line in reach_summary(result.bands.get("bands") or [], probe.quality_score)]
        lines.append("  Custody candidates (subjects):" if probe.subjects else "  Custody candidates: none")
        for c in probe.subjects:
            fmr = "" if c.estimated_fmr is None else f"  FMR {one_in(c.estimated_fmr)}"
            where = f"best image {c.image_path}{fmr}" if c.deleted is None else c.deleted.upper()
            lines.append(f"   {c.rank:>3}. {c.subject or '[deleted]':<20} distance {c.distance:.3f}  "
                         f"score {c.score:5.1f}  {c.band:<8} {where}")
        if probe.scene_faces:
            lines.append("  Unidentified faces from earlier crime-scene images:")
            for c in probe.scene_faces:
                where = c.image_path if c.deleted is None else c.deleted.upper()
                lines.append(f"   {c.rank:>3}. case {c.case_ref or '[deleted]':<16} distance {c.distance:.3f}  "
                             f"score {c.score:5.1f}  {c.band:<8} {where}")
    for d in decisions or []:
        where = "person-level list" if d.probe_no == 0 else f"probe {d.probe_no} {d.list}"
        lines.append(f"Decision {d.decision_id}: {where} rank {d.rank} ({d.candidate}) "
                     f"{d.decision.upper()} by {d.reviewer} at {d.decided_at}" + (f": {d.note}" if d.note else ""))
    return [safe(line) for line in lines]


def band_lines(bands: dict, expected_false: float | None) -> list[str]:
    """What each band means at this gallery size (searches stored before schema 2 show their thresholds)."""
    source = ("calibrated: " + bands["source"]) if bands["calibrated"] else bands["source"]
    if "bands" not in bands:
        t = bands["thresholds"]
        lines = [f"Bands ({source}): strong <= {t['strong']:.3f} < possible <= {t['possible']:.3f} "
                 f"< weak <= {t['weak']:.3f} (distance)"]
    else:
        lines = [f"Bands ({source}):"] + [f"  {b['meaning']}" for b in bands["bands"]]
    if not bands["calibrated"]:
        lines.append("WARNING: bands are uncalibrated defaults, not measured error rates "
                     "(run `facematch calibrate`).")
    elif expected_false is not None:
        lines.append(f"Expected false candidates per probe face inside the bands at this gallery size: "
                     f"about {expected_false:.2g}.")
    return lines + _reach_lines(bands.get("bands") or [])


def _reach_lines(bands: list[dict]) -> list[str]:
    """The miss side of the bands: how often each would have held an enrolled person (calibration data)."""
    summary = reach_summary(bands)
    return [REACH_HEADING + ":"] + [f"  {line}" for line in summary] if summary else []


def person_lines(person, top: int) -> list[str]:
    """The fused list of a person-level search, each candidate with the stills' distances behind it."""
    lines = [f"Person-level search: {person.stills} stills of one person, {person.stills_searched} searched; "
             f"fusion {person.fusion}. Decide on this list without --probe.",
             "  Fused custody candidates (subjects):" if person.candidates else "  Fused custody candidates: none"]
    for c in person.candidates:
        fmr = "" if c.estimated_fmr is None else f"  FMR {one_in(c.estimated_fmr)}"
        lines.append(f"   {c.rank:>3}. {c.subject:<20} distance {c.distance:.3f}  score {c.score:5.1f}  "
                     f"{c.band:<8} best image {c.image_path}{fmr}")
        stills = ", ".join(f"probe {s.probe_no} {s.distance:.3f} (rank {s.rank if s.rank else f'>{top}'})"
                           for s in c.support)
        lines.append(f"        per still: {stills}")
    return lines


def ingest_lines(summary) -> list[str]:
    s = summary.to_dict()
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items())) or "none"
    return [safe(line) for line in [
        f"Ingest run {s['run_id']} ({s['kind']}): {s['total']} files; processed {s['processed']} "
        f"in {s['seconds']:.1f} s ({s['images_per_second']:.2f} images/s)",
        f"  outcomes: {outcomes}",
        f"  already stored (skipped): {s['already_stored']}; duplicates in source: {s['duplicates_in_source']}; "
        f"unreadable paths: {s['unreadable_paths']}; faces stored: {s['faces_stored']}",
        f"  refused rows (invalid fields): {s['invalid_rows']}; label conflicts (refused): {s['label_conflicts']}; "
        f"relabelled: {s['relabelled']}",
    ]]


def verify_lines(report: dict[str, dict]) -> list[str]:
    """``index verify``: per index, what was compared and every difference, naming face ids."""
    lines = []
    for kind, check in report.items():
        head = (f"{kind}: {check['index_faces']} faces in the index, {check['catalogue_faces']} in the catalogue, "
                f"{check['vectors_checked']} vectors compared")
        lines.append(head + (": ok" if check["ok"] else ":"))
        if check["problem"]:
            lines.append(f"  problem: {check['problem']}")
        for key, text in (("missing", "in the catalogue but not in the index"),
                          ("extra", "in the index but no longer in the catalogue"),
                          ("differing", "vector differs from the catalogue's embedding")):
            if check[key]:
                lines.append(f"  {len(check[key])} face id(s) {text}: {', '.join(map(str, check[key]))}")
    return [safe(line) for line in lines]
