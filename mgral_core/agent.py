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
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

_INIT_STREAM, _ORDER_STREAM, _SAMPLING_STREAM = 0, 1, 2
_INFERENCE_BLOCK = 1 << 16  # pool rows (steps x pieces) whose input projection is materialised at once when scoring
_BACKWARD_BLOCK = 1 << 13  # pool rows whose ReLU masks are materialised at once in the backward
LARGE_POOL_PIECE_STEPS = 128  # steps per piece on the large-pool path (`config_for_pool`)
PRECISIONS = ("float32", "bfloat16")


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
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        checks = {"iterations": self.iterations >= 0, "lr": self.lr > 0,
                  "baseline_decay": 0 <= self.baseline_decay <= 1,
                  "decoder_hidden": self.decoder_hidden >= 1, "chunks": self.chunks >= 1,
                  "entropy_weight": self.entropy_weight >= 0, "precision": self.precision in PRECISIONS,
                  "seed": self.seed >= 0, "threads": self.threads >= 1}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid agent config value(s) {bad}: {self}")


def bfloat16_matmul_is_fast() -> bool:
    """True when this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX); elsewhere torch
    emulates them, slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


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


@contextmanager
def intra_op_threads(n: int = 1) -> Iterator[None]:
    """Run torch on `n` intra-op threads, then restore the previous count.

    The step loops issue tens of thousands of small ops; on this 2-core machine a second intra-op
    thread made them over 30x slower whenever the other core was busy (OpenMP workers spin-wait for
    each other), and about 1.5-2x faster on large pools when it was idle.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int) -> int:
    """params.yaml agent.threads -> torch intra-op threads for the agent: 0 means one per available core."""
    if threads < 0:
        raise ValueError(f"agent threads must be >= 0 (0 = one per core), got {threads}")
    return threads or available_cores()


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}
_heap_lock = threading.Lock()
_heap_users = 0


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextmanager
def retained_heap() -> Iterator[None]:
    """Let freed memory be reused inside the process while the agent runs, then hand it back.

    Every training iteration allocates and frees the same large arrays (tens to hundreds of MB).
    glibc serves such blocks with fresh mmap pages, so each iteration page-faults over all of them
    again (about a fifth of an iteration at VOC scale). Inside this context glibc neither mmaps nor
    trims, so freed blocks are reused; on exit its defaults are restored and malloc_trim returns the
    memory. Numerics are untouched. A no-op without glibc; helps the main thread's heap only (other
    threads' large blocks are still mmapped). Re-entrant and thread-safe.
    """
    global _heap_users
    libc = _glibc()
    if libc is None:
        yield
        return
    with _heap_lock:
        _heap_users += 1
        if _heap_users == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        with _heap_lock:
            _heap_users -= 1
            if _heap_users == 0:
                for parameter, value in _GLIBC_DEFAULTS.items():
                    libc.mallopt(parameter, value)
                libc.malloc_trim(0)


def stream_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for one random stream (init, order, sampling) derived from the config seed."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def sequence_order(n: int, seed: int) -> np.ndarray:
    """(n,) the order in which the agent reads n pool rows: a permutation fixed by `seed`."""
    return np.random.default_rng(stream_seed(seed, _ORDER_STREAM)).permutation(n)


def _gate_matrix(w_hh: Tensor, w_s: Tensor, w2: Tensor) -> Tensor:
    """(H + M, 4H): the previous state [h, relu(z)] -> gates. The previous score is w2 . relu(z) + b2, so
    its gate weight w_s enters as outer(w2, w_s) (its bias part is folded into the projection's bias)."""
    return torch.cat([w_hh.t(), torch.outer(w2, w_s)])


def _double_g(x: Tensor, axis: int) -> Tensor:
    """A copy of x with the cell-candidate block g (the third quarter of the gate axis) doubled.

    The step computes g = tanh(a_g) as 2 sigmoid(2 a_g) - 1 inside the one sigmoid over all gates, so
    the forward weights, biases and projections carry the factor 2 (exact in binary floating point:
    the doubled products and sums are bit-for-bit twice the plain ones). Gradients are taken with
    respect to the plain parameters.
    """
    h = x.shape[axis] // 4
    y = x.clone()
    y.narrow(axis, 2 * h, h).mul_(2)
    return y


