"""Layers that re-weight or re-mix whole fields: multi-head self-attention over fields (AutoInt), squeeze-excitation
field importance (FiBiNET) and the logarithmic transformation of AFN.

Notation: ``B`` batch, ``F`` fields (pooled sparse features), ``D`` embedding dim, ``H`` heads, ``R`` reduced
width of the excitation, ``N`` logarithmic neurons.

Pure torch; DeepCTR-Torch's constructor names without ``seed`` / ``device``.

>>> import torch
>>> e = torch.randn(3, 5, 8)
>>> tuple(InteractingLayer(8, head_num=2)(e).shape), tuple(SENETLayer(5)(e).shape)
((3, 5, 8), (3, 5, 8))
>>> tuple(LogTransformLayer(5, 8, ltl_hidden_size=6)(e).shape)
(3, 48)
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from dist_ctr.layers.core import fusable_batch_norm, update_running_stats

__all__ = ["InteractingLayer", "LogTransformLayer", "SENETLayer"]


def _check_3d(x: torch.Tensor, who: str) -> None:
    if x.dim() != 3:
        raise ValueError(f"{who}: expected inputs of shape (B, F, D), got {tuple(x.shape)}")


class InteractingLayer(nn.Module):
    """AutoInt's interacting layer (Song et al., "AutoInt: Automatic Feature Interaction Learning via
    Self-Attentive Neural Networks", CIKM 2019): multi-head self-attention across fields plus a residual.

    Per head ``h`` (columns ``h*d:(h+1)*d`` of ``e W_Q``, ``e W_K``, ``e W_V`` with ``d = D / H``):
    ``out_h = softmax(Q_h K_h^T [/ sqrt(d)]) V_h``; heads are concatenated, ``e W_Res`` is added when ``use_res``,
    then ReLU.

    Args:
        embedding_size (int): ``D`` (must be a multiple of ``head_num``).
        head_num (int): ``H``.
        use_res (bool): residual projection ``W_Res``.
        scaling (bool): divide scores by ``sqrt(d)``.

    All heads share two batched matmuls: the queries are spread over ``H`` head blocks, ``qb[b, h, i] = q[b, i] *
    mask_h`` (``mask_h`` keeps the ``d`` columns of head ``h``), so ``qb @ k^T`` is every head's score matrix
    ``(B, H * F, F)``; ``att @ v`` masked by head and summed over heads is the concatenation of the heads'
    outputs. Per batch row these are ``(H F, D) x (D, F)`` and ``(H F, F) x (F, D)`` products instead of ``B * H``
    products of ``d``-wide heads, and the output is in ``(B, F, D)`` order with no transposes. The scaling
    multiplies ``q`` ``(B, F, D)``, not the scores.

    Attributes:
        normalized_att_scores (Tensor): ``(B, H, F, F)`` of the last call (detached), computed when read from the
            last call's queries and keys.

    Call: ``forward(inputs: Tensor (B, F, D)) -> Tensor (B, F, D)``.
    """

    def __init__(self, embedding_size: int, head_num: int = 2, use_res: bool = True, scaling: bool = False) -> None:
        super().__init__()
        if head_num <= 0:
            raise ValueError(f"head_num must be an int > 0, got {head_num}")
        if embedding_size % head_num != 0:
            raise ValueError(f"embedding_size {embedding_size} is not a multiple of head_num {head_num}")
        self.head_num = head_num
        self.att_embedding_size = embedding_size // head_num
        self.use_res = use_res
        self.scaling = scaling
        self.W_Query = nn.Parameter(torch.empty(embedding_size, embedding_size))
        self.W_key = nn.Parameter(torch.empty(embedding_size, embedding_size))
        self.W_Value = nn.Parameter(torch.empty(embedding_size, embedding_size))
        self.W_Res = nn.Parameter(torch.empty(embedding_size, embedding_size)) if use_res else None
        for p in self.parameters():
            nn.init.normal_(p, mean=0.0, std=0.05)
        self._last_qk: tuple[torch.Tensor, torch.Tensor] | None = None  # detached (scaled q, k), (B, F, D) each

    def _head_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``(H, 1, D)``: 1 on the ``d`` columns of head ``h``, else 0."""
        eye = torch.eye(self.head_num, dtype=x.dtype, device=x.device)  # (H, H)
        return eye.repeat_interleave(self.att_embedding_size, dim=1).unsqueeze(1)  # (H, 1, D)

    def _scores(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Softmax of every head's ``q_h k_h^T``: ``(B, H * F, F)``, rows ordered head-major."""
        B, Fn, D = q.shape
        qb = (q.unsqueeze(1) * mask).view(B, self.head_num * Fn, D)  # (B, H * F, D), head h keeps its columns
        return F.softmax(qb @ k.transpose(1, 2), dim=-1)  # (B, H * F, F)

    @property
    def normalized_att_scores(self) -> torch.Tensor | None:
        """Attention weights of the last call, ``(B, H, F, F)`` (detached); ``None`` before the first call."""
        if self._last_qk is None:
            return None
        q, k = self._last_qk
        B, Fn, _ = q.shape
        with torch.no_grad():
            return self._scores(q, k, self._head_mask(q)).view(B, self.head_num, Fn, Fn)  # (B, H, F, F)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        _check_3d(inputs, "InteractingLayer")
        B, Fn, D = inputs.shape
        H = self.head_num
        weights = [self.W_Query, self.W_key, self.W_Value] + ([self.W_Res] if self.W_Res is not None else [])
        q, k, v, *res = (inputs @ torch.cat(weights, dim=1)).split(D, dim=2)  # (B, F, D) each
        if self.scaling:
            q = q * self.att_embedding_size**-0.5
        self._last_qk = (q.detach(), k.detach())
        mask = self._head_mask(inputs)  # (H, 1, D)
        att = self._scores(q, k, mask)  # (B, H * F, F)
        out = ((att @ v).view(B, H, Fn, D) * mask).sum(dim=1)  # (B, F, D) heads concatenated in order
        if res:
            out = out + res[0]
        return F.relu(out)


class SENETLayer(nn.Module):
    """FiBiNET's squeeze-excitation over fields (Huang et al., RecSys 2019).

    ``z = mean_d e`` ``(B, F)``; ``a = relu(W_2 relu(W_1 z))``; output ``e * a`` per field.

    Args:
        filed_size (int): ``F`` (DeepCTR-Torch's spelling).
        reduction_ratio (int): ``R = max(1, F // reduction_ratio)``.

    Call: ``forward(inputs: Tensor (B, F, D)) -> Tensor (B, F, D)``.
    """

    def __init__(self, filed_size: int, reduction_ratio: int = 3) -> None:
        super().__init__()
        self.filed_size = filed_size
        self.reduction_size = max(1, filed_size // reduction_ratio)
        self.excitation = nn.Sequential(
            nn.Linear(filed_size, self.reduction_size, bias=False),
            nn.ReLU(),
            nn.Linear(self.reduction_size, filed_size, bias=False),
            nn.ReLU(),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        _check_3d(inputs, "SENETLayer")
        a = self.excitation(inputs.mean(dim=-1))  # (B, F)
        return inputs * a.unsqueeze(2)


class _Scratch:
    """Reusable buffers: temporaries that die inside one forward or backward call (:meth:`get`), and one tensor
    saved from a forward for its backward (:meth:`take` / :meth:`release`).

    Large fresh CPU tensors are costly to first touch (the allocator hands them back to the OS in between); a buffer
    of the same shape, dtype and device is reused from call to call. A taken buffer is not handed out again until it
    is released, so a second forward before the first one's backward gets a fresh tensor; writing into a reused
    buffer bumps its version, so a retained graph that still holds it fails autograd's in-place check instead of
    reading new values.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._taken: set[str] = set()

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[name] = like.new_empty(shape)
        return buf

    def take(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        if name in self._taken:
            return like.new_empty(shape)
        self._taken.add(name)
        return self.get(name, shape, like)

    def release(self, name: str) -> None:
        self._taken.discard(name)


class _ExpBatchNorm(torch.autograd.Function):
    """``BN(exp(x W + b))`` with batch statistics per channel, optionally followed by a linear ``head``, forward
    and backward written out.

    ``x (B C, K)`` holds ``B`` rows of ``C`` channels (row ``b C + c``); ``W (K, N)``, ``b (N,)``; the batch norm
    normalises channel ``c`` over its ``B N`` values (``BatchNorm1d(C)`` on ``(B, C, N)``, training mode) with
    ``gamma, beta (C,)``. Returns ``(out, mean (C,), var (C,))``, ``var`` biased; the statistics carry no
    gradient. ``out`` is the normalised ``(B, C N)``, or with ``head_weight (H, C N)`` and ``head_bias (H,)`` the
    head's ``(B, H)`` output ``normalised @ head_weight^T + head_bias`` (the first layer of the tower that reads
    this layer). ``scratch`` holds the temporaries and, with ``reuse`` (a backward will run), the tensors saved for
    the backward (the ``exp`` output; the normalised output under a head).

    The exponential is taken in place on the GEMM's output, the statistics are two-pass (mean, then the centred
    squares), and the backward reads only the saved ``exp`` output: a handful of passes over the ``(B, C N)``
    tensor instead of the separate ``add``, ``exp``, batch-norm and ``exp``-backward kernels. Under a head, the
    normalised output and its gradient (the head's input gradient) live in reused buffers too, and the gradient's
    per-channel sums come from the head's ``(B, H)`` gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gamma: torch.Tensor,
                beta: torch.Tensor, head_weight: Optional[torch.Tensor], head_bias: Optional[torch.Tensor],
                eps: float, channels: int, scratch: _Scratch,
                reuse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ctx.reuse = reuse
        C, N = channels, weight.shape[1]
        B = x.shape[0] // C
        y = scratch.take("exp", (B * C, N), x) if reuse else x.new_empty(B * C, N)
        y = torch.addmm(bias, x, weight, out=y).exp_().view(B, C * N)  # (B, C N)
        mean = y.sum(0).view(C, N).sum(1) / (B * N)  # (C,)
        if head_weight is None:
            centred = y - mean.repeat_interleave(N)  # (B, C N), becomes the output
        else:
            centred = scratch.take("normed", (B, C * N), y) if reuse else y.new_empty(B, C * N)
            centred = torch.sub(y, mean.repeat_interleave(N), out=centred)  # (B, C N)
        squares = torch.mul(centred, centred, out=scratch.get("squares", (B, C * N), y))
        var = squares.sum(0).view(C, N).sum(1) / (B * N)  # (C,)
        rstd = torch.rsqrt(var + eps)
        normed = torch.addcmul(beta.repeat_interleave(N), centred, (gamma * rstd).repeat_interleave(N),
                               out=centred)  # (B, C N)
        if head_weight is None:
            out = normed
            ctx.save_for_backward(x, weight, y, mean, rstd, gamma)
        else:
            out = normed @ head_weight.t()  # (B, H)
            out = out if head_bias is None else out.add_(head_bias)
            ctx.save_for_backward(x, weight, y, mean, rstd, gamma, head_weight, normed)
        ctx.head = head_weight is not None
        ctx.scratch = scratch
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _grad_mean: Any, _grad_var: Any) -> tuple[Optional[torch.Tensor], ...]:
        x, weight, y, mean, rstd, gamma = ctx.saved_tensors[:6]
        scratch: _Scratch = ctx.scratch
        C, N = gamma.shape[0], weight.shape[1]
        M = y.shape[0] * N  # values per channel
        g_head_w = g_head_b = None
        if ctx.head:
            head_weight, normed = ctx.saved_tensors[6:]
            grad_sum = grad.sum(0)  # (H,)
            g_head_w = grad.t() @ normed if ctx.needs_input_grad[5] else None  # (H, C N)
            g_head_b = grad_sum if ctx.needs_input_grad[6] else None
            sum_g = (grad_sum @ head_weight).view(C, N).sum(1)  # (C,) = d beta
            grad = torch.mm(grad, head_weight, out=scratch.get("grad_normed", tuple(y.shape), y))  # (B, C N)
        else:
            sum_g = grad.sum(0).view(C, N).sum(1)  # (C,) = d beta
        gy = torch.mul(grad, y, out=scratch.get("grad_y", tuple(y.shape), y))  # (B, C N)
        d_gamma = rstd * (gy.sum(0).view(C, N).sum(1) - mean * sum_g)  # (C,) = sum grad * xhat
        scale = gamma * rstd
        # d out / d y = scale grad + k1 y + k0 per channel; d y / d z = y
        k1 = -scale * rstd * d_gamma / M
        k0 = -scale * sum_g / M - mean * k1
        dz = scratch.get("grad_z", tuple(y.shape), y)
        dz = torch.addcmul(k0.repeat_interleave(N), y, k1.repeat_interleave(N), out=dz)
        dz = dz.mul_(y).addcmul_(gy, scale.repeat_interleave(N)).view(-1, N)  # (B C, N)
        gx = dz @ weight.t() if ctx.needs_input_grad[0] else None
        gw = x.t() @ dz if ctx.needs_input_grad[1] else None
        gb = dz.sum(0) if ctx.needs_input_grad[2] else None
        if ctx.reuse:
            scratch.release("exp")
            scratch.release("normed")
        return gx, gw, gb, d_gamma, sum_g, g_head_w, g_head_b, None, None, None, None


class LogTransformLayer(nn.Module):
    """AFN's logarithmic transformation layer (Cheng et al., "Adaptive Factorization Network: Learning
    Adaptive-Order Feature Interactions", AAAI 2020): neuron ``n`` computes ``prod_f |e_f| ** w_fn`` per dim.

    ``y = BN_2(exp(BN_1(log max(|e|, 1e-7))^T W + b))`` with ``W (F, N)``, batch norms over the ``D`` channels.
    In training mode (batch statistics of this process) ``BN_2(exp(. W + b))`` runs as one fused autograd function;
    it updates ``bn[1]``'s running statistics as ``BatchNorm1d`` does. A ``bn[1]`` whose statistics span processes
    (the engine's global batch norm at world size > 1) runs its own forward.

    Args:
        field_size (int): ``F``.
        embedding_size (int): ``D``.
        ltl_hidden_size (int): ``N``.

    ``head``, the first ``Linear`` of the tower that reads the layer, joins the fused function: its ``(B, D N)``
    input and that input's gradient then live in buffers reused between steps, so a step allocates neither.

    Call: ``forward(inputs: Tensor (B, F, D), head: Linear (D N -> H) | None = None) -> Tensor (B, D * N)``, or
    ``head``'s output ``Tensor (B, H)``.
    """

    def __init__(self, field_size: int, embedding_size: int, ltl_hidden_size: int) -> None:
        super().__init__()
        self.ltl_weights = nn.Parameter(torch.empty(field_size, ltl_hidden_size))
        self.ltl_biases = nn.Parameter(torch.zeros(1, 1, ltl_hidden_size))
        self.bn = nn.ModuleList([nn.BatchNorm1d(embedding_size) for _ in range(2)])
        nn.init.normal_(self.ltl_weights, mean=0.0, std=0.1)
        self._scratch = _Scratch()

    def forward(self, inputs: torch.Tensor, head: Optional[nn.Linear] = None) -> torch.Tensor:
        _check_3d(inputs, "LogTransformLayer")
        B, Fn, D = inputs.shape
        x = torch.log(torch.clamp(inputs.abs(), min=1e-7))  # (B, F, D)
        # channels last: the same per-channel statistics over B F values as on (B, D, F), a contiguous batch norm
        y = self.bn[0](x.reshape(B * Fn, D)).view(B, Fn, D).transpose(1, 2)  # (B, D, F)
        bn = self.bn[1]
        if not fusable_batch_norm(bn) or y.shape[0] * self.ltl_weights.shape[1] < 2:
            y = torch.exp(y @ self.ltl_weights + self.ltl_biases)  # (B, D, N)
            out = bn(y).flatten(start_dim=1)  # (B, D * N)
            return out if head is None else head(out)  # (B, D * N) or (B, H)
        params = [*self.parameters(), *(head.parameters() if head is not None else ())]
        # the saved buffers are reused only when a backward will release them
        reuse = torch.is_grad_enabled() and (y.requires_grad or any(p.requires_grad for p in params))
        out, mean, var = _ExpBatchNorm.apply(
            y.reshape(B * D, -1), self.ltl_weights, self.ltl_biases.view(-1), bn.weight, bn.bias,
            None if head is None else head.weight, None if head is None else head.bias, bn.eps, D, self._scratch,
            reuse)
        update_running_stats(bn, mean, var, B * self.ltl_weights.shape[1])
        return out  # (B, D * N) or (B, H)
