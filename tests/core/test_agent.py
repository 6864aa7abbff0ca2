"""The agent learns a known reward; the estimator recovers a known function; distances agree."""

import numpy as np
import torch
from scipy.stats import spearmanr

from mgral_core.agent import AgentConfig, checkpoint, load_checkpoint, plackett_luce_log_prob, select_top_k, train_agent
from mgral_core.lookup_table import LookupRecord, LookupTable, load_record, save_record
from mgral_core.reward import RewardEstimator, leave_one_out_spearman
from mgral_core.wasserstein import SlicedIndex, distances_to_records


def clustered(seed=0, n=300, dim=16, clusters=4):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (clusters, dim))
    labels = rng.integers(0, clusters, n)
    return (centers[labels] + rng.normal(0, 1, (n, dim))).astype(np.float32), labels


def test_agent_reward_rises_above_random():
    emb, labels = clustered()
    reward = lambda idx: float((labels[idx] == 2).mean())  # noqa: E731  known: share of cluster 2
    random_level = float((labels == 2).mean())
    agent, history = train_agent(emb, 20, reward, AgentConfig(iterations=150, lr=3e-3, seed=0), random_level)
    late = np.mean(history.rewards[-20:])
    assert late > random_level + 0.3, (late, random_level)
    chosen = select_top_k(agent, emb, 20, AgentConfig().chunks)
    assert (labels[chosen] == 2).mean() > random_level + 0.3


def test_agent_same_seed_same_selection():
    emb, labels = clustered(1, n=120)
    reward = lambda idx: float((labels[idx] == 0).mean())  # noqa: E731
    picks = [select_top_k(train_agent(emb, 10, reward, AgentConfig(iterations=10, seed=5), 0.25)[0], emb, 10, 32)
             for _ in range(2)]
    assert picks[0].tolist() == picks[1].tolist()


def test_plackett_luce_probabilities_sum_to_one():
    scores = torch.tensor([0.3, -1.0, 2.0])
    total = sum(torch.exp(plackett_luce_log_prob(scores, torch.tensor([a, b]))).item()
                for a in range(3) for b in range(3) if a != b)
    assert abs(total - 1.0) < 1e-6


def test_checkpoint_round_trip_weights_only(tmp_path):
    emb, labels = clustered(2, n=50)
    agent, _ = train_agent(emb, 5, lambda idx: 0.0, AgentConfig(iterations=2), 0.0)
    torch.save(checkpoint(agent, AgentConfig(iterations=2)), tmp_path / "agent.pt")
    restored, config = load_checkpoint(torch.load(tmp_path / "agent.pt", weights_only=True))
    assert config.iterations == 2
    assert select_top_k(restored, emb, 5, 32).tolist() == select_top_k(agent, emb, 5, 32).tolist()


def _records(emb, labels, rng, n=40, k=30):
    records = []
    for i in range(n):
        p = rng.dirichlet(np.ones(4))  # batches with different cluster mixes
        idx = rng.choice(len(emb), k, replace=False, p=p[labels] / p[labels].sum())
        value = float((labels[idx] == 1).mean() + rng.normal(0, 0.01))
        records.append(LookupRecord(f"r{i:03d}", idx.astype(str), emb[idx], value))
    return records


def test_estimator_recovers_smooth_function():
    emb, labels = clustered(3, n=600)
    rng = np.random.default_rng(0)
    table = LookupTable(_records(emb, labels, rng, n=80))
    estimator = RewardEstimator(table, lambda ids: emb[np.asarray(ids).astype(int)], n_neighbors=3,
                                fallback_rule="never")
    fresh = _records(emb, labels, np.random.default_rng(9), n=25)
    estimates = [estimator(r.batch_ids) for r in fresh]
    assert spearmanr(estimates, [r.value for r in fresh]).statistic > 0.7
    assert leave_one_out_spearman(estimator) > 0.7


def test_fallback_triggers_on_far_batches_and_is_bounded():
    emb, labels = clustered(4, n=400)
    table = LookupTable(_records(emb, labels, np.random.default_rng(1), n=10))
    calls = []
    def far(ids):  # batch i sits 100*(i+1) away from every record and from the other batches
        ids = np.asarray(ids)
        return emb[ids % 1000] + 100.0 * (ids[0] // 1000 + 1)

    estimator = RewardEstimator(table, far, max_fallbacks=2, direct_value=lambda ids: calls.append(ids) or 0.5)
    values = [estimator(np.arange(30) + 1000 * i) for i in range(4)]
    assert len(calls) == 2 and estimator.fallbacks == 2
    assert values[:2] == [0.5, 0.5]
    assert len(estimator.records) == 12


def test_sliced_ranks_records_like_exact():
    emb, labels = clustered(5, n=600, dim=32)
    records = [r.embeddings for r in _records(emb, labels, np.random.default_rng(2), n=20, k=50)]
    candidate = emb[np.random.default_rng(3).choice(600, 50, replace=False)]
    exact = distances_to_records(candidate, records, "exact")
    sliced = distances_to_records(candidate, records, "sliced", SlicedIndex.build(records, 128, seed=0))
    assert spearmanr(exact, sliced).statistic >= 0.9


def test_records_persist_atomically(tmp_path):
    record = LookupRecord("rec_000", np.array(["a", "b"]), np.ones((2, 3), np.float32), 0.25, {"seconds": 1.5})
    save_record(tmp_path, record)
    (tmp_path / "rec_001.npz").write_bytes(b"half")  # a crashed write: no json, ignored
    loaded = LookupTable.load(tmp_path)
    assert [r.record_id for r in loaded.records] == ["rec_000"]
    assert load_record(tmp_path, "rec_000").value == 0.25