def _lstm_step(px_t: Tensor, u_prev: Tensor, c_prev: Tensor, w_big: Tensor, w1_t: Tensor, b1: Tensor,
               act: Tensor, c_out: Tensor, u_out: Tensor, fac: Tensor | None = None, tmp: Tensor | None = None,
               u_prev_low: Tensor | None = None) -> None:
    """One step of the score recurrence, written into c_out (B, H) and u_out (B, H + M); act (B, 4H) is scratch.

    px_t (B, 4H) is the step's input projection with the previous score's bias folded in; w_big
    (H + M, 4H) maps the previous state u = [h, relu(z)] to the gates (the previous score is
    w2 . relu(z) + b2, so its gate weight w_s is folded into w_big as outer(w2, w_s)); both have the g
    block doubled (`_double_g`). When w_big is in a lower precision than the state, px_t is in it too,
    u_prev is rounded to it for the product only, and the gate pre-activations are that product plus
    px_t, rounded once to the lower precision; the gates and everything after them are computed in
    the state's precision. With `fac` (B, 6H) and a contiguous scratch `tmp` (2, B, H), the step also
    writes the factors its backward needs (`_recurrence_backward`), computed here while the gates are
    in cache; `u_prev_low`, if given, receives u_prev rounded to the products' precision.
    """
    h = c_prev.shape[1]
    low = w_big.dtype != u_prev.dtype
    lhs = (u_prev.to(w_big.dtype) if u_prev_low is None else u_prev_low.copy_(u_prev)) if low else u_prev
    a = torch.addmm(px_t, lhs, w_big)  # (B, 4H): i, f, 2 g, o
    torch.sigmoid(act.copy_(a) if low else a, out=act)  # (a copy first: sigmoid is slower across dtypes)
    i, f, g, o = act[:, :h], act[:, h:2 * h], act[:, 2 * h:3 * h], act[:, 3 * h:]
    g.mul_(2).sub_(1)  # g = tanh(a_g) = 2 sigmoid(2 a_g) - 1
    hidden, relu_z = u_out[:, :h], u_out[:, h:]
    if fac is None:
        torch.mul(i, g, out=c_out)
        c_out.addcmul_(f, c_prev)  # c_t = f * c_{t-1} + i * g
        torch.tanh(c_out, out=hidden).mul_(o)  # h_t = o * tanh(c_t)
    else:
        ig, tanh_c = tmp.unbind(0)  # contiguous scratch: a strided out= is several times slower
        torch.addcmul(torch.mul(i, g, out=ig), f, c_prev, out=c_out)  # c_t = f * c_{t-1} + i * g
        torch.tanh(c_out, out=tanh_c)
        torch.mul(tanh_c, o, out=hidden)  # h_t = o * tanh(c_t)
        _backward_factors(act, c_prev, ig, tanh_c, hidden, fac)
    torch.addmm(b1, hidden, w1_t, out=relu_z).relu_()  # (B, M) decoder hidden layer


def _backward_factors(act: Tensor, c_prev: Tensor, ig: Tensor, tanh_c: Tensor, hidden: Tensor, fac: Tensor) -> None:
    """The factors of a backward step that do not depend on the incoming gradient, into fac (B, 6H).

    act (B, 4H) holds the step's gates i, f, g, o (g already tanh(a_g)); ig = i g, tanh_c = tanh(c_t)
    and hidden = o tanh(c_t) as the step computed them.
    fac = [g i (1 - i), c_prev f (1 - f), i (1 - g^2) | tanh(c) o (1 - o) | o (1 - tanh(c)^2) | f]:
    dc -> (da_i, da_f, da_g); dh -> da_o; dh -> dc; dc_t -> dc_{t-1}.
    """
    h = c_prev.shape[1]
    i, f, g, o = act.split(h, dim=1)
    d_i, d_f, d_g, d_o, h_to_c, f_copy = fac.split(h, dim=1)
    i_f, d_if = act[:, :2 * h], fac[:, :2 * h]  # [i, f] and their two factor blocks side by side
    torch.mul(i_f, i_f, out=d_if)
    torch.sub(i_f, d_if, out=d_if)  # [i (1 - i), f (1 - f)]
    d_i.mul_(g)  # g i (1 - i)
    d_f.mul_(c_prev)  # c_prev f (1 - f)
    torch.sub(i, torch.mul(ig, g, out=d_g), out=d_g)  # i - i g^2
    torch.sub(hidden, torch.mul(hidden, o, out=d_o), out=d_o)  # o tanh(c) - o tanh(c) o
    torch.sub(o, torch.mul(hidden, tanh_c, out=h_to_c), out=h_to_c)  # o - o tanh(c)^2
    f_copy.copy_(f)


