"""The sampling policy: `SamplingAgent`, Plackett-Luce sampling, REINFORCE training, scoring, selection and checkpoints."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from mgral_core.agent.config import AgentConfig
from mgral_core.agent.recurrence import ScoreRecurrence, _double_g, _gate_matrix, _project, _recurrence_scan
from mgral_core.agent.runtime import intra_op_threads, retained_heap

_INIT_STREAM, _ORDER_STREAM, _SAMPLING_STREAM = 0, 1, 2
_INFERENCE_BLOCK = 1 << 16  # pool rows (steps x pieces) whose input projection is materialised at once when scoring


def stream_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for one random stream (init, order, sampling) derived from the config seed."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def sequence_order(n: int, seed: int) -> np.ndarray:
    """(n,) the order in which the agent reads n pool rows: a permutation fixed by `seed`."""
    return np.random.default_rng(stream_seed(seed, _ORDER_STREAM)).permutation(n)


class SamplingAgent(nn.Module):
    """LSTM cell (D + 1 -> D + 1) and 2-layer MLP decoder (D + 1 -> M -> 1); parameters seeded from the config."""

    def __init__(self, dim: int, config: AgentConfig):
        super().__init__()
        self.dim, self.config = dim, config
        width = dim + 1
        self.cell = nn.LSTMCell(width, width, device="meta")
        self.decoder = nn.Sequential(nn.Linear(width, config.decoder_hidden, device="meta"), nn.ReLU(),
                                     nn.Linear(config.decoder_hidden, 1, device="meta"))
        self.to_empty(device="cpu")
        self._init_parameters(torch.Generator().manual_seed(stream_seed(config.seed, _INIT_STREAM)))
        self._piece_cache: tuple | None = None  # (x, x's version, chunks, pieces, U) of the last `forward`

    @torch.no_grad()
    def _init_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default ranges (uniform +-1/sqrt(fan_in)), drawn from `generator` instead of the global RNG."""
        bound = 1.0 / math.sqrt(self.cell.hidden_size)
        for p in self.cell.parameters():
            p.uniform_(-bound, bound, generator=generator)
        for layer in (self.decoder[0], self.decoder[2]):
            bound = 1.0 / math.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)

    def _pieces(self, x: Tensor, chunks: int) -> tuple[Tensor, int]:
        """x (U, D) in sequence order -> (T, B, D) with piece j = rows [j T, (j + 1) T); zero padding at the end."""
        u = len(x)
        b = max(1, min(chunks, u))
        steps = -(-u // b)
        padded = x.new_zeros(b * steps, self.dim)
        padded[:u] = x
        return padded.view(b, steps, self.dim).transpose(0, 1).contiguous(), u  # (T, B, D)

    @property
    def low_precision(self) -> torch.dtype | None:
        """The dtype of the large matrix products when it is not the parameters' own (config.precision)."""
        return torch.bfloat16 if self.config.precision == "bfloat16" else None

    def _folded_bias(self) -> Tensor:
        """(4H,) the previous score's decoder bias b2 seen through its gate weight w_s."""
        return self.cell.weight_ih[:, self.dim] * self.decoder[2].bias

    def _projection_weights(self) -> tuple[Tensor, Tensor]:
        """w_emb (4H, D), the embedding columns of the input weights, and the bias (4H,) of every step's
        projection, with `_folded_bias` in it: a piece's first step (previous score 0) must have it
        taken out by the caller."""
        return self.cell.weight_ih[:, :self.dim], self.cell.bias_ih + self.cell.bias_hh + self._folded_bias()

    def _product_pieces(self, x: Tensor, chunks: int) -> tuple[Tensor, int]:
        """`_pieces(x, chunks)` in the large products' dtype, kept for the next call with the same,
        unmodified x (training reads one x every iteration)."""
        cache = self._piece_cache
        if cache is None or cache[0] is not x or cache[1] != x._version or cache[2] != chunks:
            seq, u = self._pieces(x, chunks)
            self._piece_cache = cache = (x, x._version, chunks, seq if self.low_precision is None
                                         else seq.to(self.low_precision), u)
        return cache[3], cache[4]

    def forward(self, x: Tensor, chunks: int | None = None) -> Tensor:
        """Scores (U,) of pool embeddings x (U, D) read in the given row order; differentiable."""
        seq, u = self._product_pieces(x, self.config.chunks if chunks is None else chunks)  # (T, B, D)
        w2 = self.decoder[2].weight[0]  # (M,)
        w_emb, bias = self._projection_weights()
        relu_z = ScoreRecurrence.apply(seq, w_emb, bias, -self._folded_bias(), self.cell.weight_hh,
                                       self.cell.weight_ih[:, self.dim], self.decoder[0].weight,
                                       self.decoder[0].bias, w2, self.low_precision)  # (T, B, M)
        scores = relu_z @ w2 + self.decoder[2].bias  # (T, B)
        return scores.t().reshape(-1)[:u]  # (U,) back in row order

    def _recurrent_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The scoring pass's w_big (g block doubled, in config.precision), w1^T, b1 and w2."""
        w_s, w2 = self.cell.weight_ih[:, self.dim], self.decoder[2].weight[0]
        w_big = _double_g(_gate_matrix(self.cell.weight_hh, w_s, w2), 1)  # (H + M, 4H)
        if self.low_precision is not None:
            w_big = w_big.to(self.low_precision)
        return w_big, self.decoder[0].weight.t().contiguous(), self.decoder[0].bias, w2

    @torch.no_grad()
    def score(self, x: Tensor, chunks: int | None = None) -> Tensor:
        """The scores (U,) of `forward` without autograd, in memory linear in U only through x and the output.

        The input projection is materialised for about _INFERENCE_BLOCK pool rows at a time (at least
        one step of every piece), whatever the number of pieces.
        """
        seq, u = self._pieces(x, self.config.chunks if chunks is None else chunks)  # (T, B, D)
        w_big, w1_t, b1, w2 = self._recurrent_weights()
        w_emb, bias = (_double_g(w, 0) for w in self._projection_weights())
        first_offset = _double_g(-self._folded_bias(), 0)
        scores = seq.new_empty(len(seq), seq.shape[1])  # (T, B)
        state_u = seq.new_zeros(seq.shape[1], w_big.shape[0])  # (B, H + M)
        state_c = seq.new_zeros(seq.shape[1], self.cell.hidden_size)  # (B, H)
        block = max(1, _INFERENCE_BLOCK // seq.shape[1])  # steps per block
        for start in range(0, len(seq), block):
            px = _project(seq[start:start + block], w_emb, bias, self.low_precision)
            offset = first_offset if start == 0 else None  # a piece's first step: no previous score
            relu_z, state_u, state_c = _recurrence_scan(px, w_big, w1_t, b1, state_u, state_c, offset)
            scores[start:start + len(px)] = relu_z @ w2 + self.decoder[2].bias
        return scores.t().reshape(-1)[:u]

    def forward_reference(self, x: Tensor, chunks: int | None = None) -> Tensor:
        """The same scores (U,) as `forward` by the straightforward per-step nn.LSTMCell loop (slow; for tests)."""
        seq, u = self._pieces(x, self.config.chunks if chunks is None else chunks)  # (T, B, D)
        b = seq.shape[1]
        h = seq.new_zeros(b, self.dim + 1)
        c = seq.new_zeros(b, self.dim + 1)
        prev = seq.new_zeros(b, 1)
        out = []
        for t in range(len(seq)):
            h, c = self.cell(torch.cat([seq[t], prev], 1), (h, c))  # (B, D + 1)
            prev = self.decoder(h)  # (B, 1)
            out.append(prev[:, 0])
        return torch.stack(out).t().reshape(-1)[:u]


def gumbel_top_k(scores: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """(k,) an ordered sample of k distinct positions from the Plackett-Luce distribution of `scores` (U,).

    Adding independent Gumbel noise to the scores and taking the top k in descending order draws k
    items without replacement, each with probability softmax over the items not yet drawn.
    """
    uniform = torch.rand(scores.shape, generator=generator, dtype=torch.float64).clamp_(1e-300, 1.0)
    keys = scores.detach().double() - torch.log(-torch.log(uniform))  # (U,)
    return torch.topk(keys, k).indices


def plackett_luce_log_prob(scores: Tensor, ordered: Tensor) -> Tensor:
    """Exact log-probability of drawing the positions `ordered` (k,) in that order without replacement.

    log p = sum_j [s_{o_j} - logsumexp(s over the items not drawn before step j)], computed in
    O(U + k): the items not yet drawn at step j are o_j..o_{k-1} plus every never-drawn item.
    """
    picked = scores[ordered]  # (k,)
    never_drawn = torch.ones_like(scores, dtype=torch.bool)
    never_drawn[ordered] = False
    rest = scores[never_drawn]
    rest_lse = torch.logsumexp(rest, 0) if len(rest) else scores.new_tensor(float("-inf"))
    drawn_later = torch.logcumsumexp(picked.flip(0), 0).flip(0)  # (k,) logsumexp of picked[j:]
    return (picked - torch.logaddexp(drawn_later, rest_lse)).sum()


def softmax_entropy(scores: Tensor) -> Tensor:
    """Entropy of softmax(scores): the spread of the first draw (the Plackett-Luce entropy is intractable)."""
    log_p = torch.log_softmax(scores, 0)
    return -(log_p.exp() * log_p).sum()


@dataclass
class TrainingHistory:
    """Per-iteration reward R_i and the baseline mAP_ref it was compared with; the best batch drawn.

    `best_rows` are the rows (of the embeddings the agent was trained on) of the first batch drawn with the
    highest reward, `best_reward` that reward (None before any iteration).
    """

    rewards: list[float] = field(default_factory=list)
    baselines: list[float] = field(default_factory=list)
    best_rows: np.ndarray | None = None
    best_reward: float | None = None

    def to_dict(self) -> dict[str, list[float]]:
        return {"rewards": list(self.rewards), "baselines": list(self.baselines)}


def train_agent(embeddings: np.ndarray, k: int, reward: Callable[[np.ndarray], float], config: AgentConfig,
                initial_baseline: float, progress: Callable[[int, float], None] | None = None,
                imitate: np.ndarray | None = None) -> tuple[SamplingAgent, TrainingHistory]:
    """Train a fresh agent by REINFORCE on one pool.

    Each iteration scores the pool, samples an ordered batch of k rows (Gumbel-top-k), gets
    R = reward(rows), and steps Adam on -A * log p(batch) - entropy_weight * H, where the advantage A is
    R - mAP_ref by default (config.advantage; see AgentConfig for the scale-free alternatives); then
    mAP_ref <- beta * mAP_ref + (1 - beta) * R (paper eq. 3-4; the advantage uses the baseline from
    before this iteration's reward, which keeps the gradient estimate unbiased). With
    config.imitation_steps > 0 and `imitate` given, that many steps first raise the probability of
    drawing the rows `imitate` (in the order the agent then scores them).

    Args:
        embeddings: (U, D) pool embeddings; the agent reads them in `sequence_order(U, config.seed)`.
        k: batch size (the cycle budget), 1 <= k <= U.
        reward: rows (k,) of `embeddings` -> the estimated value of L ∪ batch. Row positions refer to
            this array only; map them to image ids before they leave the caller.
        config: see AgentConfig; its seed fixes everything random here.
        initial_baseline: mAP_ref before the first iteration (e.g. the random-batch reference value).
        progress: called with (iteration, reward) after each iteration.
        imitate: rows of `embeddings` (distinct, at most U) to imitate first; used only when
            config.imitation_steps > 0.
    """
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)  # (U, D)
    if x.ndim != 2 or not 1 <= k <= len(x):
        raise ValueError(f"need embeddings (U, D) and 1 <= k <= U, got shape {tuple(x.shape)} and k={k}")
    order = sequence_order(len(x), config.seed)  # (U,) sequence position -> row
    x_seq = x[torch.as_tensor(order)]  # (U, D) in reading order
    agent = SamplingAgent(x.shape[1], config)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.lr)
    # numpy's BLAS (the reward) on one thread: its idle threads would spin on the cores torch's threads use
    with intra_op_threads(config.threads), threadpool_limits(1, user_api="blas"), retained_heap():
        if config.imitation_steps > 0 and imitate is not None and len(imitate):
            _imitate(agent, x_seq, order, np.asarray(imitate), config.imitation_steps, optimizer)
        history = _reinforce(agent, optimizer, x_seq, order, k, reward, config, float(initial_baseline), progress)
    agent._piece_cache = None  # training's pieces are not kept alive with the agent
    return agent, history


def _imitate(agent: SamplingAgent, x_seq: Tensor, order: np.ndarray, rows: np.ndarray, steps: int,
             optimizer: torch.optim.Optimizer) -> None:
    """`steps` Adam steps on -log p(draw `rows` first), the rows ordered by the agent's current scores."""
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))  # row -> sequence position
    if len(np.unique(rows)) != len(rows) or rows.min() < 0 or rows.max() >= len(order):
        raise ValueError(f"imitate: need distinct rows in [0, {len(order)}), got {len(rows)} rows")
    target = torch.as_tensor(position[rows])  # (m,) sequence positions
    for _ in range(steps):
        scores = agent(x_seq)
        ordered = target[torch.argsort(scores.detach()[target], descending=True, stable=True)]
        loss = -plackett_luce_log_prob(scores, ordered)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def advantage(value: float, baseline: float, previous: list[float], kind: str) -> float:
    """The advantage of a reward `value` (AgentConfig.advantage): value - baseline, that divided by the spread
    of the `previous` rewards, or value's centred rank among them."""
    if kind == "baseline":
        return value - baseline
    if kind == "normalized":
        spread = float(np.std(previous)) if len(previous) >= 2 else 0.0
        return (value - baseline) / spread if spread > 0 else float(np.sign(value - baseline))
    if kind == "rank":
        if not previous:
            return 0.5 * float(np.sign(value - baseline))
        before = np.asarray(previous)
        return float(((before < value).sum() + 0.5 * (before == value).sum()) / len(before) - 0.5)
    raise ValueError(f"unknown advantage {kind!r}")


