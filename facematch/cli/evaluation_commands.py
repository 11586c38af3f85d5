"""``facematch evaluate``, ``facematch calibrate`` and ``facematch protocol``: thin adapters over the
API methods of the same names (:meth:`facematch.api.Facematch.evaluate` and so on).

Each command is a standalone Click command, registered on the main group with ``cli.add_command``. It
reads the settings the group put in ``ctx.obj["settings"]`` (else ``Settings.from_env()``), calls the
library and turns facematch's named errors into ``error: <message>`` with exit status 1.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import click

from facematch.api import Facematch
from facematch.cli.support import CONTEXT, DEFAULTS, parse_box
from facematch.cli.support import fail_cleanly as _fail_cleanly
from facematch.search.bands import supported_faces
from facematch.settings import Settings

__all__ = ["evaluate", "calibrate", "protocol", "COMMANDS", "progress_line"]

#: What a labelled SOURCE can be.
SOURCE_KINDS = ["auto", "folder", "protocol", "lfw-pairs"]
_EVAL = DEFAULTS.evaluation


def _open(ctx: click.Context) -> Facematch:
    obj = ctx.find_root().obj
    settings = obj["settings"] if isinstance(obj, dict) and "settings" in obj else Settings.from_env()
    return Facematch(settings=settings)


def _options(options):
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


_source_options = _options([
    click.option("--kind", type=click.Choice(SOURCE_KINDS), default="auto", show_default=True,
                 help="What SOURCE is; auto: a folder, a *.json protocol, else an LFW pairs file."),
    click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
                 help="Folder the image paths of a protocol or pairs file are relative to."),
    click.option("--gallery-per-subject", type=click.IntRange(min=1), default=_EVAL.gallery_per_subject,
                 show_default=True, help="Folder split: gallery images enrolled per identity."),
    click.option("--holdout-fraction", type=click.FloatRange(0, 1, max_open=True), default=_EVAL.holdout_fraction,
                 show_default=True, help="Folder split: fraction of identities held out (non-mated probes)."),
    click.option("--seed", type=int, default=_EVAL.seed, show_default=True, help="Folder split and bootstrap seed."),
])

_embedding_options = _options([
    click.option("--workers", type=click.IntRange(min=1), help="Worker processes [default: CPU cores]."),
    click.option("--num-jitters", type=click.IntRange(min=1),
                 help="facematch descriptor jitters, gallery and probes [default: settings]."),
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                 default=_EVAL.cache_dir, show_default=True,
                 help="Embedding cache (reused by later evaluations and calibrations)."),
    click.option("--no-cache", is_flag=True, help="Embed everything afresh and keep nothing."),
])


class _Progress:
    """Progress of long embedding runs on stderr: images done / total, rate and time left, for each stage.

    Printed at most every ``every_s`` seconds (and when a stage ends), also when stderr is not a terminal
    (a log file or CI shows a line each time); on a terminal the line is rewritten in place.
    """

    def __init__(self, every_s: float = 3.0, clock=time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.tty = sys.stderr.isatty()
        self.stage, self.started, self.last, self.first_done = None, 0.0, -math.inf, 0

    def __call__(self, what: str, done: int, total: int) -> None:
        now = self.clock()
        if what != self.stage:
            self.stage, self.started, self.first_done = what, now, done
        finished = done >= total
        if not finished and now - self.last < self.every_s:
            return
        self.last = now
        click.echo(("\r" if self.tty else "") + progress_line(what, done, total, now - self.started,
                                                                 done - self.first_done),
                   err=True, nl=finished or not self.tty)


def progress_line(what: str, done: int, total: int, seconds: float, embedded: int) -> str:
    """``"facematch probes: 45/75 images (0.35/s, about 1 min 26 s left)"``; the rate counts images
    ``embedded`` in ``seconds`` since the stage started (cached ones arrive at once and are not a rate)."""
    rate = embedded / seconds if seconds > 0 else 0.0
    if done >= total:
        left = "done"
    elif rate > 0:
        m, sec = divmod(int(round((total - done) / rate)), 60)
        left = f"about {m} min {sec} s left" if m else f"about {sec} s left"
    else:
        left = "time left not known yet"
    return f"{what}: {done}/{total} images ({rate:.2f}/s, {left})"


def _progress():
    return _Progress()


@click.command(context_settings=CONTEXT)
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              default=Path("reports") / "evaluation", show_default=True, help="Report folder.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also run face_recognition as its README shows, on the same images.")
@click.option("--fallback-box", callback=parse_box,
              help="LFW-style data only: when no face is found, use this fixed box: x,y,w,h in pixels.")
@click.option("--face", "face_choice", type=click.Choice(["largest", "central"]),
              help="Which detected face is the labelled person's: the largest, or the one nearest the image "
              "centre. Default: central for LFW pairs (LFW's definition: its images are cropped around the "
              "labelled face), largest otherwise (what search ranks first).")
@click.option("--n-boot", type=click.IntRange(min=0), default=_EVAL.n_boot, show_default=True,
              help="Bootstrap replicates for the 95% intervals (0: none).")
@click.option("--group-by", default="auto", show_default=True,
              help="Protocols: also score person-level searches, one per group of probes: auto (the 'person' "
              "attribute when the probes have it), subject (the person each probe shows), none, or an attribute.")
@_source_options
@_embedding_options
@click.pass_context
@_fail_cleanly
def evaluate(ctx, source, output, baseline, fallback_box, face_choice, n_boot, group_by, kind, data_root,
             gallery_per_subject, holdout_fraction, seed, workers, num_jitters, cache_dir, no_cache):
    """Measure match accuracy on SOURCE (labelled folder, protocol JSON or LFW pairs.txt), facematch
    beside the face_recognition baseline; write report.json, report.md and PNG plots.

    \b
    Example:
      facematch evaluate ../shared/data/protocols/frmdb-dev-cctv.json -o reports/frmdb --group-by subject
      facematch evaluate ../shared/data/protocols/frmdb-lowres-cctv.json -o reports/lowres
      facematch evaluate ../shared/data/lfw/pairs.txt --workers 2 -o reports/lfw
      facematch evaluate ./labelled-faces --holdout-fraction 0.25 --no-baseline
    """
    evaluation, paths = _open(ctx).evaluate(
        source, output=output, baseline=baseline, fallback_box=fallback_box, face=face_choice, n_boot=n_boot,
        kind=kind, data_root=data_root, gallery_per_subject=gallery_per_subject, holdout_fraction=holdout_fraction,
        seed=seed, workers=workers, num_jitters=num_jitters, cache_dir=cache_dir, no_cache=no_cache,
        progress=_progress(), group_by=None if group_by == "auto" else group_by)
    click.echo(f"Report: {paths['markdown']} (JSON: {paths['json']}, {len(paths['plots'])} plots)")
    for name, section in evaluation.result["systems"].items():
        click.echo(f"  {name}: {_headline(section)}")


def _headline(section: dict) -> str:
    parts = []
    if (ident := section.get("identification")):
        rank1 = next(c["hit_rate"] for c in ident["cmc"] if c["rank"] == 1)
        parts.append(f"rank-1 hit rate {100 * rank1:.1f}%, failure to acquire {100 * ident['failures']['fta']:.1f}%")
    if (alone := section.get("identification_without_distractors")):
        rank1 = next(c["hit_rate"] for c in alone["cmc"] if c["rank"] == 1)
        parts.append(f"rank-1 among the {alone['n_subjects']} probed subjects {100 * rank1:.1f}% "
                     f"(chance {100 * alone['chance_rank1']:.1f}%)")
    if (person := section.get("person_identification")):
        rank1 = next(c["hit_rate"] for c in person["cmc"] if c["rank"] == 1)
        parts.append(f"person-level rank-1 {100 * rank1:.1f}% of {person['n_mated']} mated {person['group_by']} groups")
    if (ver := section.get("verification")):
        if "lfw_accuracy" in ver:
            acc = ver["lfw_accuracy"]
            parts.append(f"LFW accuracy {100 * acc['mean']:.2f}% ± {100 * acc['sem']:.2f}%")
        parts.append(f"EER {100 * ver['eer']['value']:.2f}%")
    return "; ".join(parts)


@click.command(context_settings=CONTEXT)
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Calibration file to write [default: <data-dir>/calibration.json, which search then uses].")
@click.option("--strong-fmr", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=_EVAL.fmr_targets.strong,
              show_default=True, help="Target false-match rate of the strong band.")
@click.option("--possible-fmr", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=_EVAL.fmr_targets.possible,
              show_default=True, help="Target false-match rate of the possible band.")
@click.option("--weak-fmr", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=_EVAL.fmr_targets.weak,
              show_default=True, help="Target false-match rate of the weak band.")
@click.option("--strict", is_flag=True,
              help="Refuse (exit 1) when a target needs more non-mated comparisons than the data has.")
@click.option("--listed-pairs-only", is_flag=True,
              help="Pairs files: use only the listed pairs, not every comparison between their images.")
@_source_options
@_embedding_options
@click.pass_context
@_fail_cleanly
def calibrate(ctx, sources, output, strong_fmr, possible_fmr, weak_fmr, strict, listed_pairs_only, kind,
              data_root, gallery_per_subject, holdout_fraction, seed, workers, num_jitters, cache_dir, no_cache):
    """Set the review-band thresholds from labelled SOURCES (folders, protocol JSON files, LFW
    pairs files) for target false-match rates, and write a calibration file with its provenance.

    With several sources each threshold meets its target on every one. A target below 3/n (n
    non-mated comparisons of the smallest source: the rule of three) is not supported: the band
    then falls back to the smallest non-mated distance seen, with a warning (or --strict refuses).
    Search bands by the file's FMR curve at the live gallery size (expected false candidates per
    search; settings.FalseCandidateTargets); these FMR thresholds are kept as references.

    \b
    Example:
      facematch calibrate ../shared/data/protocols/frmdb-dev-cctv.json ../shared/data/lfw/pairs.txt
      facematch calibrate ./labelled-faces --strong-fmr 1e-3 --strict -o calibration.json
    """
    fm = _open(ctx)
    doc, target = fm.calibrate(
        list(sources), output=output, strong_fmr=strong_fmr, possible_fmr=possible_fmr, weak_fmr=weak_fmr,
        strict=strict, listed_pairs_only=listed_pairs_only, kind=kind, data_root=data_root,
        gallery_per_subject=gallery_per_subject, holdout_fraction=holdout_fraction, seed=seed, workers=workers,
        num_jitters=num_jitters, cache_dir=cache_dir, no_cache=no_cache, progress=_progress())
    counts = ", ".join(f"{s['name']}: {s['n_nonmated']:,} non-mated" for s in doc["sources"])
    click.echo(f"Calibration written to {target} ({counts})")
    for band in doc["bands"]:
        note = "" if band["supported"] else "  NOT SUPPORTED (too few non-mated comparisons)"
        click.echo(f"  {band['band']:<8} FMR {band['target_fmr']:g}: distance <= {band['threshold']:.4f}{note}")
    n = doc["rule_of_three"]["n_nonmated_smallest_set"]
    click.echo("Search bands by expected false candidates per search of someone not enrolled, at the live "
               "gallery size; this calibration supports them up to:")
    for band, max_false in fm.settings.band_targets.as_dict().items():
        click.echo(f"  {band:<8} <= {max_false:g} false candidates: {supported_faces(n, max_false):,} enrolled faces")
    for warning in doc["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@click.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--gallery-per-subject", type=click.IntRange(min=1), default=_EVAL.gallery_per_subject,
              show_default=True, help="Gallery images enrolled per identity.")
@click.option("--holdout-fraction", type=click.FloatRange(0, 1, max_open=True), default=_EVAL.holdout_fraction,
              show_default=True, help="Fraction of identities held out of the gallery (their images are non-mated probes).")
@click.option("--seed", type=int, default=_EVAL.seed, show_default=True, help="Seed of the split.")
@click.option("--name", help="Protocol name [default: the folder's name].")
@click.pass_context
@_fail_cleanly
def protocol(ctx, folder, output, gallery_per_subject, holdout_fraction, seed, name):
    """Write an evaluation protocol (JSON) from a labelled FOLDER of <identity>/<image>, split into
    gallery and probes by a documented, seeded rule (see docs/evaluation.md).

    \b
    Example:
      facematch protocol ../shared/data/small/orl orl-protocol.json --gallery-per-subject 2
    """
    split = _open(ctx).protocol(folder, output, gallery_per_subject=gallery_per_subject,
                                holdout_fraction=holdout_fraction, seed=seed, name=name)
    click.echo(f"Protocol written to {output}: {len(split.gallery)} gallery images of "
               f"{len(split.gallery_subjects)} identities, {len(split.probes)} probes "
               f"({len(split.nonmated_probes)} non-mated)")


#: Every command of this module, for ``for c in COMMANDS: cli.add_command(c)``.
COMMANDS = [evaluate, calibrate, protocol]
