"""Review bands on an evaluation protocol: what the calibration predicts at its gallery size, what happens.

Search resolves the bands for the live gallery (``BandScheme.for_gallery``); an evaluation does the same for
the protocol's gallery, then counts per band (at or below its distance) the non-mated searches with at
least one candidate (observed FPIR, beside the predicted ``1 - exp(-expected false candidates)``) and the
mated searches whose true subject is not inside it at any listed rank (FNIR), beside the FNIR the
calibration's own mated searches predict there (``1 -`` each data set's reach, calibration schema 2): on a
protocol unlike the calibration data the two part, and the report shows by how much. Given the probes'
quality scores, the prediction is also made probe by probe from the calibration's quality bins (what
search shows each probe), averaged over the protocol's mated probes with a face.
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


def _quality_matched_fnir(band, outcomes: Sequence[M.SearchOutcome], scores: Mapping[str, float]) -> dict:
    """Per calibration data set with quality bins: 1 - the mean, over the mated probes with a face and a
    quality score, of the reach of the bin holding each probe's quality."""
    mated = [scores[o.probe_id] for o in outcomes if o.true_subject is not None and o.acquired and o.probe_id in scores]
    out = {}
    for reach in band.mated_reach:
        bins = [reach.for_quality(q) for q in mated]
        if mated and all(b is not None for b in bins):
            out[reach.source] = {"fnir": 1.0 - sum(b.fraction for b in bins) / len(bins), "n_mated": len(bins)}
    return out


def band_rates(bands: GalleryBands, outcomes: Mapping[str, Sequence[M.SearchOutcome]],
               quality_scores: Mapping[str, float] | None = None) -> dict:
    """The ``gallery_bands`` report section: each band's meaning and prediction, and each system's rates.

    ``quality_scores`` ({probe id: facematch quality score}) adds each band's quality-matched predicted FNIR,
    computed over the first system's outcomes (the probes those scores belong to).
    """
    rows = []
    first = next(iter(outcomes.values()), [])
    for b in bands.bands:
        rows.append({"band": b.band, "meaning": b.meaning, "threshold": b.threshold, "supported": b.supported,
                     "max_false": b.max_false, "expected_false": b.expected_false,
                     "predicted_fpir": b.predicted_fpir,
                     "predicted_fnir": {r.source: 1.0 - r.fraction for r in b.mated_reach},
                     "predicted_fnir_quality_matched": _quality_matched_fnir(b, first, quality_scores or {}),
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
             "distance (at any rank), overall and (quality-matched) from the quality bin of each of this "
             "protocol's mated probes with a face; the observed FNIR also counts the probes with no face.", "",
             "| band | meaning | system | predicted FPIR | observed FPIR | predicted FNIR | quality-matched | FNIR |",
             "|---|---|---|---|---|---|---|---|"]
    for row in section["bands"]:
        predicted_fnir = "; ".join(f"{_pct(v)} ({name})" for name, v in (row.get("predicted_fnir") or {}).items())
        matched = "; ".join(f"{_pct(v['fnir'])} ({name}, n={v['n_mated']})"
                            for name, v in (row.get("predicted_fnir_quality_matched") or {}).items())
        for name, obs in row["observed"].items():
            lines.append(f"| {row['band']} | {row['meaning']} | {name} | {_pct(row['predicted_fpir'])} | "
                         f"{_pct(obs['fpir'])} (n={obs['n_nonmated']}) | {predicted_fnir or 'n/a'} | "
                         f"{matched or 'n/a'} | {_pct(obs['fnir'])} (n={obs['n_mated']}) |")
    return lines + [""]
