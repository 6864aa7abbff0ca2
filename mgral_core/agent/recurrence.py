"""The hand-written LSTM score recurrence: fused step loops, their manual backward and the `ScoreRecurrence` autograd function."""

from __future__ import annotations

import torch
from torch import Tensor

_BACKWARD_BLOCK = 1 << 13  # pool rows whose ReLU masks are materialised at once in the backward


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