def _recurrence_forward(px: Tensor, w_big: Tensor, w1_t: Tensor, b1: Tensor, first_offset: Tensor,
                        u: Tensor, fac: Tensor, u_low: Tensor | None = None) -> None:
    """Step loop from a zero state, writing what the backward pass needs; no autograd.

    first_offset (4H,) is added to the first step's px (in place) only (see
    `SamplingAgent._projection_weights`); w_big, px and first_offset have the g block doubled. Writes
    u (T + 1, B, H + M) with u[0] = 0 and the backward factors fac (T, B, 6H) (`_backward_factors`),
    and, if given, u_low (T, B, H + M): u[:-1] in w_big's lower precision, as the products read it.
    """
    steps, b, four_h = px.shape
    h = four_h // 4
    u[0].zero_()
    c = u.new_zeros(2, b, h)  # rolling cell state
    act, tmp = u.new_empty(b, four_h), u.new_empty(2, b, h)
    px[0].add_(first_offset)
    px_t, u_t, c_t, fac_t = px.unbind(0), u.unbind(0), c.unbind(0), fac.unbind(0)  # per-step views
    low_t = u_low.unbind(0) if u_low is not None else [None] * steps
    for t in range(steps):
        _lstm_step(px_t[t], u_t[t], c_t[t % 2], w_big, w1_t, b1, act, c_t[(t + 1) % 2], u_t[t + 1], fac_t[t], tmp,
                   low_t[t])


