"""Review bands on an evaluation protocol: what the calibration predicts at its gallery size, what happens.

Search resolves the bands for the live gallery (``BandScheme.for_gallery``); an evaluation does the same for
the protocol's gallery, then counts per band (at or below its distance) the non-mated searches with at
least one candidate (observed FPIR, beside the predicted ``1 - exp(-expected false candidates)``) and the
mated searches whose true subject is not inside it at any listed rank (FNIR), beside the FNIR the
calibration's own mated searches predict there (``1 -`` each data set's reach, calibration schema 2): on a
protocol unlike the calibration data the two part, and the report shows by how much.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from facematch.evaluation import metrics as M
from facematch.search.bands import GalleryBands

__all__ = ["band_rates", "band_rates_md"]


def _observed(outcomes: Sequence[M.SearchOutcome], threshold: float | None) -> dict:
    mated = [o for o in outcomes if o.true_subject is not None]
    nonmated = [o for o in outcomes if o.true_subject is None]
    if threshold is None:  # the band holds no candidates
        return {"fpir": 0.0 if nonmated else None, "fnir": 1.0 if mated else None,
                "n_mated": len(mated), "n_nonmated": len(nonmated)}
    false_pos = sum(bool(o.candidates) and o.candidates[0][1] <= threshold for o in nonmated)
    hits = sum(any(s == o.true_subject and d <= threshold for s, d in o.candidates) for o in mated)
    return {"fpir": false_pos / len(nonmated) if nonmated else None,
            "fnir": 1 - hits / len(mated) if mated else None, "n_mated": len(mated), "n_nonmated": len(nonmated)}


def band_rates(bands: GalleryBands, outcomes: Mapping[str, Sequence[M.SearchOutcome]]) -> dict:
    """The ``gallery_bands`` report section: each band's meaning and prediction, and each system's rates."""
    rows = []
    for b in bands.bands:
        rows.append({"band": b.band, "meaning": b.meaning, "threshold": b.threshold, "supported": b.supported,
                     "max_false": b.max_false, "expected_false": b.expected_false,
                     "predicted_fpir": b.predicted_fpir,
                     "predicted_fnir": {name: 1.0 - reach for name, _, reach in b.mated_reach},
                     "observed": {name: _observed(outs, b.threshold) for name, outs in outcomes.items()}})
    return {"calibrated": bands.scheme.calibrated, "gallery_subjects": bands.subjects,
            "gallery_faces": bands.faces, "bands": rows}


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def band_rates_md(section: Mapping) -> list[str]:
    """Markdown lines: one row per band and system (predicted vs observed FPIR, FNIR at any listed rank)."""
    head = (f"## Review bands at this gallery size ({section['gallery_subjects']:,} subjects, "
            f"{section['gallery_faces']:,} images)")
    lines = [head, "", "FPIR: non-mated searches with at least one candidate at or below the band's distance; "
             "FNIR: mated searches whose true subject is not there at any listed rank. Predicted FPIR = "
             "1 − exp(−expected false candidates) from the calibration's FMR curve; predicted FNIR = the share "
             "of each calibration data set's mated searches with a face that did not come within the band's "
             "distance (at any rank); the observed FNIR also counts the probes with no face.", "",
             "| band | meaning | system | predicted FPIR | observed FPIR | predicted FNIR | FNIR |",
             "|---|---|---|---|---|---|---|"]
    for row in section["bands"]:
        predicted_fnir = "; ".join(f"{_pct(v)} ({name})" for name, v in (row.get("predicted_fnir") or {}).items())
        for name, obs in row["observed"].items():
            lines.append(f"| {row['band']} | {row['meaning']} | {name} | {_pct(row['predicted_fpir'])} | "
                         f"{_pct(obs['fpir'])} (n={obs['n_nonmated']}) | {predicted_fnir or 'n/a'} | "
                         f"{_pct(obs['fnir'])} (n={obs['n_mated']}) |")
    return lines + [""]