def _reinforce(agent: SamplingAgent, optimizer: torch.optim.Optimizer, x_seq: Tensor, order: np.ndarray, k: int,
               reward: Callable[[np.ndarray], float], config: AgentConfig, baseline: float,
               progress: Callable[[int, float], None] | None) -> TrainingHistory:
    generator = torch.Generator().manual_seed(stream_seed(config.seed, _SAMPLING_STREAM))
    history = TrainingHistory()
    for iteration in range(config.iterations):
        scores = agent(x_seq)  # (U,) in reading order
        picked = gumbel_top_k(scores, k, generator)  # (k,) sequence positions, in draw order
        rows = order[picked.numpy()]  # (k,) pool rows
        value = float(reward(rows))
        if history.best_reward is None or value > history.best_reward:
            history.best_rows, history.best_reward = rows.copy(), value
        weight = advantage(value, baseline, history.rewards[-config.advantage_window:], config.advantage)
        loss = -weight * plackett_luce_log_prob(scores, picked)
        if config.entropy_weight > 0:
            loss = loss - config.entropy_weight * softmax_entropy(scores)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.rewards.append(value)
        history.baselines.append(baseline)
        baseline = config.baseline_decay * baseline + (1 - config.baseline_decay) * value
        if progress is not None:
            progress(iteration, value)
    return history


