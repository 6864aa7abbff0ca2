"""The sampling agent: fast path equals the reference, the policy is a proper distribution, it learns a
known reward, it is deterministic and round-trips through a checkpoint; MgralStrategy keeps the contract."""

import itertools

import numpy as np
import pytest
import torch

import mgral_core.agent.policy as agent_policy
from mgral_core.agent import (
    AgentConfig,
    SamplingAgent,
    checkpoint,
    gumbel_top_k,
    load_checkpoint,
    plackett_luce_log_prob,
    select_top_k,
    sequence_order,
    train_agent,
)
from mgral_core.lookup_table import LookupRecord, LookupTable
from mgral_core.reward import RewardEstimator
from mgral_core.strategies.base import PoolView
from mgral_core.strategies.mgral import MgralStrategy

TARGET = 2


def clustered(seed=0, n=200, dim=16, clusters=4):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (clusters, dim))
    labels = rng.integers(0, clusters, n)
    return (centers[labels] + rng.normal(0, 1, (n, dim))).astype(np.float32), labels


@pytest.mark.parametrize("chunks", [1, 3])
def test_fast_recurrence_matches_the_reference_loop(chunks, monkeypatch):
    monkeypatch.setattr(agent_policy, "_INFERENCE_BLOCK", 7)  # scoring carries state across blocks
    agent = SamplingAgent(6, AgentConfig(chunks=chunks, decoder_hidden=5, seed=1)).double()
    x = torch.randn(40, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fast, reference = agent(x), agent.forward_reference(x)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(agent.score(x), reference.detach(), rtol=0, atol=1e-12)
    params = list(agent.parameters())
    for g_fast, g_ref in zip(torch.autograd.grad(fast @ weights, params),
                             torch.autograd.grad(reference @ weights, params)):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-12)


def test_chunks_change_only_the_scores_after_a_piece_boundary():
    agent = SamplingAgent(4, AgentConfig(decoder_hidden=3)).double()
    x = torch.randn(12, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    whole, pieces = agent(x, chunks=1), agent(x, chunks=2)  # pieces: rows 0-5 and 6-11
    torch.testing.assert_close(whole[:6], pieces[:6])
    torch.testing.assert_close(agent(x[6:], chunks=1), pieces[6:])


def test_plackett_luce_log_probabilities_form_a_distribution():
    scores = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=torch.float64)
    for k in (1, 2, 4):
        total = sum(torch.exp(plackett_luce_log_prob(scores, torch.tensor(seq))).item()
                    for seq in itertools.permutations(range(4), k))
        assert total == pytest.approx(1.0, abs=1e-12)
    p = torch.softmax(scores, 0)
    expected = p[2] * p[0] / (1 - p[2])  # draw 2, then 0 from the rest
    assert plackett_luce_log_prob(scores, torch.tensor([2, 0])).exp().item() == pytest.approx(expected.item())


def test_gumbel_top_k_draws_from_plackett_luce():
    scores = torch.tensor([0.3, -1.0, 2.0, 0.5])
    generator = torch.Generator().manual_seed(0)
    draws = 20_000
    counts = {}
    for _ in range(draws):
        pair = tuple(gumbel_top_k(scores, 2, generator).tolist())
        counts[pair] = counts.get(pair, 0) + 1
    for pair in itertools.permutations(range(4), 2):
        expected = plackett_luce_log_prob(scores.double(), torch.tensor(pair)).exp().item()
        assert counts.get(pair, 0) / draws == pytest.approx(expected, abs=0.015)


def test_agent_reward_rises_well_above_the_random_batch_reward():
    emb, labels = clustered()
    random_level = float((labels == TARGET).mean())  # expected reward of a random batch

    def reward(rows):  # known reward: share of the batch from the TARGET cluster
        return float((labels[rows] == TARGET).mean())

    agent, history = train_agent(emb, 20, reward, AgentConfig(iterations=80, lr=3e-3, seed=0), random_level)
    assert len(history.rewards) == len(history.baselines) == 80
    assert np.mean(history.rewards[:10]) < random_level + 0.15
    assert np.mean(history.rewards[-20:]) > random_level + 0.4
    assert (labels[select_top_k(agent, emb, 20)] == TARGET).mean() > random_level + 0.5


