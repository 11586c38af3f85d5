"""Measuring accuracy through the API: evaluate, calibrate and protocol (facematch.evaluation.workflows).
None of them needs the catalogue."""

from __future__ import annotations

from pathlib import Path

__all__ = ["Measurement"]


class Measurement:
    """Evaluation and calibration methods of :class:`facematch.api.Facematch`."""


    def evaluate(self, source: str | Path, *, output: str | Path | None = None, baseline: bool = True,
                 fallback_box: tuple[int, int, int, int] | None = None, face: str | None = None,
                 n_boot: int | None = None, kind: str = "auto", data_root: str | Path | None = None,
                 gallery_per_subject: int | None = None, holdout_fraction: float | None = None,
                 seed: int | None = None, workers: int | None = None, num_jitters: int | None = None,
                 cache_dir: str | Path | None = None, no_cache: bool = False, progress=None,
                 group_by: str | None = None):
        """Measure accuracy on a labelled ``source`` (folder, protocol JSON, LFW pairs) beside the baseline.

        ``group_by`` (protocols): "auto" (None; the ``person`` attribute when the probes have it), "subject",
        "none" or a probe attribute: probes of one group are also scored as one person-level search.

        Returns ``(evaluation, paths)``: the :class:`facematch.evaluation.runner.Evaluation` and the report
        files written to ``output`` (None when no output is given). See :mod:`facematch.evaluation.workflows`.
        """
        from facematch.evaluation import workflows

        sources = workflows.SourceOptions(kind, _path(data_root), gallery_per_subject, holdout_fraction, seed)
        settings = workflows.evaluation_settings(self.settings, workers=workers, num_jitters=num_jitters)
        return workflows.run_evaluation(settings, Path(source), output=_path(output), baseline=baseline,
                                        fallback_box=fallback_box, face=face, n_boot=n_boot, sources=sources,
                                        cache_dir=_path(cache_dir), no_cache=no_cache, progress=progress,
                                        group_by=group_by)

    def calibrate(self, sources: list[str | Path], *, output: str | Path | None = None,
                  strong_fmr: float | None = None, possible_fmr: float | None = None,
                  weak_fmr: float | None = None, strict: bool = False, listed_pairs_only: bool = False,
                  kind: str = "auto", data_root: str | Path | None = None, gallery_per_subject: int | None = None,
                  holdout_fraction: float | None = None, seed: int | None = None, workers: int | None = None,
                  num_jitters: int | None = None, cache_dir: str | Path | None = None, no_cache: bool = False,
                  progress=None) -> tuple[dict, Path]:
        """Set the band thresholds from labelled ``sources`` for target FMRs (None: the settings' targets);
        writes ``output`` or ``<data_dir>/calibration.json``. Returns the document and the path written."""
        from facematch.evaluation import workflows

        options = workflows.SourceOptions(kind, _path(data_root), gallery_per_subject, holdout_fraction, seed)
        settings = workflows.evaluation_settings(self.settings, workers=workers, num_jitters=num_jitters)
        targets = {"strong": strong_fmr, "possible": possible_fmr, "weak": weak_fmr}
        return workflows.run_calibration(settings, [Path(s) for s in sources], output=_path(output),
                                         fmr_targets=targets, strict=strict, listed_pairs_only=listed_pairs_only,
                                         sources=options, cache_dir=_path(cache_dir), no_cache=no_cache,
                                         progress=progress)

    def protocol(self, folder: str | Path, output: str | Path, *, gallery_per_subject: int | None = None,
                 holdout_fraction: float | None = None, seed: int | None = None, name: str | None = None):
        """Write an evaluation protocol (JSON) split from a labelled ``<identity>/<image>`` folder."""
        from facematch.evaluation import workflows

        return workflows.write_protocol(self.settings, Path(folder), Path(output),
                                        gallery_per_subject=gallery_per_subject,
                                        holdout_fraction=holdout_fraction, seed=seed, name=name)


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)
