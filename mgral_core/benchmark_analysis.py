"""Benchmark statistics: normalised area under learning curves and paired differences to random."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

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


def plot_learning_curves(tidy: pd.DataFrame, out_png: str | Path, metric: str = "map50_95", title: str = "") -> Path:
    """Mean over seeds with a band of ± one standard deviation, one line per strategy."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for strategy, group in sorted(tidy.groupby("strategy")):
        curve = group.groupby("labeled")[metric].agg(["mean", "std"]).reset_index()
        ax.plot(curve["labeled"], curve["mean"], marker="o", label=strategy)
        ax.fill_between(curve["labeled"], curve["mean"] - curve["std"].fillna(0),
                        curve["mean"] + curve["std"].fillna(0), alpha=0.15)
    ax.set_xlabel("labeled images")
    ax.set_ylabel(f"test {metric.replace('map', 'mAP').replace('_', '-')}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def plot_histograms(counts: pd.DataFrame, out_png: str | Path, title: str) -> Path:
    """Grouped bars: rows = strategies, columns = categories (classes or domains), values = counts."""
    out_png = Path(out_png)
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=110)
    width = 0.8 / max(1, len(counts.index))
    x = np.arange(len(counts.columns))
    for i, strategy in enumerate(counts.index):
        ax.bar(x + i * width, counts.loc[strategy].to_numpy(), width, label=strategy)
    ax.set_xticks(x + width * (len(counts.index) - 1) / 2, counts.columns, rotation=30)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
