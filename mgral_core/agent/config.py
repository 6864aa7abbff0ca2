"""The agent's settings: `AgentConfig` and the large-pool switch `config_for_pool`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mgral_core.agent.runtime import bfloat16_matmul_is_fast

LARGE_POOL_PIECE_STEPS = 128  # steps per piece on the large-pool path (`config_for_pool`)
PRECISIONS = ("float32", "bfloat16")
ADVANTAGES = ("baseline", "normalized", "rank")


@dataclass(frozen=True)
class AgentConfig:
    """Settings of one cycle's agent.

    Attributes:
        iterations: policy-gradient steps (paper: 2,200 for VOC, 800 for COCO).
        lr: Adam learning rate (the paper's value is not legible in our copy; 1e-3 is Adam's default).
        baseline_decay: momentum beta of the moving-average baseline mAP_ref (paper eq. 3: 0.5).
        decoder_hidden: width M of the decoder MLP's hidden layer.
        chunks: 1 runs the pool as one sequence, as in the paper. B > 1 cuts the sequence into B
            contiguous pieces run side by side (each piece starts from a zero state and a zero
            previous score): much faster on large pools, but images at piece starts lose their context.
        entropy_weight: weight of an entropy bonus on softmax(scores); 0 (off) by default.
        precision: "float32" (default) or "bfloat16": the operands of the large matrix products (input
            projection, recurrent step, weight gradients) are rounded to bfloat16; products accumulate in
            float32 inside the kernel and everything else (state, activations, element-wise maths, the
            loss) stays in the parameters' dtype. About 4x faster products on CPUs with AVX512-BF16 or
            AMX; scores differ from float32 by a few thousandths of their spread, so near-tied selections
            can differ (tests/core/test_agent_scale_paths.py).
        advantage: what multiplies the log-probability of a sampled batch. "baseline" (the paper, default):
            R - mAP_ref. "normalized": that difference divided by the standard deviation of the previous
            `advantage_window` rewards (its sign alone while fewer than two are known or they are all equal).
            "rank": the share of the previous `advantage_window` rewards that R beats (ties count half),
            minus 0.5, so in [-0.5, 0.5] (its sign times 0.5 on the first iteration). Both alternatives
            ignore the rewards' scale, which the estimated rewards' tiny spread (about 0.001) makes matter
            for a fixed learning rate; "rank" also ignores any monotone change of the reward.
        advantage_window: previous rewards "normalized" and "rank" compare with (>= 2).
        imitation_steps: Adam steps, before REINFORCE, that raise the Plackett-Luce log-probability of
            the batch handed to `train_agent` as `imitate` (e.g. the lookup table's best record; ALIL,
            Liu et al. 2018, starts its policy by imitation too). 0 (off) by default.
        seed: seeds parameter initialisation, the sequence order and batch sampling (separate streams).
        threads: torch intra-op threads while the agent trains and scores (restored afterwards). 1 by
            default: the step loop issues many small ops, and a second thread made it over 30x slower
            whenever the other core was busy; on an otherwise idle machine 2 threads make a large-pool
            iteration 1.5-2x faster (docs/PERFORMANCE.md). Numerics can differ in the last bits across counts.
    """

    iterations: int = 200
    lr: float = 1e-3
    baseline_decay: float = 0.5
    decoder_hidden: int = 64
    chunks: int = 1
    entropy_weight: float = 0.0
    precision: str = "float32"
    advantage: str = "baseline"
    advantage_window: int = 20
    imitation_steps: int = 0
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        checks = {"iterations": self.iterations >= 0, "lr": self.lr > 0,
                  "baseline_decay": 0 <= self.baseline_decay <= 1,
                  "decoder_hidden": self.decoder_hidden >= 1, "chunks": self.chunks >= 1,
                  "entropy_weight": self.entropy_weight >= 0, "precision": self.precision in PRECISIONS,
                  "advantage": self.advantage in ADVANTAGES, "advantage_window": self.advantage_window >= 2,
                  "imitation_steps": self.imitation_steps >= 0,
                  "seed": self.seed >= 0, "threads": self.threads >= 1}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid agent config value(s) {bad}: {self}")

def config_for_pool(config: AgentConfig, pool_size: int, large_pool: int) -> AgentConfig:
    """The config to train and score a pool of `pool_size` rows with: `config` on one thread up to `large_pool` rows.

    Above it (large_pool > 0), the sequence is cut into pieces of at most LARGE_POOL_PIECE_STEPS steps
    (chunks = ceil(pool_size / LARGE_POOL_PIECE_STEPS), or the configured chunks if larger) and, on a CPU
    with native bfloat16 products, precision becomes "bfloat16". Both change the scores (see
    AgentConfig); docs/PERFORMANCE.md gives the speed at each scale. config.threads is used there
    only: below it the steps are products of a handful of rows, too small to share between cores.
    large_pool = 0 never switches (and then config is returned as it is).
    """
    if large_pool <= 0:
        return config
    if pool_size <= large_pool:
        return replace(config, threads=1)
    chunks = max(config.chunks, -(-pool_size // LARGE_POOL_PIECE_STEPS))
    precision = "bfloat16" if bfloat16_matmul_is_fast() else config.precision
    return replace(config, chunks=chunks, precision=precision)
