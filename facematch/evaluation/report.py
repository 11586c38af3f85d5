"""Evaluation reports: ``report.json``, a readable ``report.md`` and PNG plots, for one or more systems.

One result structure serves verification and identification; a section is present or absent. Build
sections with :func:`verification_summary` and :func:`identification_summary`, then write::

    result = {
        "title": "facematch on frmdb-dev-cctv",
        "protocol": {"name": ..., "description": ..., "n_gallery_images": 1105, ...},  # shown as a table
        "methods": ["one paragraph per item", ...],       # printed first
        "notes": ["caveat", ...],                          # optional; a small-data caveat is added
        "bands": {"strong": 0.45, "possible": 0.55, "weak": 0.6},  # optional; lines on histograms
        "gallery_bands": {...},  # optional: facematch.evaluation.band_rates (bands at the protocol gallery size)
        "systems": {                                       # one or more, shown side by side
            "facematch": {
                "description": "...",
                "verification": {                          # optional
                    "n_mated": int, "n_nonmated": int, "n_not_compared": int,
                    "eer": {"value": float, "threshold": float, "ci": [low, high] | None},
                    "tar_at_far": [{"far", "tar", "threshold", "fmr", "n_nonmated", "ci"}, ...],
                    "lfw_accuracy": {"mean", "std", "sem", "accuracies": [...], "thresholds": [...]},  # optional
                },
                "identification": {                        # optional
                    "n_mated": int, "n_nonmated": int, "rank": R,
                    "failures": {"fta", "fta_mated", "fta_nonmated", "n_probes", "fte", "n_gallery"},
                    "cmc": [{"rank", "hit_rate", "ci"}, ...],
                    "cmc_curve": {"ranks": [1..L], "hit_rate": [...]},
                    "fnir_at_fpir": [{"fpir_target", "threshold", "fnir", "fpir", "n_mated", "n_nonmated",
                                      "rank", "ci"}, ...],
                    "at_thresholds": [{"label", "threshold", "fnir", "fpir", "rank", ...}, ...],
                    "by_group": {"camera": {"metric": "rank-1 hit rate", "values": {group: v},
                                            "n_mated": {group: n}, "differential": {...}}},
                },
                "identification_without_distractors": {    # null without distractor subjects
                    "n_subjects", "n_distractor_subjects", "n_mated", "chance_rank1",
                    "cmc": [{"rank", "hit_rate", "ci"}, ...],  # mated searches ranked among probed subjects
                },
            },
            "baseline": {...},
        },
    }

``plots`` (optional) holds the raw distances the JSON does not keep:
``{"scores": {system: {"mated": (m,), "nonmated": (n,)}}, "search_scores": {system: {...}}}``;
``scores`` gives the DET plot and a histogram per system, ``search_scores`` (see
``metrics.search_scores``) a histogram of 1:N distances. The CMC plot uses ``cmc_curve``.
Rates are fractions in the JSON and percentages in Markdown; NaN and infinity are written as null
and shown as "n/a". ``ci`` is a 95% percentile bootstrap interval over subjects, or null.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist

import numpy as np

from facematch.errors import InvalidArgument
from facematch.evaluation import metrics as M
from facematch.evaluation.band_rates import band_rates_md
from facematch.settings import EvaluationSettings

_DEFAULTS = EvaluationSettings()

__all__ = ["verification_summary", "identification_summary", "jsonable", "write_report", "SMALL_N"]

log = logging.getLogger(__name__)
#: Below this many mated or non-mated trials, the report carries a "small data set" caveat.
SMALL_N = 1000


# ---------------------------------------------------------------------------------------------- sections

def _ci(items, fn, n_boot: int, seed: int, cluster_of=None):
    return list(M.bootstrap_ci(items, fn, cluster_of=cluster_of, n_boot=n_boot, seed=seed)) if n_boot else None


def verification_summary(distances, same, *, clusters=None, folds=None, fars: Sequence[float] = (0.001, 0.01, 0.1),
                         n_boot: int = _DEFAULTS.n_boot, seed: int = _DEFAULTS.seed, n_not_compared: int = 0) -> dict:
    """The ``verification`` section from comparison distances ``(n,)`` and ``same`` ``(n,)`` bool.

    ``clusters`` ``(n,)`` labels the person behind each comparison for the bootstrap (e.g. the first
    subject of each LFW pair); without it each comparison is its own cluster (narrower intervals).
    ``folds`` ``(n,)`` adds LFW-protocol accuracy. ``n_boot=0`` skips intervals.
    ``n_not_compared`` counts pairs left out because a face or template was missing (reported).
    """
    d = np.asarray(distances, dtype=np.float64)
    s = np.asarray(same, dtype=bool)
    idx = list(range(d.size))
    cluster_of = (lambda i: clusters[i]) if clusters is not None else None

    def split(ix):
        ix = np.asarray(ix, dtype=np.int64)
        return d[ix][s[ix]], d[ix][~s[ix]]

    value, threshold = M.eer(d[s], d[~s])
    out = {"n_mated": int(s.sum()), "n_nonmated": int((~s).sum()), "n_not_compared": int(n_not_compared),
           "eer": {"value": value, "threshold": threshold,
                   "ci": _ci(idx, lambda ix: M.eer(*split(ix))[0], n_boot, seed, cluster_of)},
           "tar_at_far": []}
    for far in fars:
        point = M.tar_at_far(d[s], d[~s], far)._asdict()
        point["ci"] = (None if math.isnan(point["tar"]) else
                       _ci(idx, lambda ix, f=far: M.tar_at_far(*split(ix), f).tar, n_boot, seed, cluster_of))
        out["tar_at_far"].append({"far": far, **point})
    if folds is not None:
        out["lfw_accuracy"] = M.lfw_10fold_accuracy(d, s, folds)._asdict()
    return out


def identification_summary(outcomes: Sequence[M.SearchOutcome], *, ranks: Sequence[int] = (1, 5, 10, 20, 50),
                           fpir_targets: Sequence[float] = (0.01, 0.05, 0.10), rank: int = 1,
                           thresholds: Mapping[str, float] | None = None,
                           groups: Mapping[str, Mapping[str, str]] | None = None,
                           n_gallery: int | None = None, n_gallery_failed: int = 0,
                           n_boot: int = _DEFAULTS.n_boot, seed: int = _DEFAULTS.seed) -> dict:
    """The ``identification`` section from search outcomes (failures to acquire included).

    ``thresholds`` ({label: distance}, e.g. the review bands) adds FNIR/FPIR at each;
    ``groups`` ({attribute: {probe_id: value}}) adds rank-1 hit rate per group with a differential
    summary. Intervals resample subjects (``SearchOutcome.cluster_key``); ``n_boot=0`` skips them.
    Raises InvalidArgument when there is no mated search.
    """
    mated = [o for o in outcomes if o.mated]
    n_nonmated = len(outcomes) - len(mated)
    max_len = max([len(o.candidates) for o in outcomes] + [1])
    hits = M.cmc(outcomes, ranks=ranks)
    curve_ranks = list(range(1, min(max_len, max(ranks)) + 1))
    out = {"n_mated": len(mated), "n_nonmated": n_nonmated, "rank": rank,
           "failures": M.failure_rates(outcomes, n_gallery=n_gallery, n_gallery_failed=n_gallery_failed)._asdict(),
           "cmc": [{"rank": r, "hit_rate": v,
                    "ci": _ci(outcomes, lambda o, r=r: M.cmc(o, ranks=(r,))[r], n_boot, seed)}
                   for r, v in hits.items()],
           "cmc_curve": {"ranks": curve_ranks, "hit_rate": list(M.cmc(outcomes, ranks=curve_ranks).values())},
           "fnir_at_fpir": [], "at_thresholds": [], "by_group": {}}
    if n_nonmated:
        for p in M.fnir_at_fpir(outcomes, fpir_targets, rank=rank):
            ci = None if math.isnan(p.fnir) else _ci(
                outcomes, lambda o, t=p.fpir_target: M.fnir_at_fpir(o, (t,), rank=rank)[0].fnir, n_boot, seed)
            out["fnir_at_fpir"].append({**p._asdict(), "ci": ci})
        for label, t in (thresholds or {}).items():
            out["at_thresholds"].append(
                {"label": label, **M.fnir_fpir_at_threshold(outcomes, t, rank=rank)._asdict()})
    for attribute, mapping in (groups or {}).items():
        values = M.by_group(outcomes, mapping, lambda o: M.cmc(o, ranks=(1,))[1])
        counts = M.by_group(outcomes, mapping, lambda o: sum(x.mated for x in o))
        out["by_group"][attribute] = {"metric": "rank-1 hit rate", "values": values,
                                      "n_mated": {g: int(n) for g, n in counts.items()},
                                      "differential": M.differential(values)}
    return out


# -------------------------------------------------------------------------------------------------- JSON

def jsonable(obj):
    """``obj`` with numpy values as Python ones, tuples as lists, paths as strings, NaN/inf as None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------------------------------------- Markdown

