"""``facematch evaluate``, ``facematch calibrate`` and ``facematch protocol``: thin adapters over
:mod:`facematch.evaluation.runner` and :mod:`facematch.search.calibration`.

Each command is a standalone Click command, registered on the main group with ``cli.add_command``. It
reads the settings the group put in ``ctx.obj["settings"]`` (else ``Settings.from_env()``), calls the
library and turns facematch's named errors into ``error: <message>`` with exit status 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from facematch.cli.support import CONTEXT, fail_cleanly as _fail_cleanly
from facematch.evaluation.embed_cache import with_jitters
from facematch.settings import Settings

__all__ = ["evaluate", "calibrate", "protocol", "COMMANDS"]

KINDS = ["auto", "folder", "protocol", "lfw-pairs"]



def _settings(ctx: click.Context, workers: int | None, num_jitters: int | None) -> Settings:
    obj = ctx.find_root().obj
    settings = obj["settings"] if isinstance(obj, dict) and "settings" in obj else Settings.from_env()
    if num_jitters is not None:
        settings = settings.replace(embedding=with_jitters(settings.embedding, num_jitters))
    return settings.replace(workers=workers)


def _parse_ltrb(ctx, param, value):
    if value is None:
        return None
    try:
        box = tuple(int(v) for v in value.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[0] < 0 or box[1] < 0 or box[2] <= box[0] or box[3] <= box[1]:
        raise click.BadParameter("expected left,top,right,bottom: four integers with right > left and "
                                 "bottom > top (e.g. 67,74,182,189)")
    return box


def _options(options):
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


_source_options = _options([
    click.option("--kind", type=click.Choice(KINDS), default="auto", show_default=True,
                 help="What SOURCE is; auto: a folder, a *.json protocol, else an LFW pairs file."),
    click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
                 help="Folder the image paths of a protocol or pairs file are relative to."),
    click.option("--gallery-per-subject", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Folder split: gallery images enrolled per identity."),
    click.option("--holdout-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2,
                 show_default=True, help="Folder split: fraction of identities held out (non-mated probes)."),
    click.option("--seed", type=int, default=0, show_default=True, help="Folder split and bootstrap seed."),
])

_embedding_options = _options([
    click.option("--workers", type=click.IntRange(min=1), help="Worker processes [default: CPU cores]."),
    click.option("--num-jitters", type=click.IntRange(min=1),
                 help="facematch descriptor jitters, gallery and probes [default: settings]."),
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                 default=Path(".cache") / "facematch-eval", show_default=True,
                 help="Embedding cache (reused by later evaluations and calibrations)."),
    click.option("--no-cache", is_flag=True, help="Embed everything afresh and keep nothing."),
])


def _progress():
    if not sys.stderr.isatty():
        return None

    def report(what: str, done: int, total: int) -> None:
        click.echo(f"\r{what}: {done}/{total}", err=True, nl=done == total)
    return report


def _cache(cache_dir: Path, no_cache: bool):
    from facematch.evaluation.embed_cache import EmbeddingCache

    return None if no_cache else EmbeddingCache(cache_dir)


def _source(path, kind, data_root, gallery_per_subject, holdout_fraction, seed):
    from facematch.evaluation.runner import load_source

    return load_source(path, kind=kind, data_root=data_root, seed=seed, gallery_per_subject=gallery_per_subject,
                       holdout_fraction=holdout_fraction)


@click.command(context_settings=CONTEXT)
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              default=Path("reports") / "evaluation", show_default=True, help="Report folder.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also run face_recognition as its README shows, on the same images.")
@click.option("--fallback-box", callback=_parse_ltrb,
              help="LFW-style data only: when no face is found, use this fixed box (left,top,right,bottom).")
@click.option("--face", "face_choice", type=click.Choice(["largest", "central"]),
              help="Which detected face is the labelled person's: the largest, or the one nearest the image "
              "centre. Default: central for LFW pairs (LFW's definition: its images are cropped around the "
              "labelled face), largest otherwise (what search ranks first).")
@click.option("--n-boot", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap replicates for the 95% intervals (0: none).")
@_source_options
@_embedding_options
@click.pass_context
@_fail_cleanly
def evaluate(ctx, source, output, baseline, fallback_box, face_choice, n_boot, kind, data_root,
             gallery_per_subject, holdout_fraction, seed, workers, num_jitters, cache_dir, no_cache):
    """Measure match accuracy on SOURCE (labelled folder, protocol JSON or LFW pairs.txt), facematch
    beside the face_recognition baseline; write report.json, report.md and PNG plots.

    \b
    Example:
      facematch evaluate ../shared/data/protocols/frmdb-dev-cctv.json -o reports/frmdb
      facematch evaluate ../shared/data/lfw/pairs.txt --workers 2 -o reports/lfw
      facematch evaluate ./labelled-faces --holdout-fraction 0.25 --no-baseline
    """
    from facematch.search.calibration import load_band_scheme
    from facematch.evaluation.protocols import Protocol
    from facematch.evaluation.runner import default_systems, evaluate_source

    settings = _settings(ctx, workers, num_jitters)
    labelled = _source(source, kind, data_root, gallery_per_subject, holdout_fraction, seed)
    if face_choice is None:
        face_choice = "largest" if isinstance(labelled, Protocol) else "central"
    systems = default_systems(settings, baseline=baseline, fallback_box=fallback_box, face_choice=face_choice)
    evaluation = evaluate_source(labelled, systems, scheme=load_band_scheme(settings),
                                 cache=_cache(cache_dir, no_cache), workers=settings.workers, n_boot=n_boot,
                                 seed=seed, progress=_progress())
    paths = evaluation.write(output)
    click.echo(f"Report: {paths['markdown']} (JSON: {paths['json']}, {len(paths['plots'])} plots)")
    for name, section in evaluation.result["systems"].items():
        click.echo(f"  {name}: {_headline(section)}")


def _headline(section: dict) -> str:
    parts = []
    if (ident := section.get("identification")):
        rank1 = next(c["hit_rate"] for c in ident["cmc"] if c["rank"] == 1)
        parts.append(f"rank-1 hit rate {100 * rank1:.1f}%, failure to acquire {100 * ident['failures']['fta']:.1f}%")
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
@click.option("--strong-fmr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=1e-4,
              show_default=True, help="Target false-match rate of the strong band.")
@click.option("--possible-fmr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=1e-3,
              show_default=True, help="Target false-match rate of the possible band.")
@click.option("--weak-fmr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=1e-2,
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

    \b
    Example:
      facematch calibrate ../shared/data/protocols/frmdb-dev-cctv.json ../shared/data/lfw/pairs.txt
      facematch calibrate ./labelled-faces --strong-fmr 1e-3 --strict -o calibration.json
    """
    from facematch.search.calibration import CALIBRATION_FILE_NAME, compute_calibration, write_calibration
    from facematch.evaluation.embed_cache import SystemSpec
    from facematch.evaluation.protocols import Protocol
    from facematch.evaluation.runner import calibration_sample

    settings = _settings(ctx, workers, num_jitters)
    cache = _cache(cache_dir, no_cache)
    samples = []
    for path in sources:
        labelled = _source(path, kind, data_root, gallery_per_subject, holdout_fraction, seed)
        # pairs files are LFW-style: the labelled face is the central one (see `evaluate --face`)
        system = SystemSpec.facematch(settings, face_choice="largest" if isinstance(labelled, Protocol) else "central")
        samples.append(calibration_sample(labelled, system, name=path.name, cache=cache, workers=settings.workers,
                                          all_pairs=not listed_pairs_only, progress=_progress()))
    doc = compute_calibration(samples, settings=settings, strict=strict,
                              targets={"strong": strong_fmr, "possible": possible_fmr, "weak": weak_fmr})
    target = write_calibration(doc, output or Path(settings.data_dir) / CALIBRATION_FILE_NAME)
    counts = ", ".join(f"{s['name']}: {s['n_nonmated']:,} non-mated" for s in doc["sources"])
    click.echo(f"Calibration written to {target} ({counts})")
    for band in doc["bands"]:
        note = "" if band["supported"] else "  NOT SUPPORTED (too few non-mated comparisons)"
        click.echo(f"  {band['band']:<8} FMR {band['target_fmr']:g}: distance <= {band['threshold']:.4f}{note}")
    for warning in doc["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@click.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--gallery-per-subject", type=click.IntRange(min=1), default=1, show_default=True,
              help="Gallery images enrolled per identity.")
@click.option("--holdout-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True,
              help="Fraction of identities held out of the gallery (their images are non-mated probes).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option("--name", help="Protocol name [default: the folder's name].")
@_fail_cleanly
def protocol(folder, output, gallery_per_subject, holdout_fraction, seed, name):
    """Write an evaluation protocol (JSON) from a labelled FOLDER of <identity>/<image>, split into
    gallery and probes by a documented, seeded rule (see docs/evaluation.md).

    \b
    Example:
      facematch protocol ../shared/data/small/orl orl-protocol.json --gallery-per-subject 2
    """
    from facematch.evaluation.protocols import protocol_from_folder, save_protocol_json

    split = protocol_from_folder(folder, gallery_per_subject=gallery_per_subject,
                                 holdout_fraction=holdout_fraction, seed=seed, name=name)
    save_protocol_json(split, output)
    click.echo(f"Protocol written to {output}: {len(split.gallery)} gallery images of "
               f"{len(split.gallery_subjects)} identities, {len(split.probes)} probes "
               f"({len(split.nonmated_probes)} non-mated)")


#: Every command of this module, for ``for c in COMMANDS: cli.add_command(c)``.
COMMANDS = [evaluate, calibrate, protocol]
