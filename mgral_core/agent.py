"""The MGRAL sampling agent: an LSTM over the pool that scores every image (paper III-C, III-E).

Step t sees [embedding_t, score_{t-1}] (D + 1 wide), an LSTMCell of hidden size D + 1 shared by
all steps, and a 2-layer MLP decoder giving score_t. For speed the pool sequence is cut into
`chunks` interleaved sub-sequences run side by side (chunked recurrence): each image still sees
the previous score of its own sub-sequence. Training is REINFORCE on a Plackett-Luce policy:
a batch is k images sampled without replacement (Gumbel-top-k), its exact log-probability is
differentiated, and the reward is compared with a moving-average baseline (paper eq. 3-4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class AgentConfig:
    """iterations: policy-gradient steps; lr: Adam; baseline_decay: momentum of mAP_ref;
    chunks: parallel sub-sequences of the pool; decoder_hidden: MLP width; seed: all randomness."""

    iterations: int = 300
    lr: float = 1e-3
    baseline_decay: float = 0.5
    chunks: int = 32
    decoder_hidden: int = 64
    seed: int = 0


class SamplingAgent(nn.Module):
    def __init__(self, dim: int, decoder_hidden: int = 64):
        super().__init__()
        self.dim = dim
        self.cell = nn.LSTMCell(dim + 1, dim + 1)
        self.decoder = nn.Sequential(nn.Linear(dim + 1, decoder_hidden), nn.ReLU(), nn.Linear(decoder_hidden, 1))

    def forward(self, x: torch.Tensor, chunks: int) -> torch.Tensor:
        """Scores (U,) for pool embeddings x (U, D) in the given order."""
        u = len(x)
        b = max(1, min(chunks, u))
        steps = -(-u // b)
        padded = torch.zeros(b * steps, self.dim, dtype=x.dtype)
        padded[:u] = x
        seq = padded.view(steps, b, self.dim)  # (T, B, D): image t*B + j is step t of chunk j
        h = torch.zeros(b, self.dim + 1)
        c = torch.zeros(b, self.dim + 1)
        prev = torch.zeros(b, 1)
        out = []
        for t in range(steps):
            h, c = self.cell(torch.cat([seq[t], prev], 1), (h, c))  # (B, D + 1)
            prev = self.decoder(h)  # (B, 1)
            out.append(prev)
        return torch.stack(out).reshape(-1)[:u]  # (T, B, 1) -> (U,) back in pool order


def plackett_luce_log_prob(scores: torch.Tensor, ordered: torch.Tensor) -> torch.Tensor:
    """Exact log-probability of drawing `ordered` (k,) in that order without replacement from softmax(scores)."""
    picked = scores[ordered]  # (k,)
    mask = torch.zeros(len(ordered), len(scores), dtype=torch.bool)
    for j in range(1, len(ordered)):  # (k, U): items already drawn before step j
        mask[j] = mask[j - 1]
        mask[j, ordered[j - 1]] = True
    remaining = scores.unsqueeze(0).masked_fill(mask, float("-inf"))
    return (picked - torch.logsumexp(remaining, dim=1)).sum()


def gumbel_top_k(scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """An ordered sample of k items without replacement from softmax(scores)."""
    u = torch.rand(len(scores), generator=generator).clamp_(1e-12, 1 - 1e-12)
    return torch.topk(scores.detach() - torch.log(-torch.log(u)), k).indices


@dataclass
class TrainingHistory:
    rewards: list[float] = field(default_factory=list)
    baselines: list[float] = field(default_factory=list)


def train_agent(embeddings: np.ndarray, k: int, reward: Callable[[np.ndarray], float], config: AgentConfig,
                initial_baseline: float, progress: Callable[[int, float], None] | None = None
                ) -> tuple[SamplingAgent, TrainingHistory]:
    """Train an agent on pool embeddings (U, D); reward(indices (k,)) -> estimated mAP of L ∪ B."""
    torch.manual_seed(config.seed)  # parameter init; sampling uses its own generator below
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.as_tensor(embeddings, dtype=torch.float32)
    agent = SamplingAgent(x.shape[1], config.decoder_hidden)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.lr)
    baseline, history = float(initial_baseline), TrainingHistory()
    for iteration in range(config.iterations):
        scores = agent(x, config.chunks)  # (U,)
        batch = gumbel_top_k(scores, k, generator)
        value = float(reward(batch.numpy()))
        loss = -(value - baseline) * plackett_luce_log_prob(scores, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.rewards.append(value)
        history.baselines.append(baseline)
        baseline = config.baseline_decay * baseline + (1 - config.baseline_decay) * value
        if progress is not None:
            progress(iteration, value)
    return agent, history


@torch.no_grad()
def select_top_k(agent: SamplingAgent, embeddings: np.ndarray, k: int, chunks: int) -> np.ndarray:
    """Indices (k,) of the k highest agent scores (ties by index)."""
    scores = agent(torch.as_tensor(embeddings, dtype=torch.float32), chunks).numpy()
    return np.argsort(-scores, kind="stable")[:k]


def checkpoint(agent: SamplingAgent, config: AgentConfig) -> dict:
    """A torch.save-able dict of plain tensors and numbers (loads with weights_only=True)."""
    return {"state_dict": agent.state_dict(), "config": asdict(config), "dim": agent.dim}


def load_checkpoint(data: dict) -> tuple[SamplingAgent, AgentConfig]:
    config = AgentConfig(**data["config"])
    agent = SamplingAgent(int(data["dim"]), config.decoder_hidden)
    agent.load_state_dict(data["state_dict"])
    return agent, config
