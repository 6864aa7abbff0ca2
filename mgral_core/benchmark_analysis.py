"""Benchmark statistics: normalised area under learning curves, and paired comparisons to random with
their power (t-interval, Wilcoxon signed-rank, probability of improvement, minimum detectable difference).

Pure: tidy tables in, tables out; nothing is read or written. The paired unit is the seed: for each
seed every strategy starts from the same initial set and detector, so the per-seed difference to
random removes the seed-to-seed spread that both share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

TIDY_COLUMNS = ["strategy", "seed", "cycle", "labeled", "map50_95", "map50"]
ALPHA, POWER = 0.05, 0.80
WILCOXON_MIN_SEEDS = 6  # below this many non-zero differences the exact two-sided p is never < 0.05


def normalized_auc(labeled: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid area under values(labeled) divided by the labeled range (a mean mAP over the curve)."""
    order = np.argsort(labeled)
    x, y = np.asarray(labeled, float)[order], np.asarray(values, float)[order]
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def power_factor(alpha: float = ALPHA, power: float = POWER) -> float:
    """(z_{1-alpha/2} + z_power)^2: 7.85 for a two-sided alpha of 0.05 at 80 % power (normal approximation)."""
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got alpha={alpha}, power={power}")
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) ** 2)


def minimum_detectable_difference(sd_diff: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean paired difference a test on n seeds detects with the given power:
    sqrt(7.85 * sd_diff^2 / n) at the defaults. NaN when sd_diff is NaN (fewer than 2 seeds).

    Normal approximation, as the usual sample-size formula n = 7.85 sd^2 / delta^2: with few seeds
    the t-test needs somewhat more (the t quantiles are wider), so read it as a lower bound.
    """
    if n < 1:
        raise ValueError(f"need at least one paired seed, got n={n}")
    if not np.isfinite(sd_diff):
        return float("nan")
    return float(math.sqrt(power_factor(alpha, power) * sd_diff ** 2 / n))


def t_test_power(delta: float, sd_diff: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test on n seeds against a true mean difference delta (noncentral t)."""
    if n < 2 or not sd_diff > 0:
        raise ValueError(f"need n >= 2 and sd_diff > 0, got n={n}, sd_diff={sd_diff}")
    df, ncp = n - 1, delta * math.sqrt(n) / sd_diff
    critical = stats.t.ppf(1 - alpha / 2, df)
    lower = np.nan_to_num(stats.nct.cdf(-critical, df, ncp))  # negligible here; scipy returns NaN far out
    return float(stats.nct.sf(critical, df, ncp) + lower)


def minimum_detectable_difference_t(sd_diff: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The exact counterpart of `minimum_detectable_difference` for the paired t-test (noncentral t).

    Larger than the normal formula with few seeds (about 2x at n = 3, 1.1x at n = 10); NaN for n < 2
    or a NaN sd, 0 for sd 0.
    """
    if n < 2 or not np.isfinite(sd_diff):
        return float("nan")
    if sd_diff == 0:
        return 0.0
    ncp = optimize.brentq(lambda x: t_test_power(x * sd_diff / math.sqrt(n), sd_diff, n, alpha) - power, 0, 1e3)
    return float(ncp * sd_diff / math.sqrt(n))


def seeds_needed_t(delta: float, sd_diff: float, alpha: float = ALPHA, power: float = POWER,
                   limit: int = 100_000) -> int:
    """The fewest paired seeds (>= 2) whose paired t-test detects `delta` with the given power.

    Raises:
        ValueError: for delta <= 0, or when even `limit` seeds would not do.
    """
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    if sd_diff == 0:
        return 2
    n = max(2, seeds_needed(delta, sd_diff, alpha, power))  # the normal formula is a lower bound
    while t_test_power(delta, sd_diff, n, alpha) < power:
        n += 1
        if n > limit:
            raise ValueError(f"more than {limit} seeds needed for delta={delta} at sd_diff={sd_diff}")
    return n


def seeds_needed(delta: float, sd_diff: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Paired seeds to detect a true mean difference `delta` with the given power: ceil(7.85 sd^2 / delta^2),
    at least 2 (a paired interval needs two). Same normal approximation as `minimum_detectable_difference`."""
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    if not np.isfinite(sd_diff) or sd_diff < 0:
        raise ValueError(f"sd_diff must be a finite standard deviation >= 0, got {sd_diff}")
    return max(2, math.ceil(power_factor(alpha, power) * sd_diff ** 2 / delta ** 2))


def wilcoxon_p(diff: np.ndarray) -> tuple[float | None, str]:
    """(two-sided Wilcoxon signed-rank p-value, note) of paired differences; zero differences are dropped.

    The p-value is None, with the reason in the note, when no seed differs (all differences 0) or there
    are none. With fewer than WILCOXON_MIN_SEEDS non-zero differences the p-value is given, and the
    note says that p < 0.05 is out of reach: the smallest exact two-sided p with n of them is 2 / 2^n.
    """
    diff = np.asarray(diff, float)
    diff = diff[np.isfinite(diff)]
    nonzero = diff[diff != 0]
    if len(diff) == 0:
        return None, "no paired seeds"
    if len(nonzero) == 0:
        return None, f"all {len(diff)} differences are 0"
    p = float(stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided").pvalue)
    if len(nonzero) < WILCOXON_MIN_SEEDS:
        return p, (f"{len(nonzero)} non-zero differences: p >= {2 / 2 ** len(nonzero):.4g} whatever the data, "
                   f"p < 0.05 needs {WILCOXON_MIN_SEEDS}")
    return p, ""


def probability_of_improvement(diff: np.ndarray) -> float:
    """Share of seeds in which the strategy beats the reference (difference > 0; a tie is no win)."""
    diff = np.asarray(diff, float)
    diff = diff[np.isfinite(diff)]
    return float(np.mean(diff > 0)) if len(diff) else float("nan")


@dataclass(frozen=True)
class PairedComparison:
    """A strategy against the reference over paired seeds (differences strategy - reference).

    Attributes:
        n: paired seeds.
        mean, sd: mean and standard deviation (ddof 1; NaN for n < 2) of the differences.
        ci_low, ci_high: the paired t-interval of the mean (NaN for n < 2).
        wilcoxon_p, wilcoxon_note: see `wilcoxon_p`.
        p_improve: see `probability_of_improvement`.
        mdd: minimum detectable difference of this experiment at ALPHA and POWER by the normal formula
            sqrt(7.85 sd^2 / n) (NaN for n < 2).
        mdd_t: the same for the paired t-test itself (noncentral t; larger with few seeds).
        verdict: 'better', 'worse' (interval excludes 0 and Wilcoxon p < alpha) or 'noise'.
    """

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    wilcoxon_p: float | None
    wilcoxon_note: str
    p_improve: float
    mdd: float
    mdd_t: float
    verdict: str


def paired_comparison(diff: np.ndarray, confidence: float = 0.95, alpha: float = ALPHA,
                      power: float = POWER) -> PairedComparison:
    """Every figure of `PairedComparison` from the per-seed differences; NaN differences are dropped."""
    diff = np.asarray(diff, float)
    diff = diff[np.isfinite(diff)]
    n = len(diff)
    if n == 0:
        raise ValueError("no paired differences to compare")
    mean = float(diff.mean())
    sd = float(diff.std(ddof=1)) if n > 1 else float("nan")
    low = high = float("nan")
    if n > 1:
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n))
        low, high = mean - half, mean + half
    p, note = wilcoxon_p(diff)
    significant = p is not None and p < alpha
    verdict = "better" if significant and low > 0 else "worse" if significant and high < 0 else "noise"
    return PairedComparison(n, mean, sd, low, high, p, note, probability_of_improvement(diff),
                            minimum_detectable_difference(sd, n, alpha, power),
                            minimum_detectable_difference_t(sd, n, alpha, power), verdict)


def verdict_line(name: str, c: PairedComparison, reference: str = "random", what: str = "AUC") -> str:
    """One sentence: is the difference real, and what difference could this experiment have detected."""
    interval = (f"95 % interval [{c.ci_low:+.4f}, {c.ci_high:+.4f}]" if np.isfinite(c.ci_low)
                else "no interval (one seed)")
    wilcoxon = f"Wilcoxon p = {c.wilcoxon_p:.3g}" if c.wilcoxon_p is not None else f"no Wilcoxon p ({c.wilcoxon_note})"
    if c.verdict in ("better", "worse"):
        head = f"**{c.verdict} than {reference}, a real difference**"
    else:
        reasons = []
        if not (c.ci_low > 0 or c.ci_high < 0):
            reasons.append("the interval includes 0")
        if c.wilcoxon_p is None or c.wilcoxon_p >= ALPHA:
            reasons.append("the Wilcoxon test does not reject" if c.wilcoxon_p is not None else "no Wilcoxon test")
        head = "inside the noise (" + " and ".join(reasons) + ")"
    detect = (f"with {c.n} seeds this experiment detects a true difference of {c.mdd:.4f} {what} or more "
              f"(80 % power, alpha 0.05; {c.mdd_t:.4f} by the exact paired t-test)" if np.isfinite(c.mdd)
              else "too few seeds to say what it could detect")
    note = f"; {c.wilcoxon_note}" if c.wilcoxon_p is not None and c.wilcoxon_note else ""
    return (f"{name}: {head}. Mean difference {c.mean:+.4f} {what}, {interval}, {wilcoxon}{note}, "
            f"beats {reference} in {c.p_improve:.0%} of seeds; {detect}.")


def seed_aucs(tidy: pd.DataFrame, metric: str = "map50_95") -> pd.DataFrame:
    """(seed x strategy) normalised AUC of every run."""
    aucs = (tidy.groupby(["strategy", "seed"])
            .apply(lambda g: normalized_auc(g["labeled"].to_numpy(), g[metric].to_numpy()), include_groups=False)
            .rename("auc").reset_index())
    return aucs.pivot(index="seed", columns="strategy", values="auc")


def comparisons(tidy: pd.DataFrame, metric: str = "map50_95", reference: str = "random",
                confidence: float = 0.95) -> dict[str, PairedComparison]:
    """{strategy: its paired AUC comparison to `reference`} for every other strategy with paired seeds."""
    wide = seed_aucs(tidy, metric)
    if reference not in wide.columns:
        return {}
    out = {}
    for strategy in wide.columns:
        diff = (wide[strategy] - wide[reference]).dropna()
        if strategy != reference and len(diff):
            out[strategy] = paired_comparison(diff.to_numpy(), confidence)
    return out


def auc_table(tidy: pd.DataFrame, metric: str = "map50_95", reference: str = "random",
              confidence: float = 0.95) -> pd.DataFrame:
    """Per strategy: mean and std of the normalised AUC over seeds, and the paired comparison to `reference`
    (same seed): mean difference, t-interval, Wilcoxon p, probability of improvement, sd of the
    differences, minimum detectable difference and verdict. Does not correct for multiple comparisons."""
    wide = seed_aucs(tidy, metric)
    paired = comparisons(tidy, metric, reference, confidence)
    rows = []
    for strategy in wide.columns:
        row = {"strategy": strategy, "seeds": int(wide[strategy].notna().sum()),
               "auc_mean": wide[strategy].mean(), "auc_std": wide[strategy].std(ddof=1)}
        if strategy in paired:
            c = paired[strategy]
            row.update({f"diff_vs_{reference}": c.mean, "ci_low": c.ci_low, "ci_high": c.ci_high,
                        "wilcoxon_p": c.wilcoxon_p, "p_improve": c.p_improve, "sd_diff": c.sd, "mdd": c.mdd,
                        "mdd_t": c.mdd_t, "verdict": c.verdict})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("auc_mean", ascending=False).reset_index(drop=True)


def power_design(paired: dict[str, PairedComparison], ceiling: str | None = None, alpha: float = ALPHA,
                 power: float = POWER) -> dict:
    """What this benchmark can detect, and how many seeds would detect half the ceiling's lead.

    Uses the median over strategies (the ceiling left out) of the sd of their paired AUC differences
    and of their seed counts. With `ceiling` among `paired` and ahead of the reference, also gives
    half its mean AUC lead (the target: a strategy that captures half the headroom), whether the
    current minimum detectable difference reaches it, and the seeds needed to reach it.
    """
    others = [c for name, c in paired.items() if name != ceiling and np.isfinite(c.sd)]
    if not others:
        return {}
    sd = float(np.median([c.sd for c in others]))
    n = int(np.median([c.n for c in others]))
    out = {"seeds": n, "sd_diff_median": sd, "mdd": minimum_detectable_difference(sd, n, alpha, power),
           "mdd_t": minimum_detectable_difference_t(sd, n, alpha, power)}
    if ceiling in paired:
        gap = paired[ceiling].mean
        out["ceiling_gap"] = gap
        if gap > 0:
            out["target"] = gap / 2
            out["mdd_reaches_target"] = bool(out["mdd"] <= gap / 2)
            out["seeds_needed"] = seeds_needed(gap / 2, sd, alpha, power)
            out["seeds_needed_t"] = seeds_needed_t(gap / 2, sd, alpha, power)
    return out


def against_best_baseline(tidy: pd.DataFrame, contender: str, baselines: list[str], mdd: float,
                          metric: str = "map50_95", confidence: float = 0.95) -> dict:
    """The issue's second target for `contender`: is its mean AUC at least the best baseline's minus `mdd`
    (the benchmark's minimum detectable difference, `power_design`)?

    The best baseline is the one of `baselines` with the highest mean AUC over its seeds. Also the paired
    comparison contender - best baseline over the seeds both finished (its own interval, Wilcoxon p and
    minimum detectable difference), which says whether the two can be told apart at all.

    Returns {} when the contender or every baseline is missing; else contender, auc, best_baseline,
    best_auc, mdd, threshold (best_auc - mdd), met (auc >= threshold) and paired (a PairedComparison,
    None without a shared seed).
    """
    wide = seed_aucs(tidy, metric)
    present = [b for b in baselines if b in wide.columns and b != contender]
    if contender not in wide.columns or not present:
        return {}
    means = wide[present].mean()
    best = str(means.idxmax())
    auc = float(wide[contender].mean())
    threshold = float(means[best]) - mdd
    diff = (wide[contender] - wide[best]).dropna().to_numpy()
    return {"contender": contender, "auc": auc, "best_baseline": best, "best_auc": float(means[best]),
            "mdd": float(mdd), "threshold": threshold, "met": bool(auc >= threshold),
            "paired": paired_comparison(diff, confidence) if len(diff) else None}


def gap_per_cycle(tidy: pd.DataFrame, strategy: str, metric: str = "map50_95", reference: str = "random"
                  ) -> pd.DataFrame:
    """Per labeled count: the paired test-metric difference strategy - reference over seeds (for the oracle
    ceiling, the headroom at that cycle), with its interval, Wilcoxon p, probability of improvement and
    minimum detectable differences. Empty when either strategy is missing."""
    wide = tidy.pivot_table(index=["labeled", "seed"], columns="strategy", values=metric)
    if strategy not in wide.columns or reference not in wide.columns:
        return pd.DataFrame(columns=["labeled", "seeds", "gap_mean", "ci_low", "ci_high", "wilcoxon_p", "p_improve",
                                     "sd_diff", "mdd", "mdd_t", "verdict"])
    rows = []
    for labeled, group in wide.groupby(level="labeled"):
        diff = (group[strategy] - group[reference]).dropna().to_numpy()
        if not len(diff):
            continue
        c = paired_comparison(diff)
        rows.append({"labeled": labeled, "seeds": c.n, "gap_mean": c.mean, "ci_low": c.ci_low, "ci_high": c.ci_high,
                     "wilcoxon_p": c.wilcoxon_p, "p_improve": c.p_improve, "sd_diff": c.sd, "mdd": c.mdd,
                     "mdd_t": c.mdd_t, "verdict": c.verdict})
    return pd.DataFrame(rows)
