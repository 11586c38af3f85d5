"""Plain-text rendering of results for the CLI (the library returns data; this turns it into lines)."""

from __future__ import annotations

from facematch.search.bands import one_in
from facematch.search.ranking import SearchResult

__all__ = ["search_lines", "ingest_lines", "verify_lines"]


def search_lines(result: SearchResult, decisions: list | None = None) -> list[str]:
    """A search as an investigator reads it: notice, bands, then each probe face's candidate lists."""
    bands = result.bands
    t = bands["thresholds"]
    lines = [
        f"Search {result.search_id}  ({result.created_at}, user {result.user}, case {result.case_ref or '-'})",
        f"NOTICE: {result.notice}",
        f"Gallery: {result.gallery_subjects} custody subjects ({result.gallery_faces} enrolled faces).",
        f"Bands ({'calibrated: ' + bands['source'] if bands['calibrated'] else bands['source']}): "
        f"strong <= {t['strong']:.3f} < possible <= {t['possible']:.3f} < weak <= {t['weak']:.3f} (distance)",
    ]
    if not bands["calibrated"]:
        lines.append("WARNING: bands are uncalibrated defaults, not measured error rates "
                     "(run `facematch calibrate`).")
    elif result.expected_false_candidates is not None:
        lines.append(f"Expected false candidates per probe face inside the bands at this gallery size: "
                     f"about {result.expected_false_candidates:.2g}.")
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
        lines.append("  Custody candidates (subjects):" if probe.subjects else "  Custody candidates: none")
        for c in probe.subjects:
            fmr = "" if c.estimated_fmr is None else f"  FMR {one_in(c.estimated_fmr)}"
            lines.append(f"   {c.rank:>3}. {c.subject:<20} distance {c.distance:.3f}  score {c.score:5.1f}  "
                         f"{c.band:<8} best image {c.image_path}{fmr}")
        if probe.scene_faces:
            lines.append("  Unidentified faces from earlier crime-scene images:")
            for c in probe.scene_faces:
                lines.append(f"   {c.rank:>3}. case {c.case_ref:<16} distance {c.distance:.3f}  "
                             f"score {c.score:5.1f}  {c.band:<8} {c.image_path}")
    for d in decisions or []:
        lines.append(f"Decision {d.decision_id}: probe {d.probe_no} {d.list} rank {d.rank} ({d.candidate}) "
                     f"{d.decision.upper()} by {d.reviewer} at {d.decided_at}" + (f": {d.note}" if d.note else ""))
    return lines


def ingest_lines(summary) -> list[str]:
    s = summary.to_dict()
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items())) or "none"
    return [
        f"Ingest run {s['run_id']} ({s['kind']}): {s['total']} files; processed {s['processed']} "
        f"in {s['seconds']:.1f} s ({s['images_per_second']:.2f} images/s)",
        f"  outcomes: {outcomes}",
        f"  already stored (skipped): {s['already_stored']}; duplicates in source: {s['duplicates_in_source']}; "
        f"unreadable paths: {s['unreadable_paths']}; faces stored: {s['faces_stored']}",
    ]


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
    return lines