def _recurrence_scan(px: Tensor, w_big: Tensor, w1_t: Tensor, b1: Tensor, u0: Tensor, c0: Tensor,
                     first_offset: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Step loop from state (u0, c0) keeping only the outputs: relu(z) (T, B, M) and the final (u, c).

    first_offset, if given, is added to the first step's px as in `_recurrence_forward`.
    """
    steps, b, four_h = px.shape
    h = four_h // 4
    u = torch.stack([u0, u0])  # (2, B, H + M) rolling
    c = torch.stack([c0, c0])  # (2, B, H) rolling
    act = u0.new_empty(b, four_h)
    out = u0.new_empty(steps, b, u0.shape[1] - h)
    if first_offset is not None:
        px[0].add_(first_offset)
    px_t, out_t, u_t, c_t = px.unbind(0), out.unbind(0), u.unbind(0), c.unbind(0)
    for t in range(steps):
        cur, nxt = t % 2, (t + 1) % 2
        _lstm_step(px_t[t], u_t[cur], c_t[cur], w_big, w1_t, b1, act, c_t[nxt], u_t[nxt])
        out_t[t].copy_(u_t[nxt][:, h:])
    return out, u[steps % 2].clone(), c[steps % 2].clone()


def _recurrence_backward(g_r: Tensor, w_big: Tensor, w1: Tensor, u: Tensor, fac: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """Backward step loop: gradients of the gate pre-activations (T, B, 4H), of the decoder pre-activations
    (T, B, M), and the sum of the former over steps and rows (4H,) (the gradient of the gates' bias).

    g_r (T, B, M) is the loss gradient with respect to each step's relu(z) through the outputs only;
    the recurrent paths (through h, c and the previous score) are added here, with the factors the
    forward stored in fac (T, B, 6H). The decoder's ReLU masks are made for about _BACKWARD_BLOCK
    pool rows at a time. A w_big in a lower precision than fac makes the per-step product
    d_a x w_big^T run in that precision, and d_a is then stored (and returned) in that precision,
    each step's products computed in fac's and rounded once as they are stored.
    """
    steps, b, six_h = fac.shape
    h, m = six_h // 6, w1.shape[0]
    low = w_big.dtype if w_big.dtype != fac.dtype else None
    d_a = fac.new_empty(steps, b, 4 * h, dtype=low or fac.dtype)
    d_z = fac.new_empty(steps, b, m)
    d_u = fac.new_zeros(b, h + m)  # gradient reaching u_t from step t + 1
    d_c = fac.new_zeros(b, h)  # gradient reaching c_t from step t + 1
    d_bias = fac.new_zeros(4 * h)  # sum of d_a over steps and rows, accumulated while each step is in cache
    w_big_t = w_big.t()
    d_a_t, d_z_t, g_r_t = d_a.unbind(0), d_z.unbind(0), g_r.unbind(0)
    d_igf_t = [x[:, :3 * h].unflatten(1, (3, h)) for x in d_a_t]  # products in fac's dtype, stored in d_a's
    d_o_t = [x[:, 3 * h:] for x in d_a_t]
    to_igf = fac[:, :, :3 * h].unflatten(2, (3, h)).unbind(0)  # (B, 3, H) per step
    to_o, h_to_c, f_t = (fac[:, :, k * h:(k + 1) * h].unbind(0) for k in (3, 4, 5))
    block = max(1, _BACKWARD_BLOCK // b)  # steps per block
    for stop in range(steps, 0, -block):
        first = max(0, stop - block)
        relu_open = (u[first + 1:stop + 1, :, h:] > 0).to(fac.dtype).unbind(0)  # (n, B, M)
        for t in range(stop - 1, first - 1, -1):
            dz = torch.add(g_r_t[t], d_u[:, h:], out=d_z_t[t]).mul_(relu_open[t - first])  # (B, M)
            dh = torch.addmm(d_u[:, :h], dz, w1)  # (B, H)
            dc = torch.addcmul(d_c, dh, h_to_c[t])  # (B, H)
            torch.mul(dh, to_o[t], out=d_o_t[t])
            torch.mul(dc.unsqueeze(1), to_igf[t], out=d_igf_t[t])
            d_c = dc.mul_(f_t[t])  # to c_{t-1}
            d_bias.add_(d_a_t[t].sum(0))
            d_u = torch.mm(d_a_t[t], w_big_t)  # (B, H + M)
            if low is not None:
                d_u = d_u.to(fac.dtype)
    return d_a, d_z, d_bias


def _project(seq: Tensor, w_emb: Tensor, bias: Tensor, low: torch.dtype | None) -> Tensor:
    """(T, B, 4H) = seq (T, B, D) x w_emb^T + bias in one addmm, with operands (and result) in `low` when given."""
    steps, b, dim = seq.shape
    if low is not None:
        seq, w_emb, bias = seq.to(low), w_emb.to(low), bias.to(low)
    return torch.addmm(bias, seq.reshape(steps * b, dim), w_emb.t()).view(steps, b, -1)


class ScoreRecurrence(torch.autograd.Function):
    """relu(z_t) (T, B, M) of every step from the pieces seq (T, B, D) and the agent's weights, with a manual BPTT.

    The input projection seq x w_emb^T + bias is done here too (one addmm), and its weight gradient
    with the recurrent ones. first_offset (4H,) is added to the first step's projection only (a piece's
    first image has no previous score). `low` (a dtype or None) is the precision of the large products
    and of the gradients flowing through them (seq should then be in it already); None keeps the
    parameters' dtype throughout.
    """

    @staticmethod
    def forward(ctx, seq: Tensor, w_emb: Tensor, bias: Tensor, first_offset: Tensor, w_hh: Tensor, w_s: Tensor,
                w1: Tensor, b1: Tensor, w2: Tensor, low: torch.dtype | None = None) -> Tensor:
        steps, b, _ = seq.shape
        h, m = w_hh.shape[1], w1.shape[0]
        w_big = _gate_matrix(w_hh, w_s, w2)  # (H + M, 4H)
        w_step = w_big if low is None else w_big.to(low)  # the backward's
        w_fwd = _double_g(w_big, 1) if low is None else _double_g(w_big, 1).to(low)
        px = _project(seq, _double_g(w_emb, 0), _double_g(bias, 0), low)  # (T, B, 4H)
        u = w1.new_empty(steps + 1, b, h + m)  # state in the parameters' dtype
        fac = w1.new_empty(steps, b, 6 * h)  # backward factors
        u_low = None if low is None else u.new_empty(steps, b, h + m, dtype=low)  # u[:-1] as the products read it
        _recurrence_forward(px, w_fwd, w1.t().contiguous(), b1, _double_g(first_offset, 0), u, fac, u_low)
        ctx.save_for_backward(seq, w_s, w1, w2, w_step, u, fac, u_low)
        return u[1:, :, h:].clone()

    @staticmethod
    def backward(ctx, g_r: Tensor):
        seq, w_s, w1, w2, w_step, u, fac, u_low = ctx.saved_tensors
        steps, b, dim = seq.shape
        h, m, rows = w_s.shape[0] // 4, w1.shape[0], steps * b
        d_a, d_z, d_bias = _recurrence_backward(g_r.contiguous(), w_step, w1, u, fac)  # d_a in w_step's dtype
        d_a2, d_z2 = d_a.view(rows, 4 * h), d_z.view(rows, m)
        u_prev = (u[:-1] if u_low is None else u_low).reshape(rows, h + m)  # (T B, H + M) in w_step's dtype
        d_big = (d_a2.t() @ u_prev).t().to(fac.dtype)  # (H + M, 4H)
        d_emb = (d_a2.t() @ seq.reshape(rows, dim).to(w_step.dtype)).to(fac.dtype)  # (4H, D)
        d_w1 = d_z2.t() @ u[1:].view(rows, h + m)[:, :h]  # (M, H), from a strided view (no copy)
        d_outer = d_big[h:]  # (M, 4H): gradient of outer(w2, w_s)
        return (None, d_emb, d_bias, d_a[0].sum(0).to(fac.dtype), d_big[:h].t(),
                d_outer.t() @ w2, d_w1, d_z2.sum(0), d_outer @ w_s, None)


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
    """Per-iteration reward R_i and the baseline mAP_ref it was compared with."""

    rewards: list[float] = field(default_factory=list)
    baselines: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[float]]:
        return {"rewards": list(self.rewards), "baselines": list(self.baselines)}


def train_agent(embeddings: np.ndarray, k: int, reward: Callable[[np.ndarray], float], config: AgentConfig,
                initial_baseline: float, progress: Callable[[int, float], None] | None = None
                ) -> tuple[SamplingAgent, TrainingHistory]:
    """Train a fresh agent by REINFORCE on one pool.

    Each iteration scores the pool, samples an ordered batch of k rows (Gumbel-top-k), gets
    R = reward(rows), and steps Adam on -(R - mAP_ref) * log p(batch) - entropy_weight * H; then
    mAP_ref <- beta * mAP_ref + (1 - beta) * R (paper eq. 3-4; the advantage uses the baseline from
    before this iteration's reward, which keeps the gradient estimate unbiased).

    Args:
        embeddings: (U, D) pool embeddings; the agent reads them in `sequence_order(U, config.seed)`.
        k: batch size (the cycle budget), 1 <= k <= U.
        reward: rows (k,) of `embeddings` -> the estimated value of L ∪ batch. Row positions refer to
            this array only; map them to image ids before they leave the caller.
        config: see AgentConfig; its seed fixes everything random here.
        initial_baseline: mAP_ref before the first iteration (e.g. the random-batch reference value).
        progress: called with (iteration, reward) after each iteration.
    """
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)  # (U, D)
    if x.ndim != 2 or not 1 <= k <= len(x):
        raise ValueError(f"need embeddings (U, D) and 1 <= k <= U, got shape {tuple(x.shape)} and k={k}")
    order = sequence_order(len(x), config.seed)  # (U,) sequence position -> row
    x_seq = x[torch.as_tensor(order)]  # (U, D) in reading order
    agent = SamplingAgent(x.shape[1], config)
    # numpy's BLAS (the reward) on one thread: its idle threads would spin on the cores torch's threads use
    with intra_op_threads(config.threads), threadpool_limits(1, user_api="blas"), retained_heap():
        history = _reinforce(agent, x_seq, order, k, reward, config, float(initial_baseline), progress)
    agent._piece_cache = None  # training's pieces are not kept alive with the agent
    return agent, history


def _reinforce(agent: SamplingAgent, x_seq: Tensor, order: np.ndarray, k: int, reward: Callable[[np.ndarray], float],
               config: AgentConfig, baseline: float, progress: Callable[[int, float], None] | None) -> TrainingHistory:
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(stream_seed(config.seed, _SAMPLING_STREAM))
    history = TrainingHistory()
    for iteration in range(config.iterations):
        scores = agent(x_seq)  # (U,) in reading order
        picked = gumbel_top_k(scores, k, generator)  # (k,) sequence positions, in draw order
        value = float(reward(order[picked.numpy()]))
        loss = -(value - baseline) * plackett_luce_log_prob(scores, picked)
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
