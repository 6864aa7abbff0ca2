"""Benchmark statistics: normalised area under learning curves and paired differences to random."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

TIDY_COLUMNS = ["strategy", "seed", "cycle", "labeled", "map50_95", "map50"]


def normalized_auc(labeled: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid area under values(labeled) divided by the labeled range (a mean mAP over the curve)."""
    order = np.argsort(labeled)
    x, y = np.asarray(labeled, float)[order], np.asarray(values, float)[order]
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def auc_table(tidy: pd.DataFrame, metric: str = "map50_95", reference: str = "random",
              confidence: float = 0.95) -> pd.DataFrame:
    """Per strategy: mean and std of the normalised AUC over seeds, and the paired difference to
    `reference` (same seed) with a t-interval. Does not correct for multiple comparisons."""
    aucs = (tidy.groupby(["strategy", "seed"])
            .apply(lambda g: normalized_auc(g["labeled"].to_numpy(), g[metric].to_numpy()), include_groups=False)
            .rename("auc").reset_index())
    wide = aucs.pivot(index="seed", columns="strategy", values="auc")
    rows = []
    for strategy in wide.columns:
        row = {"strategy": strategy, "seeds": int(wide[strategy].notna().sum()),
               "auc_mean": wide[strategy].mean(), "auc_std": wide[strategy].std(ddof=1)}
        if reference in wide.columns and strategy != reference:
            diff = (wide[strategy] - wide[reference]).dropna()
            row["diff_vs_" + reference] = diff.mean()
            if len(diff) > 1:
                half = stats.t.ppf((1 + confidence) / 2, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
                row["ci_low"], row["ci_high"] = diff.mean() - half, diff.mean() + half
        rows.append(row)
    return pd.DataFrame(rows).sort_values("auc_mean", ascending=False).reset_index(drop=True)