def test_same_seed_same_selection():
    emb, labels = clustered(1, n=120)

    def run(seed):
        agent, history = train_agent(emb, 10, lambda rows: float((labels[rows] == 0).mean()),
                                     AgentConfig(iterations=8, seed=seed), 0.25)
        return select_top_k(agent, emb, 10).tolist(), history.rewards

    assert run(5) == run(5)
    assert sequence_order(120, 5).tolist() != sequence_order(120, 6).tolist()


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    emb, _ = clustered(2, n=50)
    config = AgentConfig(iterations=2, chunks=2, seed=3)
    agent, _ = train_agent(emb, 5, lambda rows: float(rows.mean()), config, 0.0)
    torch.save(checkpoint(agent), tmp_path / "agent.pt")
    restored = load_checkpoint(torch.load(tmp_path / "agent.pt", weights_only=True))
    assert restored.config == config
    assert select_top_k(restored, emb, 5).tolist() == select_top_k(agent, emb, 5).tolist()


def test_config_rejects_bad_values():
    for bad in ({"baseline_decay": 1.5}, {"chunks": 0}, {"lr": 0.0}, {"seed": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AgentConfig(**bad)


def composition_pool(seed=0, n_unlabeled=120, n_records=40, k=10):
    """A pool of clustered embeddings and a lookup table whose values are the TARGET cluster's share."""
    emb, labels = clustered(seed, n=n_unlabeled + 10)
    ids = np.array([f"u{i:03d}" for i in range(n_unlabeled)])
    pool = PoolView(ids, emb[:n_unlabeled], np.array([f"l{i}" for i in range(10)]), emb[n_unlabeled:])
    rng = np.random.default_rng(seed + 1)
    records = []
    for r in range(n_records):
        weights = rng.dirichlet(np.ones(4))[labels[:n_unlabeled]]
        rows = rng.choice(n_unlabeled, k, replace=False, p=weights / weights.sum())
        records.append(LookupRecord(f"record_{r:03d}", ids[rows], emb[rows], float((labels[rows] == TARGET).mean())))
    return pool, labels[:n_unlabeled], LookupTable(records)


def test_mgral_strategy_keeps_the_strategy_contract():
    pool, _, table = composition_pool()
    strategy = MgralStrategy(estimator_factory=lambda view, k: RewardEstimator(table, fallback_rule="never"),
                             agent_config=AgentConfig(iterations=3))
    ids = strategy(pool, 12, np.random.default_rng(0))
    assert len(ids) == 12 and len(set(ids)) == 12 and all(isinstance(i, str) for i in ids)
    assert set(ids) <= set(pool.unlabeled_ids.tolist()) and not set(ids) & set(pool.labeled_ids.tolist())
    assert strategy(pool, 10, np.random.default_rng(3)) == strategy(pool, 10, np.random.default_rng(3))
    assert strategy(pool, 0, np.random.default_rng(0)) == []
    with pytest.raises(ValueError, match="exceeds the 120 unlabeled"):
        strategy(pool, 121, np.random.default_rng(0))
    assert sorted(strategy(pool, 120, np.random.default_rng(0))) == sorted(pool.unlabeled_ids.tolist())
    assert len(strategy.last_history.rewards) == 3 and "state_dict" in strategy.last_checkpoint
    with pytest.raises(ValueError, match="exactly one"):
        MgralStrategy()


def test_mgral_strategy_selects_what_the_lookup_table_rewards():
    pool, labels, table = composition_pool()
    estimator = RewardEstimator(table, fallback_rule="never")
    strategy = MgralStrategy(estimator, agent_config=AgentConfig(iterations=60, lr=3e-3))
    ids = strategy(pool, 10, np.random.default_rng(0))
    chosen = np.isin(pool.unlabeled_ids, ids)
    assert (labels[chosen] == TARGET).mean() > (labels == TARGET).mean() + 0.4
    assert np.mean(strategy.last_history.rewards[-10:]) > estimator.reference_value + 0.1
    assert estimator.queries == 60


def test_scale_free_advantages_ignore_the_rewards_scale():
    """'normalized' and 'rank' train the same agent when every reward and the baseline are scaled and shifted
    alike ('rank' for any increasing map); 'baseline' (the paper's) does not."""
    emb, labels = clustered(4, n=90)

    def run(kind, scale, shift):
        def reward(rows):
            return scale * float((labels[rows] == TARGET).mean()) + shift

        config = AgentConfig(iterations=12, lr=3e-3, seed=2, advantage=kind, advantage_window=5)
        agent, history = train_agent(emb, 8, reward, config, scale * 0.25 + shift)
        return agent.score(torch.as_tensor(emb)).numpy(), history

    for kind in ("normalized", "rank"):
        (scores, history), (scaled, scaled_history) = run(kind, 1.0, 0.0), run(kind, 0.001, 0.03)
        np.testing.assert_allclose(scaled_history.rewards, 0.001 * np.asarray(history.rewards) + 0.03, atol=1e-12)
        np.testing.assert_allclose(scaled, scores, rtol=1e-4, atol=1e-5)
    plain, small = run("baseline", 1.0, 0.0)[0], run("baseline", 0.001, 0.03)[0]
    assert not np.allclose(plain, small, rtol=1e-4, atol=1e-5)


def test_advantage_values():
    from mgral_core.agent.policy import advantage

    assert advantage(0.3, 0.2, [0.1], "baseline") == pytest.approx(0.1)
    assert advantage(0.3, 0.2, [0.1, 0.3], "normalized") == pytest.approx(0.1 / 0.1)  # std of [0.1, 0.3]
    assert advantage(0.3, 0.2, [0.5], "normalized") == 1.0  # one previous reward: the sign
    assert advantage(0.3, 0.2, [0.1, 0.2, 0.3, 0.4], "rank") == pytest.approx((2 + 0.5) / 4 - 0.5)
    assert advantage(0.1, 0.2, [], "rank") == -0.5
    with pytest.raises(ValueError, match="advantage"):
        AgentConfig(advantage="ranks")
    with pytest.raises(ValueError, match="advantage_window"):
        AgentConfig(advantage_window=1)


def test_imitation_start_puts_the_imitated_batch_on_top():
    emb, _ = clustered(5, n=80)
    target = np.random.default_rng(0).choice(80, 10, replace=False)
    config = AgentConfig(iterations=0, lr=1e-2, seed=1, imitation_steps=60)
    agent, history = train_agent(emb, 10, lambda rows: 0.0, config, 0.0, imitate=target)
    assert history.rewards == []
    assert len(set(select_top_k(agent, emb, 10).tolist()) & set(target.tolist())) >= 8
    untrained, _ = train_agent(emb, 10, lambda rows: 0.0, AgentConfig(iterations=0, seed=1), 0.0, imitate=target)
    assert len(set(select_top_k(untrained, emb, 10).tolist()) & set(target.tolist())) <= 4  # steps 0: no imitation
    with pytest.raises(ValueError, match="distinct rows"):
        train_agent(emb, 10, lambda rows: 0.0, config, 0.0, imitate=np.array([1, 1, 2]))


def test_mgral_imitation_starts_from_the_best_record():
    from mgral_core.strategies.mgral import best_record_rows

    pool, _, table = composition_pool(seed=2)
    estimator = RewardEstimator(table, fallback_rule="never")
    best = max(table.records, key=lambda record: record.value)
    rows = best_record_rows(estimator, pool.unlabeled_ids)
    assert sorted(pool.unlabeled_ids[rows].tolist()) == sorted(best.batch_ids.tolist())
    strategy = MgralStrategy(estimator, agent_config=AgentConfig(iterations=0, lr=1e-2, imitation_steps=60))
    ids = strategy(pool, 10, np.random.default_rng(0))
    assert len(set(ids) & set(best.batch_ids.tolist())) >= 8


def test_best_estimate_final_choice_takes_a_record_the_agent_did_not_beat():
    """final_choice 'best_estimate': an untrained agent's top-k loses to the best record, which is then the batch;
    a record whose images are no longer all candidates is left out; 'top_k' keeps the agent's batch."""
    pool, _, table = composition_pool(seed=2)
    best = max(table.records, key=lambda record: record.value)
    agent = AgentConfig(iterations=1, lr=1e-2)
    plain = MgralStrategy(RewardEstimator(table, fallback_rule="never"), agent_config=agent)
    chooser = MgralStrategy(RewardEstimator(table, fallback_rule="never"), agent_config=agent,
                            final_choice="best_estimate")
    plain_ids, chosen_ids = plain(pool, 10, np.random.default_rng(0)), chooser(pool, 10, np.random.default_rng(0))
    assert plain.last_final_choice is None and set(plain_ids) != set(best.batch_ids.tolist())
    assert sorted(chosen_ids) == sorted(best.batch_ids.tolist())
    choice = chooser.last_final_choice
    assert choice["source"] == best.record_id and choice["chosen_estimate"] == pytest.approx(best.value)
    assert choice["agent_estimate"] < choice["chosen_estimate"]
    gone = set(best.batch_ids[:1].tolist())  # one of the best record's images was labeled since
    shrunk = PoolView(np.array([i for i in pool.unlabeled_ids if i not in gone]),
                      pool.unlabeled_embeddings[[i not in gone for i in pool.unlabeled_ids]], pool.labeled_ids,
                      pool.labeled_embeddings)
    chooser = MgralStrategy(RewardEstimator(table, fallback_rule="never"), agent_config=agent,
                            final_choice="best_estimate")
    assert not set(chooser(shrunk, 10, np.random.default_rng(0))) & gone
    assert chooser.last_final_choice["source"] != best.record_id
    with pytest.raises(ValueError, match="unknown final_choice 'best'"):
        MgralStrategy(RewardEstimator(table), final_choice="best")


def test_exact_reward_and_best_sampled_final_choice():
    """reward 'exact': every drawn batch is valued by the value function itself (no record matching, no
    fallback); final_choice 'best_sampled' returns the best batch drawn unless the top-k rates higher."""
    from mgral_core.reward import ExactValueEstimator

    pool, labels, table = composition_pool(seed=4)
    share = dict(zip(pool.unlabeled_ids.tolist(), (labels == TARGET).astype(float)))

    def value_of(batch_ids):
        return float(np.mean([share[str(i)] for i in batch_ids]))

    exact = ExactValueEstimator(table, value_of)
    batch = pool.unlabeled_ids[:10]
    assert exact(batch) == value_of(batch) and exact.estimate_only(batch, None) == value_of(batch)
    assert exact.queries == 1 and exact.fallbacks == 0 and exact.diagnostics()["exact"] == 1.0
    assert exact.reference_value == pytest.approx(np.mean(table.values))  # the table still gives the reference

    agent = AgentConfig(iterations=2, lr=1e-2)
    for seed, source in ((0, "agent"), (1, "sampled")):  # after 2 steps the top-k is sometimes the better one
        plain = MgralStrategy(ExactValueEstimator(table, value_of), agent_config=agent)
        chooser = MgralStrategy(ExactValueEstimator(table, value_of), agent_config=agent, final_choice="best_sampled")
        plain_ids = plain(pool, 10, np.random.default_rng(seed))
        chosen_ids = chooser(pool, 10, np.random.default_rng(seed))
        history, choice = chooser.last_history, chooser.last_final_choice
        assert history.rewards == plain.last_history.rewards  # same draws; only the final choice differs
        assert history.best_reward == max(history.rewards)
        assert value_of(pool.unlabeled_ids[history.best_rows]) == history.best_reward  # best_rows are pool rows
        assert choice["source"] == source and choice["agent_estimate"] == pytest.approx(value_of(plain_ids))
        assert value_of(chosen_ids) == max(history.best_reward, value_of(plain_ids))
        assert len(set(chosen_ids)) == 10 and set(chosen_ids) <= set(pool.unlabeled_ids.tolist())
        assert (sorted(chosen_ids) == sorted(plain_ids)) == (source == "agent")
