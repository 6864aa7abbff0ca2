"""The agent's large-pool paths against the simple ones (correctness only; speed is measured in bench/).

- float32 (the default) keeps the selections of the straightforward nn.LSTMCell loop;
- scoring and backpropagating in blocks of pool rows, whatever the number of pieces, equal the reference loop;
- bfloat16 products stay within a documented distance of float32 (scores, gradients, top-k) and still learn;
- `config_for_pool` switches exactly above `large_pool`;
- two intra-op threads (agent.threads) equal the reference loop and select what one thread selects.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

import mgral_core.agent as agent_module
import mgral_core.agent.config as agent_config
import mgral_core.agent.policy as agent_policy
import mgral_core.agent.recurrence as agent_recurrence
from mgral_core.agent import (
    LARGE_POOL_PIECE_STEPS,
    AgentConfig,
    SamplingAgent,
    config_for_pool,
    select_top_k,
    sequence_order,
    train_agent,
)


def clustered(seed=0, n=300, dim=16, clusters=4):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (clusters, dim))
    labels = rng.integers(0, clusters, n)
    return (centers[labels] + rng.normal(0, 1, (n, dim))).astype(np.float32), labels


def trained(precision="float32", seed=0, n=300, dim=16, iterations=30, chunks=1):
    emb, labels = clustered(seed, n, dim)
    config = AgentConfig(iterations=iterations, lr=3e-3, chunks=chunks, precision=precision, seed=seed)
    agent, history = train_agent(emb, 20, lambda rows: float((labels[rows] == 2).mean()), config,
                                 float((labels == 2).mean()))
    return agent, emb, labels, history


def bf16_twin(agent):
    twin = SamplingAgent(agent.dim, replace(agent.config, precision="bfloat16"))
    twin.load_state_dict(agent.state_dict())
    return twin


def test_doubling_the_g_block_is_exact():
    w = torch.randn(12, 20, generator=torch.Generator().manual_seed(0))
    x = torch.randn(7, 12, generator=torch.Generator().manual_seed(1))
    doubled = x @ agent_recurrence._double_g(w, 1)
    plain = x @ w
    assert torch.equal(doubled[:, 10:15], 2 * plain[:, 10:15]) and torch.equal(doubled[:, :10], plain[:, :10])
    assert torch.equal(agent_recurrence._double_g(w.t(), 0), agent_recurrence._double_g(w, 1).t())


def test_float32_selection_equals_the_straightforward_loop():
    agent, emb, _, _ = trained()
    x_seq = torch.as_tensor(emb)[torch.as_tensor(sequence_order(len(emb), agent.config.seed))]
    with torch.no_grad():
        reference = agent.forward_reference(x_seq)  # (U,) nn.LSTMCell loop, in reading order
    reference_rows = sequence_order(len(emb), agent.config.seed)[np.argsort(-reference.numpy(), kind="stable")[:20]]
    np.testing.assert_array_equal(select_top_k(agent, emb, 20), reference_rows)


@pytest.mark.parametrize(("chunks", "block_rows"), [(8, 3), (5, 11), (2, 64)])
def test_scoring_in_row_blocks_equals_the_reference_loop(chunks, block_rows, monkeypatch):
    monkeypatch.setattr(agent_policy, "_INFERENCE_BLOCK", block_rows)  # fewer rows than pieces, or several steps
    agent = SamplingAgent(5, AgentConfig(chunks=chunks, decoder_hidden=4, seed=2)).double()
    x = torch.randn(43, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(agent.score(x), agent.forward_reference(x).detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("chunks", "block_rows"), [(1, 4), (3, 7), (6, 5)])
def test_backward_in_row_blocks_equals_the_reference_gradients(chunks, block_rows, monkeypatch):
    monkeypatch.setattr(agent_recurrence, "_BACKWARD_BLOCK", block_rows)  # several backward blocks, ragged last one
    agent = SamplingAgent(5, AgentConfig(chunks=chunks, decoder_hidden=4, seed=6)).double()
    x = torch.randn(29, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    weights = torch.randn(29, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    params = list(agent.parameters())
    for g_fast, g_ref in zip(torch.autograd.grad(agent(x) @ weights, params),
                             torch.autograd.grad(agent.forward_reference(x) @ weights, params)):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-12)


def test_bfloat16_scores_and_gradients_stay_close_to_float32():
    agent, emb, _, _ = trained()
    twin = bf16_twin(agent)
    x = torch.as_tensor(emb)
    s32, s16 = agent(x), twin(x)
    assert ((s16 - s32).abs().max() / s32.std()).item() < 0.02  # 4e-3 measured
    torch.testing.assert_close(twin.score(x), s16.detach(), rtol=0, atol=1e-5)  # inference = training path
    weights = torch.randn(len(x), generator=torch.Generator().manual_seed(0))
    for g32, g16 in zip(torch.autograd.grad(s32 @ weights, list(agent.parameters())),
                        torch.autograd.grad(s16 @ weights, list(twin.parameters()))):
        assert torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), 0).item() > 0.99


def test_bfloat16_top_k_mostly_agrees_with_float32():
    agent, emb, _, _ = trained(n=600)
    overlap = set(select_top_k(agent, emb, 60).tolist()) & set(select_top_k(bf16_twin(agent), emb, 60).tolist())
    assert len(overlap) >= 54  # near-ties may swap; measured 60/60 here


def test_bfloat16_agent_learns_the_known_reward():
    _, _, labels, history = trained("bfloat16", iterations=80, n=200)
    random_level = float((labels == 2).mean())
    assert np.mean(history.rewards[-20:]) > random_level + 0.4


def test_bfloat16_pieces_agree_with_the_reference_loop_within_bfloat16_rounding():
    agent = SamplingAgent(8, AgentConfig(chunks=4, decoder_hidden=6, seed=4, precision="bfloat16"))
    x = torch.randn(90, 8, generator=torch.Generator().manual_seed(5))
    reference = agent.forward_reference(x).detach()  # float32 throughout
    assert (agent(x).detach() - reference).abs().max().item() < 0.02 * reference.abs().max().item() + 1e-3


def test_config_for_pool_switches_only_above_the_threshold(monkeypatch):
    base = AgentConfig(chunks=1, seed=3, threads=2)
    assert config_for_pool(base, 5000, 5000) == replace(base, threads=1)  # small pools: one thread
    assert config_for_pool(base, 1_000_000, 0) is base
    monkeypatch.setattr(agent_config, "bfloat16_matmul_is_fast", lambda: True)
    large = config_for_pool(base, 16_551, 5000)
    assert large.chunks == -(-16_551 // LARGE_POOL_PIECE_STEPS) == 130
    assert large.precision == "bfloat16" and large.seed == 3 and large.iterations == base.iterations
    assert large.threads == 2
    assert config_for_pool(replace(base, chunks=500), 16_551, 5000).chunks == 500  # more pieces are kept
    monkeypatch.setattr(agent_config, "bfloat16_matmul_is_fast", lambda: False)
    assert config_for_pool(base, 16_551, 5000).precision == "float32"


def test_precision_is_validated_and_checkpointed():
    with pytest.raises(ValueError, match="precision"):
        AgentConfig(precision="float16")
    agent, emb, _, _ = trained("bfloat16", iterations=2, n=80)
    restored = agent_module.load_checkpoint(agent_module.checkpoint(agent))
    assert restored.config.precision == "bfloat16"
    np.testing.assert_array_equal(select_top_k(restored, emb, 10), select_top_k(agent, emb, 10))


@pytest.mark.parametrize("chunks", [1, 7])
def test_two_intra_op_threads_equal_the_reference_loop(chunks, monkeypatch):
    monkeypatch.setattr(agent_recurrence, "_BACKWARD_BLOCK", 6)  # several backward blocks as well
    agent = SamplingAgent(5, AgentConfig(chunks=chunks, decoder_hidden=4, seed=6, threads=2)).double()
    x = torch.randn(37, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    weights = torch.randn(37, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    with agent_module.intra_op_threads(2):
        scores = agent.score(x)
        fast = torch.autograd.grad(agent(x) @ weights, list(agent.parameters()))
    torch.testing.assert_close(scores, agent.forward_reference(x).detach(), rtol=0, atol=1e-12)
    for g_fast, g_ref in zip(fast, torch.autograd.grad(agent.forward_reference(x) @ weights, list(agent.parameters()))):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-12)


def test_threads_zero_means_one_per_core():
    assert agent_module.resolve_threads(0) == agent_module.available_cores() >= 1
    assert agent_module.resolve_threads(3) == 3
    with pytest.raises(ValueError, match="threads"):
        agent_module.resolve_threads(-1)


def test_two_threads_select_what_one_thread_selects():
    emb, labels = clustered(seed=3, n=600, dim=32)
    runs = []
    for threads in (1, 2):  # the large-pool path: pieces and bfloat16
        config = AgentConfig(iterations=20, lr=3e-3, seed=3, threads=threads, chunks=6, precision="bfloat16")
        agent, history = train_agent(emb, 30, lambda rows: float((labels[rows] == 1).mean()), config,
                                     float((labels == 1).mean()))
        runs.append((set(select_top_k(agent, emb, 30).tolist()), history.rewards))
    assert len(runs[0][0] & runs[1][0]) >= 27  # thread count changes float rounding at most
    assert np.allclose(runs[0][1], runs[1][1], atol=0.05)
    assert torch.get_num_threads() >= 1 and AgentConfig().threads == 1
    with pytest.raises(ValueError, match="threads"):
        AgentConfig(threads=0)