def _pct(v, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def _rate(entry: Mapping | None, key: str) -> str:
    if not entry or entry.get(key) is None:
        return "n/a"
    ci = entry.get("ci")
    band = f" ({_pct(ci[0])}–{_pct(ci[1])})" if ci and None not in ci else ""
    return _pct(entry[key]) + band


def _num(v) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def _section(systems: Mapping, key: str) -> dict:
    return {name: sysd[key] for name, sysd in systems.items() if sysd.get(key)}


def _by_value(entries: list[dict], key: str, value) -> dict | None:
    return next((e for e in entries if e.get(key) == value), None)


def _verification_md(sec: dict) -> list[str]:
    names = list(sec)
    rows = [["mated / non-mated comparisons"] + [f"{s['n_mated']} / {s['n_nonmated']}" for s in sec.values()],
            ["not compared (no face or template)"] + [str(s.get("n_not_compared", 0)) for s in sec.values()],
            ["EER (95% CI)"] + [_rate(s["eer"], "value") for s in sec.values()],
            ["EER threshold (distance)"] + [_num(s["eer"]["threshold"]) for s in sec.values()]]
    fars = sorted({p["far"] for s in sec.values() for p in s["tar_at_far"]})
    for far in fars:
        points = [_by_value(s["tar_at_far"], "far", far) for s in sec.values()]
        rows.append([f"TAR at FAR {_pct(far, 2)} (95% CI)"] + [_rate(p, "tar") for p in points])
        rows.append([f"threshold for FAR {_pct(far, 2)}"] + [_num(p and p["threshold"]) for p in points])
    if any("lfw_accuracy" in s for s in sec.values()):
        rows.append(["LFW accuracy, mean ± SEM over folds"] + [
            f"{_pct(s['lfw_accuracy']['mean'], 2)} ± {_pct(s['lfw_accuracy']['sem'], 2)}"
            if "lfw_accuracy" in s else "n/a" for s in sec.values()])
    return ["## Verification (1:1)", ""] + _table(["metric"] + names, rows)


def _person_md(sec: dict) -> list[str]:
    first = next(iter(sec.values()))
    head = (f"## Person-level identification (1:N, one search per {first['group_by']} group, fusion "
            f"{first['fusion']})")
    intro = (f"{first['n_probes']} probes in {first['n_groups']} groups; each group's stills are searched as one "
             "person (the same searches as the per-still table above, fused).")
    lines = _identification_md(sec, title=head, intro=[intro, ""])
    zero = {n: s.get("fnir_at_zero_fpir") for n, s in sec.items()}
    if any(zero.values()):
        lines += ["FNIR (rank 1) at FPIR 0, the threshold just below every non-mated group's top distance "
                  "(computable with few non-mated groups): " + "; ".join(
                      f"{n} {_pct(z['fnir'])} (d ≤ {_num(z['threshold'])})" for n, z in zero.items() if z), ""]
    return lines


def _without_distractors_md(sec: dict) -> list[str]:
    names, vals = list(sec), list(sec.values())
    first = vals[0]
    rows = [[f"rank-{c['rank']} hit rate (95% CI)"] + [_rate(_by_value(s["cmc"], "rank", c["rank"]), "hit_rate")
                                                     for s in vals] for c in first["cmc"]]
    rows.append(["rank-1 by chance"] + [_pct(s["chance_rank1"]) for s in vals])
    return ["### Rank among the probed subjects only (distractors removed)", "",
            f"The {first['n_mated']} mated searches ranked among the {first['n_subjects']} gallery subjects some probe "
            f"shows, the {first['n_distractor_subjects']} others (distractors) removed: a system that only told the "
            "gallery's sources apart would gain rank-k above without gaining here (facematch.evaluation.distractors).",
            ""] + _table(["metric"] + names, rows)


def _identification_md(sec: dict, *, title: str = "## Identification (1:N)", intro: list[str] | None = None
                       ) -> list[str]:
    names, vals = list(sec), list(sec.values())
    rows = [["mated / non-mated searches"] + [f"{s['n_mated']} / {s['n_nonmated']}" for s in vals],
            ["failure to acquire: all / mated / non-mated"] + [
                " / ".join(_pct(s["failures"][k]) for k in ("fta", "fta_mated", "fta_nonmated")) for s in vals]]
    if any(s["failures"].get("n_gallery") for s in vals):
        rows.append(["failure to enrol (gallery)"] + [_pct(s["failures"].get("fte")) for s in vals])
    for r in sorted({c["rank"] for s in vals for c in s["cmc"]}):
        rows.append([f"rank-{r} hit rate (95% CI)"] + [_rate(_by_value(s["cmc"], "rank", r), "hit_rate")
                                                       for s in vals])
    for target in sorted({p["fpir_target"] for s in vals for p in s["fnir_at_fpir"]}):
        pts = [_by_value(s["fnir_at_fpir"], "fpir_target", target) for s in vals]
        rows.append([f"FNIR at FPIR {_pct(target)} (rank {vals[0]['rank']})"] + [
            _rate(p, "fnir") if p and p["fnir"] is not None else f"n/a (needs ≥ {math.ceil(1 / target)} "
            "non-mated searches)" for p in pts])
    for label in dict.fromkeys(p["label"] for s in vals for p in s["at_thresholds"]):
        pts = [_by_value(s["at_thresholds"], "label", label) for s in vals]
        rows.append([f"FNIR / FPIR at {label}"] + [
            f"{_pct(p['fnir'])} / {_pct(p['fpir'])} (d ≤ {_num(p['threshold'])})" if p else "n/a" for p in pts])
    lines = [title, ""] + (intro or []) + _table(["metric"] + names, rows)
    for attribute in dict.fromkeys(a for s in vals for a in s["by_group"]):
        per = [s["by_group"].get(attribute) for s in vals]
        groups = sorted({g for b in per if b for g in b["values"]})
        rows = [[g] + [f"{_pct(b['values'].get(g))} (n={b['n_mated'].get(g, 0)})" if b else "n/a" for b in per]
                for g in groups]
        rows.append(["max − min"] + [_pct(b["differential"]["difference"]) if b else "n/a" for b in per])
        rows.append(["max / min"] + [_num(b["differential"]["ratio"]) if b else "n/a" for b in per])
        lines += [f"### Rank-1 hit rate by {attribute}", ""] + _table([attribute] + names, rows)
    return lines


def _caveats(result: Mapping) -> list[str]:
    notes = list(result.get("notes", []))
    sizes = [(name, key, sec["n_mated"], sec["n_nonmated"]) for name, sysd in result["systems"].items()
             for key in ("verification", "identification") if (sec := sysd.get(key))]
    small = [s for s in sizes if min(s[2], s[3]) < SMALL_N]
    if small:
        m = min(s[2] for s in small)
        n = min(s[3] for s in small)
        notes.insert(0, f"**Small data set.** As few as {m} mated and {n} non-mated trials: one trial moves "
                        f"a rate by up to {_pct(1 / max(m, 1), 2)}; intervals are wide and rates below "
                        f"1/{n} = {_pct(1 / max(n, 1), 2)} cannot be measured (shown as n/a). Treat differences "
                        "between systems inside overlapping intervals as unproven.")
    return notes


def _markdown(result: Mapping, images: dict[str, list[str]]) -> str:
    lines = [f"# {result.get('title', 'Evaluation report')}", "", "## Methods", ""]
    lines += [f"- {m}" for m in result.get("methods", [])] + [
        "- Scores are Euclidean distances between face descriptors: lower is more similar; a comparison "
        "matches when its distance is at or below the threshold.",
        "- Intervals are 95% percentile bootstrap intervals that resample subjects, not images.",
        "- A probe with no face or no template counts as a miss (mated) and returns no candidate "
        "(non-mated); it is never dropped.", ""]
    caveats = _caveats(result)
    if caveats:
        lines += ["## Caveats", ""] + [f"- {c}" for c in caveats] + [""]
    if result.get("protocol"):
        lines += ["## Protocol", ""] + _table(["item", "value"], [[k, str(v)] for k, v in result["protocol"].items()])
    if result.get("bands"):
        lines += _table(["review band", "distance ≤"], [[k, _num(v)] for k, v in result["bands"].items()])
    for name, desc in ((n, s.get("description")) for n, s in result["systems"].items()):
        if desc:
            lines.append(f"- **{name}**: {desc}")
    lines.append("")
    for key, render in (("verification", _verification_md), ("identification", _identification_md),
                        ("identification_without_distractors", _without_distractors_md),
                        ("person_identification", _person_md)):
        sec = _section(result["systems"], key)
        if sec:
            lines += render(sec) + [f"![{Path(p).stem}]({p})" for p in images.get(key, [])] + [""]
    if result.get("gallery_bands"):
        lines += band_rates_md(result["gallery_bands"])
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- plots

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _plot_det(scores: Mapping, path: Path) -> None:
    import matplotlib.pyplot as plt
    probit = NormalDist().inv_cdf
    ticks = (1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95)
    lo = max(1e-4, min(0.5 / min(len(s["mated"]), len(s["nonmated"])) for s in scores.values()))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, s in scores.items():
        fmr, fnmr, _ = M.det(s["mated"], s["nonmated"])
        ax.plot([probit(v) for v in np.clip(fmr, lo, 0.99)], [probit(v) for v in np.clip(fnmr, lo, 0.99)],
                label=name, drawstyle="steps-post")
    shown = [t for t in ticks if t >= lo]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks([probit(t) for t in shown], [f"{100 * t:g}%" for t in shown])
    ax.set(xlim=(probit(lo), probit(0.95)), ylim=(probit(lo), probit(0.95)), xlabel="FMR (false match rate)",
           ylabel="FNMR (false non-match rate)", title="DET (normal-deviate axes)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_hist(name: str, s: Mapping, bands: Mapping, path: Path, what: str) -> None:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    values = np.concatenate([np.asarray(s["mated"], float), np.asarray(s["nonmated"], float)])
    bins = np.linspace(values.min(), values.max(), 40) if values.size else 10
    for key, label in (("mated", "mated"), ("nonmated", "non-mated")):
        arr = np.asarray(s[key], float)
        if arr.size:
            ax.hist(arr, bins=bins, density=True, histtype="step", linewidth=1.5, label=f"{label} (n={arr.size})")
    for i, (band, t) in enumerate((bands or {}).items()):
        ax.axvline(t, color=f"C{i + 2}", linestyle="--", label=f"{band} ≤ {t:.3f}")
    ax.set(xlabel="distance (lower = more similar)", ylabel="density", title=f"{name}: {what}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_cmc(sec: Mapping, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, s in sec.items():
        ax.plot(s["cmc_curve"]["ranks"], s["cmc_curve"]["hit_rate"], marker=".", label=name)
    ax.set(xlabel="rank", ylabel="hit rate (mated searches)", ylim=(0, 1), title="CMC")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_plots(result: Mapping, plots: Mapping, out_dir: Path) -> dict[str, list[str]]:
    import matplotlib
    matplotlib.use("Agg")  # no display needed; chosen here, not at import
    images: dict[str, list[str]] = {"verification": [], "identification": [], "person_identification": []}
    bands = result.get("bands") or {}
    scores = plots.get("scores") or {}
    if scores:
        _plot_det(scores, out_dir / "det.png")
        images["verification"].append("det.png")
        for name, s in scores.items():
            _plot_hist(name, s, bands, out_dir / f"scores_{_slug(name)}.png", "comparison distances")
            images["verification"].append(f"scores_{_slug(name)}.png")
    ident = _section(result["systems"], "identification")
    if any(s.get("cmc_curve") for s in ident.values()):
        _plot_cmc({n: s for n, s in ident.items() if s.get("cmc_curve")}, out_dir / "cmc.png")
        images["identification"].append("cmc.png")
    for name, s in (plots.get("search_scores") or {}).items():
        _plot_hist(name, s, bands, out_dir / f"search_scores_{_slug(name)}.png",
                   "true-subject vs non-mated top-1 distances")
        images["identification"].append(f"search_scores_{_slug(name)}.png")
    return images


def write_report(result: Mapping, out_dir: str | Path, plots: Mapping | None = None) -> dict:
    """Write ``report.json``, ``report.md`` and PNG plots into ``out_dir`` (created if needed).

    ``result`` and ``plots`` follow the module docstring. The JSON has sorted keys and null for
    NaN/infinity. Returns ``{"json": Path, "markdown": Path, "plots": [Path, ...]}``.
    """
    if not isinstance(result.get("systems"), Mapping) or not result["systems"]:
        raise InvalidArgument("a report result needs a non-empty 'systems' mapping")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = jsonable(result)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(clean, sort_keys=True, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    images = _write_plots(clean, plots or {}, out_dir)
    md_path = out_dir / "report.md"
    md_path.write_text(_markdown(clean, images), encoding="utf-8")
    pngs = [out_dir / p for ps in images.values() for p in ps]
    log.info("report written to %s (%d plots)", out_dir, len(pngs))
    return {"json": json_path, "markdown": md_path, "plots": pngs}
