"""Matplotlib figures people would rather look at than read: learning curves and class histograms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mgral_core.strategies import CEILING_SUFFIX, display_name  # noqa: E402


def plot_learning_curve(points: Sequence[Mapping], out_png: str | Path, title: str = "") -> Path:
    """Test mAP against the number of labeled images; `points` rows have labeled, map50_95, map50
    and optionally strategy (one line per strategy)."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    by_strategy: dict[str, list[Mapping]] = {}
    for p in points:
        by_strategy.setdefault(str(p.get("strategy", "")), []).append(p)
    for strategy, rows in sorted(by_strategy.items()):
        rows = sorted(rows, key=lambda r: r["labeled"])
        x = [r["labeled"] for r in rows]
        ax.plot(x, [r["map50_95"] for r in rows], marker="o", label=f"{strategy} mAP50-95".strip())
        ax.plot(x, [r["map50"] for r in rows], marker=".", linestyle="--", alpha=0.6, label=f"{strategy} mAP50".strip())
    ax.set_xlabel("labeled images")
    ax.set_ylabel("test mAP")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_png)


def plot_class_histogram(counts: Mapping[str, int], out_png: str | Path, title: str = "") -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3), dpi=110)
    ax.bar(list(counts), list(counts.values()), color="tab:blue")
    ax.set_ylabel("instances")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    return _save(fig, out_png)


def plot_agent_training(rewards, baselines, random_level: float, out_png: str | Path) -> Path:
    """Per-iteration estimated reward, the moving-average baseline and the random-batch level."""
    out_png = Path(out_png)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(rewards, lw=0.8, alpha=0.7, label="estimated mAP of L ∪ B")
    ax.plot(baselines, lw=1.2, label="baseline mAP_ref")
    ax.axhline(random_level, color="gray", ls="--", label="random batch (mean record)")
    ax.set_xlabel("policy-gradient iteration")
    ax.set_ylabel("proxy val mAP50-95")
    ax.legend(fontsize=7)
    return _save(fig, out_png)


def plot_learning_curves(tidy: pd.DataFrame, out_png: str | Path, metric: str = "map50_95", title: str = "") -> Path:
    """Mean over seeds with a band of ± one standard deviation, one line per strategy.

    A strategy that reads the oracle (the ceiling) is drawn dashed in black and labeled '(ceiling)'.
    """
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for strategy, group in sorted(tidy.groupby("strategy")):
        curve = group.groupby("labeled")[metric].agg(["mean", "std"]).reset_index()
        label = display_name(strategy)
        style = {"linestyle": "--", "color": "black"} if label.endswith(CEILING_SUFFIX) else {}
        ax.plot(curve["labeled"], curve["mean"], marker="o", label=label, **style)
        ax.fill_between(curve["labeled"], curve["mean"] - curve["std"].fillna(0),
                        curve["mean"] + curve["std"].fillna(0), alpha=0.15)
    ax.set_xlabel("labeled images")
    ax.set_ylabel(f"test {metric.replace('map', 'mAP').replace('_', '-')}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_histograms(counts: pd.DataFrame, out_png: str | Path, title: str) -> Path:
    """Grouped bars: rows = strategies, columns = categories (classes or domains), values = counts."""
    out_png = Path(out_png)
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=110)
    width = 0.8 / max(1, len(counts.index))
    x = np.arange(len(counts.columns))
    for i, strategy in enumerate(counts.index):
        ax.bar(x + i * width, counts.loc[strategy].to_numpy(), width, label=display_name(str(strategy)))
    ax.set_xticks(x + width * (len(counts.index) - 1) / 2, counts.columns, rotation=30)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, out_png)


def _save(fig, out_png: Path) -> Path:
    """Lay out, write and close a figure; returns its path."""
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
