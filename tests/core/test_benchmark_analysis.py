"""Benchmark statistics against hand-computed values: paired interval, Wilcoxon, probability of improvement,
minimum detectable difference and seeds needed, and the tables built from a tidy benchmark."""

import math

import numpy as np
import pandas as pd
import pytest

from mgral_core.benchmark_analysis import (
    against_best_baseline,
    auc_table,
    comparisons,
    gap_per_cycle,
    minimum_detectable_difference,
    minimum_detectable_difference_t,
    normalized_auc,
    paired_comparison,
    power_design,
    power_factor,
    probability_of_improvement,
    seed_aucs,
    seeds_needed,
    seeds_needed_t,
    t_test_power,
    verdict_line,
    wilcoxon_p,
)

RISING = np.arange(1, 7) / 100  # 0.01 .. 0.06


def test_power_factor_and_minimum_detectable_difference_hand_computed():
    assert power_factor() == pytest.approx((1.959964 + 0.841621) ** 2, rel=1e-6)  # 7.849
    assert power_factor() == pytest.approx(7.85, abs=0.002)
    assert minimum_detectable_difference(0.01, 4) == pytest.approx(math.sqrt(7.85 * 0.01 ** 2 / 4), rel=1e-3)  # 0.0140
    assert minimum_detectable_difference(0.003, 10) == pytest.approx(0.0026578, rel=1e-3)
    assert math.isnan(minimum_detectable_difference(float("nan"), 1))
    assert power_factor(alpha=0.05, power=0.9) == pytest.approx((1.959964 + 1.281552) ** 2, rel=1e-6)  # 10.51
    with pytest.raises(ValueError, match="at least one paired seed"):
        minimum_detectable_difference(0.01, 0)


def test_seeds_needed_is_the_inverse():
    assert seeds_needed(0.005, 0.01) == 32  # 7.85 * 0.01^2 / 0.005^2 = 31.4
    assert seeds_needed(0.01, 0.01) == 8  # 7.85
    assert seeds_needed(1.0, 0.01) == 2  # a paired interval needs two seeds
    n = seeds_needed(0.004, 0.006)
    assert minimum_detectable_difference(0.006, n) <= 0.004 < minimum_detectable_difference(0.006, n - 1)
    with pytest.raises(ValueError, match="delta must be > 0"):
        seeds_needed(0.0, 0.01)


def test_exact_t_test_power_is_stricter_with_few_seeds():
    assert minimum_detectable_difference_t(1.0, 3) == pytest.approx(3.264, abs=2e-3)  # noncentral t, df 2
    assert minimum_detectable_difference_t(1.0, 3) / minimum_detectable_difference(1.0, 3) == pytest.approx(2.02, abs=0.01)
    assert minimum_detectable_difference_t(1.0, 50) / minimum_detectable_difference(1.0, 50) == pytest.approx(1.02, abs=0.01)
    assert t_test_power(minimum_detectable_difference_t(0.01, 6), 0.01, 6) == pytest.approx(0.8, abs=1e-6)
    n = seeds_needed_t(0.005, 0.01)
    assert n >= seeds_needed(0.005, 0.01) and t_test_power(0.005, 0.01, n) >= 0.8 > t_test_power(0.005, 0.01, n - 1)
    assert math.isnan(minimum_detectable_difference_t(0.01, 1)) and minimum_detectable_difference_t(0.0, 4) == 0.0


def test_wilcoxon_hand_computed_and_its_limits():
    assert wilcoxon_p(RISING) == (pytest.approx(2 / 64), "")  # all six positive: exact two-sided p = 2 / 2^6
    flipped = RISING * np.array([1, -1, 1, 1, 1, 1])  # W- = 2: rank sums <= 2 are {}, {1}, {2}: 3 of 64 per side
    assert wilcoxon_p(flipped)[0] == pytest.approx(6 / 64)
    p, note = wilcoxon_p(RISING[:3])
    assert p == pytest.approx(0.25) and "3 non-zero differences: p >= 0.25 whatever the data, p < 0.05 needs 6" in note
    assert wilcoxon_p([0.0, 0.01, 0.02, 0.03])[0] == pytest.approx(0.25)  # the zero is dropped
    assert wilcoxon_p([0.0, 0.0, 0.0]) == (None, "all 3 differences are 0")
    assert wilcoxon_p([]) == (None, "no paired seeds")


def test_probability_of_improvement_counts_wins_only():
    assert probability_of_improvement([0.1, -0.1, 0.0, 0.2]) == 0.5  # a tie is no win
    assert probability_of_improvement([np.nan, 0.1]) == 1.0
    assert math.isnan(probability_of_improvement([]))


def test_paired_comparison_hand_computed_and_verdicts():
    c = paired_comparison(RISING)
    sd = math.sqrt(3.5e-4)  # variance of 1..6 is 3.5, times 0.01^2
    half = 2.570582 * sd / math.sqrt(6)  # t(0.975, 5)
    assert (c.n, c.mean, c.sd) == (6, pytest.approx(0.035), pytest.approx(sd))
    assert (c.ci_low, c.ci_high) == (pytest.approx(0.035 - half, rel=1e-5), pytest.approx(0.035 + half, rel=1e-5))
    assert c.wilcoxon_p == pytest.approx(0.03125) and c.p_improve == 1.0 and c.verdict == "better"
    assert c.mdd == pytest.approx(math.sqrt(7.85 * sd ** 2 / 6), rel=1e-3)
    assert paired_comparison(-RISING).verdict == "worse"
    three = paired_comparison(RISING[:3] + 0.1)  # the interval excludes 0, but 3 seeds cannot pass Wilcoxon
    assert three.ci_low > 0 and three.verdict == "noise"
    assert paired_comparison(RISING * np.array([1, -1, 1, -1, 1, -1])).verdict == "noise"
    single = paired_comparison([0.02])
    assert single.n == 1 and math.isnan(single.ci_low) and math.isnan(single.mdd) and single.verdict == "noise"
    with pytest.raises(ValueError, match="no paired differences"):
        paired_comparison([np.nan])