def score_pool(agent: SamplingAgent, embeddings: np.ndarray, chunks: int | None = None) -> np.ndarray:
    """(U,) the agent's scores of pool rows embeddings (U, D), read in the agent's sequence order."""
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)  # (U, D)
    order = sequence_order(len(x), agent.config.seed)
    scores = np.empty(len(x), np.float64)
    with intra_op_threads(agent.config.threads), retained_heap():
        scores[order] = agent.score(x[torch.as_tensor(order)], chunks).double().numpy()
    return scores


def select_top_k(agent: SamplingAgent, embeddings: np.ndarray, k: int, chunks: int | None = None) -> np.ndarray:
    """(k,) rows of embeddings (U, D) with the highest agent scores, best first; ties by row."""
    return np.argsort(-score_pool(agent, embeddings, chunks), kind="stable")[:k]


def checkpoint(agent: SamplingAgent, config: AgentConfig | None = None) -> dict:
    """State dict, config and embedding width as plain tensors and numbers (loads with weights_only=True)."""
    return {"state_dict": agent.state_dict(), "config": asdict(config or agent.config), "dim": agent.dim}


def load_checkpoint(data: dict) -> SamplingAgent:
    """The agent saved by `checkpoint` (after torch.load(path, weights_only=True))."""
    agent = SamplingAgent(int(data["dim"]), AgentConfig(**data["config"]))
    agent.load_state_dict(data["state_dict"])
    return agent
