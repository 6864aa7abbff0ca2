"""The MGRAL sampling agent (paper III-C, III-E): an LSTM that scores every pool image, trained by policy gradient.

Step t of the sequence sees [embedding_t, score_{t-1}] (D + 1 wide); an LSTM cell of hidden size
D + 1, shared by all steps, and a 2-layer MLP decoder give score_t. The images are fed in a fixed
order: the pool's rows after one seeded shuffle per cycle. Training samples a batch of k images
without replacement from the Plackett-Luce distribution of the scores (Gumbel-top-k), and
differentiates the exact log-probability of that ordered sample (REINFORCE with the moving-average
baseline mAP_ref of paper eq. 3-4). Selection takes the top-k scores.

The recurrence runs in a hand-written step loop with a hand-written backward pass (`ScoreRecurrence`):
the embedding half of the input projection is one matrix product over the whole pool, each step
does one fused (B, D + 1 + M) x (D + 1 + M, 4 (D + 1)) product, and the forward step also stores the
factors of its backward step while the gates are in cache. `SamplingAgent.forward_reference`
is the straightforward `nn.LSTMCell` loop with autograd; tests check the two agree. For large pools,
`config_for_pool` switches to pieces of `LARGE_POOL_PIECE_STEPS` steps and bfloat16 matrix products
(docs/PERFORMANCE.md); tests check how far that path is from the float32 one.

Files: config (settings), runtime (threads, heap), recurrence (step loops, backward), policy (agent, training).
"""

from mgral_core.agent.config import LARGE_POOL_PIECE_STEPS, PRECISIONS, AgentConfig, config_for_pool
from mgral_core.agent.policy import (
    SamplingAgent,
    TrainingHistory,
    checkpoint,
    gumbel_top_k,
    load_checkpoint,
    plackett_luce_log_prob,
    score_pool,
    select_top_k,
    sequence_order,
    softmax_entropy,
    stream_seed,
    train_agent,
)
from mgral_core.agent.recurrence import ScoreRecurrence
from mgral_core.agent.runtime import (
    available_cores,
    bfloat16_matmul_is_fast,
    intra_op_threads,
    resolve_threads,
    retained_heap,
)

__all__ = [
    "LARGE_POOL_PIECE_STEPS",
    "PRECISIONS",
    "AgentConfig",
    "SamplingAgent",
    "ScoreRecurrence",
    "TrainingHistory",
    "available_cores",
    "bfloat16_matmul_is_fast",
    "checkpoint",
    "config_for_pool",
    "gumbel_top_k",
    "intra_op_threads",
    "load_checkpoint",
    "plackett_luce_log_prob",
    "resolve_threads",
    "retained_heap",
    "score_pool",
    "select_top_k",
    "sequence_order",
    "softmax_entropy",
    "stream_seed",
    "train_agent",
]