def test_verdict_lines_say_what_is_real_and_what_could_be_detected():
    real = verdict_line("ebal", paired_comparison(RISING))
    assert real.startswith("ebal: **better than random, a real difference**. Mean difference +0.0350 AUC")
    assert "Wilcoxon p = 0.0312" in real and "beats random in 100% of seeds" in real
    assert "with 6 seeds this experiment detects a true difference of 0.0214 AUC or more" in real
    noise = verdict_line("mgral", paired_comparison(RISING[:3] + 0.1))
    assert noise.startswith("mgral: inside the noise (the Wilcoxon test does not reject)")
    assert "p < 0.05 needs 6" in noise
    zero = verdict_line("twin", paired_comparison([0.0, 0.0, 0.0]))
    assert "inside the noise (the interval includes 0 and no Wilcoxon test)" in zero
    assert "no Wilcoxon p (all 3 differences are 0)" in zero


def tidy_benchmark(seeds=6, gap=0.02, noise=0.002):
    """A tidy benchmark: random, a strategy 'good' ahead by `gap` after the shared first cycle, a 'twin' of
    random, and a ceiling ahead by 2 * gap; per-seed offsets shared by every strategy of a seed."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        offset = rng.normal(0, 0.01)
        for strategy, lead in (("random", 0.0), ("good", gap), ("twin", 0.0), ("oracle_best_of_n", 2 * gap)):
            for cycle, labeled in enumerate((100, 200, 300), start=1):
                own = 0.0 if cycle == 1 else lead * (cycle - 1) / 2 + (rng.normal(0, noise) if lead else 0.0)
                value = 0.1 + 0.05 * cycle + offset + own
                rows.append({"strategy": strategy, "seed": seed, "cycle": cycle, "labeled": labeled,
                             "map50_95": value, "map50": value + 0.1})
    return pd.DataFrame(rows)


def test_auc_table_pairs_by_seed():
    tidy = tidy_benchmark()
    table = auc_table(tidy).set_index("strategy")
    auc_random = normalized_auc(np.array([100, 200, 300]), 0.1 + 0.05 * np.arange(1, 4))  # without the offset
    assert table.loc["twin", "diff_vs_random"] == pytest.approx(0.0) and table.loc["twin", "verdict"] == "noise"
    assert pd.isna(table.loc["twin", "wilcoxon_p"])  # every difference is 0
    assert table.loc["good", "verdict"] == "better" and table.loc["good", "p_improve"] == 1.0
    assert table.loc["good", "diff_vs_random"] == pytest.approx(0.02 * 0.5, abs=0.002)  # lead 0, 0.01, 0.02: AUC 0.01
    assert table.loc["good", "mdd"] < table.loc["good", "mdd_t"] < table.loc["good", "diff_vs_random"]
    assert abs(table.loc["random", "auc_mean"] - auc_random) < 0.01
    assert table.loc["random", "auc_std"] > 2 * table.loc["good", "sd_diff"]  # pairing removes the seed offsets
    assert set(comparisons(tidy)) == {"good", "twin", "oracle_best_of_n"}


def test_ceiling_gap_per_cycle_and_power_design():
    tidy = tidy_benchmark()
    gaps = gap_per_cycle(tidy, "oracle_best_of_n").set_index("labeled")
    assert gaps.loc[100, "gap_mean"] == 0.0 and pd.isna(gaps.loc[100, "wilcoxon_p"])  # the shared first detector
    assert gaps.loc[300, "gap_mean"] == pytest.approx(0.04, abs=0.003) and gaps.loc[300, "verdict"] == "better"
    assert gaps.loc[300, "wilcoxon_p"] == pytest.approx(2 / 64)
    assert gap_per_cycle(tidy, "missing").empty
    paired = comparisons(tidy)
    design = power_design(paired, "oracle_best_of_n")
    sds = [paired["good"].sd, paired["twin"].sd]
    assert design["sd_diff_median"] == pytest.approx(np.median(sds)) and design["seeds"] == 6
    assert design["ceiling_gap"] == pytest.approx(paired["oracle_best_of_n"].mean)
    assert design["target"] == pytest.approx(design["ceiling_gap"] / 2)
    assert design["seeds_needed"] == seeds_needed(design["target"], design["sd_diff_median"])
    assert design["mdd_reaches_target"] == (design["mdd"] <= design["target"])
    assert "ceiling_gap" not in power_design(paired) and power_design({}) == {}


def test_against_best_baseline_takes_the_highest_mean_and_the_given_mdd():
    tidy = tidy_benchmark()
    means = seed_aucs(tidy).mean()
    check = against_best_baseline(tidy, "twin", ["random", "good"], mdd=0.004)
    assert check["best_baseline"] == "good" and check["best_auc"] == pytest.approx(means["good"])
    assert check["threshold"] == pytest.approx(means["good"] - 0.004)
    assert not check["met"]  # twin is random, 0.01 behind good
    assert against_best_baseline(tidy, "twin", ["random", "good"], mdd=0.02)["met"]
    assert check["paired"].n == 6 and check["paired"].mean == pytest.approx(means["twin"] - means["good"])
    assert check["paired"].verdict == "worse"
    assert against_best_baseline(tidy, "good", ["random", "good"], mdd=0.004)["best_baseline"] == "random"  # not itself
    assert against_best_baseline(tidy, "missing", ["good"], 0.01) == {}
    assert against_best_baseline(tidy, "twin", ["missing"], 0.01) == {}
