"""Report files: a campaign's metrics.json (for `dvc metrics`) and learning_curve.csv (for `dvc plots`), and a
benchmark's statistics as markdown."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from mgral_core.benchmark_analysis import (
    against_best_baseline,
    auc_table,
    comparisons,
    gap_per_cycle,
    power_design,
    verdict_line,
)
from mgral_core.strategies import BASELINE_STRATEGIES, CEILING_SUFFIX, base_name, display_name
from mgral_workspace.atomic import atomic_open, write_json_atomic

CURVE_COLUMNS = ["strategy", "cycle", "labeled", "map50_95", "map50"]


def write_campaign_reports(reports: Path, points: list[dict], metrics: dict) -> None:
    reports.mkdir(parents=True, exist_ok=True)
    write_json_atomic(reports / "metrics.json", metrics)
    with atomic_open(reports / "learning_curve.csv", "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(points)


def _shown_names(frame: pd.DataFrame, column: str = "strategy") -> pd.DataFrame:
    """The frame with every strategy spec in `column` replaced by its display name ('(ceiling)' marked)."""
    return frame.assign(**{column: frame[column].map(display_name)}) if column in frame else frame


def _p(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.3g}"


def benchmark_markdown(tidy: pd.DataFrame, metric: str = "map50_95", reference: str = "random",
                       fine_tunes: pd.DataFrame | None = None) -> str:
    """The benchmark's statistics as markdown: the AUC table with its paired tests, a verdict per strategy,
    the oracle ceiling's lead over `reference` per cycle, and the power calculation; with `fine_tunes`
    (every repeated fine-tune: strategy, seed, cycle, repeat, `metric`) the training noise they measured.

    Every strategy that reads the oracle is shown as 'NAME (ceiling)': an upper bound, not a result.
    """
    aucs = auc_table(tidy, metric, reference)
    shown = _shown_names(aucs)
    if "wilcoxon_p" in shown:
        shown["wilcoxon_p"] = shown["wilcoxon_p"].map(_p)
        shown["verdict"] = shown["verdict"].where(aucs["strategy"] != reference, "(reference)")
    lines = [f"### Normalised AUC of test {metric} and paired differences to {reference}", "",
             shown.round(4).to_markdown(index=False), "",
             "Columns: `diff_vs_random` mean paired AUC difference (same seed), `ci_low`/`ci_high` its 95 % "
             "t-interval, `wilcoxon_p` two-sided Wilcoxon signed-rank p, `p_improve` share of seeds the "
             "strategy beats random in, `sd_diff` sd of the paired differences, `mdd` the minimum detectable "
             "difference (80 % power, alpha 0.05: sqrt(7.85 sd_diff^2 / seeds)), `mdd_t` the same for the "
             "paired t-test itself (noncentral t; larger with few seeds), `verdict` better / worse (interval "
             "excludes 0 and p < 0.05) or noise. No correction for multiple comparisons.",
             ""]
    ceilings = [s for s in aucs["strategy"] if display_name(s).endswith(CEILING_SUFFIX)]
    if ceilings:
        lines += [f"`{CEILING_SUFFIX.strip()}` marks `{', '.join(ceilings)}`: it picks each batch by training with "
                  "the oracle's true labels, an upper bound on what selection could gain here, not a strategy.", ""]
    paired = comparisons(tidy, metric, reference)
    lines += ["### Verdicts", ""]
    lines += [f"- {verdict_line(display_name(name), c, reference)}" for name, c in
              sorted(paired.items(), key=lambda item: -item[1].mean)]
    for ceiling in ceilings:
        gaps = gap_per_cycle(tidy, ceiling, metric, reference)
        if len(gaps):
            gaps = gaps.assign(wilcoxon_p=gaps["wilcoxon_p"].map(_p))
            lines += ["", f"### Headroom: {display_name(ceiling)} minus {reference}, test {metric} per cycle", "",
                      gaps.round(4).to_markdown(index=False), "",
                      "The most any strategy could claim at this regime. If it is inside the noise, the regime "
                      "(not the strategies) cannot show a difference."]
    design = power_design(paired, ceilings[0] if ceilings else None)
    if design:
        lines += ["", "### Power", "",
                  f"With {design['seeds']} paired seeds and a median sd of the paired AUC differences of "
                  f"{design['sd_diff_median']:.4f}, the smallest AUC difference this benchmark detects with 80 % "
                  f"power (alpha 0.05) is {design['mdd']:.4f} by the formula sqrt(7.85 sd^2 / n), "
                  f"{design['mdd_t']:.4f} by the exact paired t-test."]
        if "target" in design:
            reach = "reaches" if design["mdd_reaches_target"] else "does not reach"
            lines[-1] += (f" Half the ceiling's lead ({design['ceiling_gap']:.4f} / 2 = {design['target']:.4f}) is "
                          f"the difference worth detecting: this design {reach} it; "
                          f"{design['seeds_needed']} paired seeds would by n = 7.85 sd^2 / delta^2, "
                          f"{design['seeds_needed_t']} by the exact paired t-test.")
        elif "ceiling_gap" in design:
            lines[-1] += (f" The ceiling does not lead {reference} ({design['ceiling_gap']:+.4f}): at this regime "
                          "selection has no headroom to detect.")
        lines += _best_baseline_lines(tidy, design["mdd"], metric, reference)
    if fine_tunes is not None and len(fine_tunes):
        lines += ["", "### Training noise", "", training_noise_line(fine_tunes, metric)]
    return "\n".join(lines) + "\n"


def _best_baseline_lines(tidy: pd.DataFrame, mdd: float, metric: str, reference: str) -> list[str]:
    """The section 'Against the best baseline': every MGRAL spec's AUC against the best baseline's minus the
    benchmark's minimum detectable difference, and the paired test of the two. Empty without both."""
    specs = list(dict.fromkeys(tidy["strategy"]))
    baselines = [s for s in specs if base_name(s) in BASELINE_STRATEGIES and s != reference]
    checks = [c for c in (against_best_baseline(tidy, s, baselines, mdd, metric) for s in specs
                          if base_name(s) == "mgral") if c]
    if not checks:
        return []
    best, best_auc = checks[0]["best_baseline"], checks[0]["best_auc"]
    lines = ["", "### Against the best baseline", "",
             f"The best baseline by mean AUC is {display_name(best)} ({best_auc:.4f}). An MGRAL variant is level with "
             f"it within what this benchmark can detect when its AUC is at least {best_auc:.4f} minus the minimum "
             f"detectable difference above ({mdd:.4f}), i.e. {checks[0]['threshold']:.4f}.", ""]
    for check in checks:
        state = "**met**" if check["met"] else "**not met**"
        paired = check["paired"]
        versus = (verdict_line(f"paired against {display_name(best)}", paired, display_name(best))
                  if paired is not None else f"no seed shared with {display_name(best)}.")
        lines.append(f"- {display_name(check['contender'])}: AUC {check['auc']:.4f} against {check['threshold']:.4f}, "
                     f"{state}; {versus}")
    return lines


def training_noise_line(fine_tunes: pd.DataFrame, metric: str = "map50_95") -> str:
    """What the repeated fine-tunes say: their pooled within-cell sd (same images, other training seed)."""
    per_cell = fine_tunes.groupby(["strategy", "seed", "cycle"])[metric]
    repeats = int(per_cell.size().max())
    sd = float(np.sqrt(per_cell.var(ddof=1).mean()))
    return (f"Each cell after a selection is the mean of {repeats} fine-tunes on the same images with other "
            f"training seeds ({per_cell.ngroups} cells). Their pooled within-cell sd is {sd:.4f} test {metric}: "
            f"the noise of one fine-tune, which the mean divides by sqrt({repeats}).")
