"""The reward chain's figures on synthetic values: Spearman links, the best record, the ceiling, the targets."""

import numpy as np
import pytest

from mgral_core.reward_chain import ScoredBatch, chain_figures, chain_metrics, chain_rows, spearman


def test_spearman_skips_unknown_pairs_and_refuses_too_few_or_constant():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, None, 4, 5], [1, 2, 99, 5, 4]) == pytest.approx(0.8)  # the None pair is left out
    assert spearman([1, 2, float("nan"), 3], [1, 2, 3, 3.5]) == pytest.approx(1.0)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def synthetic_chain(seed=0):
    """Records and diverse batches whose true value is a known function of the proxy value."""
    rng = np.random.default_rng(seed)
    pseudo = rng.uniform(0.2, 0.3, 8)
    records = [ScoredBatch(f"record_{i:03d}", "random", float(p), true=float(2 * p), other_seeds=float(p + 0.001 * i))
               for i, p in enumerate(pseudo)]
    diverse = [ScoredBatch("entropy_sum", "proposal", 0.25, 0.70), ScoredBatch("coreset", "proposal", 0.24, 0.60),
               ScoredBatch("mixture:coreset", "mixture", 0.23, 0.55), ScoredBatch("random:0", "random", 0.22, 0.50),
               ScoredBatch("random:1", "random", 0.21, 0.40)]
    mgral = ScoredBatch("selected (mgral)", "selected", 0.235, 0.58)
    return records, diverse, mgral, pseudo


def test_figures_of_every_link():
    records, diverse, mgral, pseudo = synthetic_chain()
    f = chain_figures(records, diverse, loo_spearman=0.3, agent_final_reward=0.27, random_reference=0.25,
                      mgral=mgral, base_value=0.5)
    best = int(np.argmax(pseudo))
    assert f["fidelity_records"] == pytest.approx(1.0) and f["fidelity_diverse"] == pytest.approx(1.0)
    assert f["repeatability"] == pytest.approx(spearman(pseudo, pseudo + 0.001 * np.arange(8)))
    assert f["loo_spearman"] == 0.3 and f["records"] == 8 and f["diverse_batches"] == 5
    assert f["best_record"] == f"record_{best:03d}" and f["best_record_value"] == pytest.approx(pseudo[best])
    assert f["best_record_true"] == pytest.approx(2 * pseudo[best])
    assert f["agent_minus_reference"] == pytest.approx(0.02)
    assert f["agent_minus_best_record"] == pytest.approx(0.27 - pseudo[best])
    assert f["ceiling"] == "entropy_sum" and f["ceiling_true"] == 0.70
    assert f["mgral_minus_ceiling"] == pytest.approx(-0.12) and f["mgral_minus_coreset"] == pytest.approx(-0.02)
    assert f["true_entropy_sum"] == 0.70 and "true_random:0" not in f  # only proposals are baselines
    assert f["random_true_mean"] == pytest.approx(0.45) and f["mgral_minus_random"] == pytest.approx(0.13)
    assert f["mgral_rank"] == 3  # below entropy_sum (0.70) and coreset (0.60)
    assert f["mgral_true_gain"] == pytest.approx(0.08) and f["ceiling_true_gain"] == pytest.approx(0.20)


def test_rows_check_each_target():
    records, diverse, mgral, _ = synthetic_chain()
    reversed_diverse = [ScoredBatch(b.label, b.kind, -b.pseudo, b.true) for b in diverse]  # fidelity -1
    f = chain_figures(records, reversed_diverse, loo_spearman=0.55, agent_final_reward=None, random_reference=0.25,
                      mgral=mgral)
    rows = chain_rows(f)
    by_link = {}
    for r in rows:
        by_link.setdefault(r["link"], []).append(r)
    assert [r["met"] for r in by_link["b"]] == [False, None]  # diverse fidelity -1 < 0.6; records' has no target
    assert by_link["c"][0]["met"] is True  # 0.55 >= 0.5
    assert by_link["a"][0]["met"] is True  # repeatability is high here
    best_record_row = next(r for r in by_link["e"] if r["target"] == "MGRAL >= it")
    assert best_record_row["met"] is (mgral.true >= f["best_record_true"])
    assert by_link["d"][0]["value"] is None  # no agent: reported as unknown, no crash
    metrics = chain_metrics(f)
    assert metrics["chain_fidelity_diverse"] == pytest.approx(-1.0) and "chain_agent_final_reward" not in metrics
    assert metrics["chain_targets_checked"] == 4 and metrics["chain_targets_met"] == 2 + best_record_row["met"]
    assert all(isinstance(v, float) for v in metrics.values())
