"""The fused training step: rollfit's MLP loss and its exact gradient in one pass, no autograd.

Most runs are tiny networks on a few hundred rows, where a step costs its number of kernels,
not its arithmetic. This module writes the loss

    L = w_r * recon(y, t) + w_1 * L1 + w_2 * L2 + w_g * mean_b sum_j clamp(g_bj, +-1e3)^2,
    g = d (sum_k y_k) / d x        (x: the normalized input, or the raw one with grad_space: raw)

and its gradient with respect to every weight as explicit tensor operations on one flat
parameter buffer: ~80 small kernels instead of autograd's double backward (~250), with no
host synchronization and no data-dependent shapes, so the same code runs eagerly, compiled
or inside one CUDA graph (docs/design.md, The training step).

Notation (``h_{-1} = (x - mean) / std``; block i: ``z_i = h_{i-1} W_i^T + b_i``, ``a_i =
act(z_i)`` or ``z_i``, ``h_i = a_i + skip_i(h_{i-1})``; ``y = h W_o^T + b_o``). The input
gradient is one reverse sweep seeded with ones (the penalty sums the outputs): ``u = 1 W_o``,
``v_i = u_i * act'(z_i)``, ``u_{i-1} = v_i W_i + skip_i^T(u_i)``, ``g = u_{-1}`` (``/ std``
for raw inputs); its cost does not grow with the number of inputs. The penalty's gradient
runs that sweep backwards (adjoints ``ubar``, using act'') and feeds ``zbar_gp = vbar * u *
act''(z)`` into the ordinary backward pass (adjoints ``hbar``, ``zbar``). L1 is ``sum_i
|w_i| / n(tensor of i)``: the sum over tensors of mean |w|.

The parameters are re-pointed into views of ``FlatParams.flat`` (their ``.grad`` into
``FlatParams.grad``), so the model, its ``state_dict``, checkpoints and the optimizer work
unchanged. Tests check every gradient against autograd and finite differences.

Rank-polymorphic: the same code trains an ``EnsembleNet`` (``model/ensemble.py``), whose
weights carry a leading member dimension K (``W (K, out, in)``, activations ``(K, B, w)``):
matrix products become batched ones (``_affine``, ``_add_outer``), row sums run over the
row dimension (-2), and the loss is the SUM over members of each member's loss, so every
member gets exactly the gradient it would get alone and trains independently under Adam.
The reported losses are the members' mean (comparable with one network's).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.optim.optimizer as _optim_module
from torch import Tensor, nn

from ..model.ensemble import EnsembleNet, StackedLinear, StackedResidualMLP, StackedSequentialMLP
from ..model.losses import GRAD_CLAMP
from ..model.network import RegressionNet, ResidualMLP, SequentialMLP
from ..model.registry import ACTIVATIONS, Loss


# ---- parameters in one buffer -------------------------------------------------------------
class FlatParams:
    """A model's parameters as views of one flat buffer, their grads as views of another.

    ``inv_count[i]`` is 1 / (size of the tensor holding element i), so
    ``dot(|flat|, inv_count)`` is the sum over tensors of mean |w| (the original pipeline's L1).
    For an ensemble the size is one member's (numel / K): the dot is then the sum over
    members of each member's L1.
    """

    def __init__(self, model: nn.Module):
        self.params = [p for p in model.parameters()]
        ref = self.params[0]
        sizes = [p.numel() for p in self.params]
        k = members_of(model)
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        self.grad = torch.zeros_like(self.flat)
        self.inv_count = torch.cat([torch.full((n,), k / n, dtype=ref.dtype, device=ref.device) for n in sizes])
        self.views = [v.view_as(p) for v, p in zip(self.flat.split(sizes), self.params)]
        self.grad_views = [v.view_as(p) for v, p in zip(self.grad.split(sizes), self.params)]
        for p, v in zip(self.params, self.views):
            p.data = v
        self.attach_grads()

    def attach_grads(self) -> None:
        """Point every ``p.grad`` at its view of ``grad`` (again, if something reset it)."""
        for p, g in zip(self.params, self.grad_views):
            p.grad = g

    def intact(self) -> bool:
        """True while the model's parameters still alias ``flat`` and their grads ``grad``."""
        first = self.params[0]
        return first.data_ptr() == self.flat.data_ptr() and first.grad is self.grad_views[0]

    def version(self) -> int:
        """Changes whenever a parameter is written in place through the model (``load_state_dict``,
        ``opt.step()``) or through ``flat``. (Writes through ``p.data`` are not counted by torch.)"""
        return self.flat._version + sum(p._version for p in self.params)

    def index(self, p: Tensor) -> int:
        """Position of parameter ``p`` (in ``params``, ``views`` and ``grad_views``)."""
        return next(i for i, q in enumerate(self.params) if q is p)


def members_of(model: nn.Module) -> int:
    """The number of member networks trained together (1 for a ``RegressionNet``)."""
    return model.members if isinstance(model, EnsembleNet) else 1


# ---- rank-polymorphic products (2-D: one network; 3-D: a leading member dimension) --------
def _t(w: Tensor) -> Tensor:
    """The matrix transpose (of each member's matrix)."""
    return w.transpose(-1, -2)


def _affine(b: Tensor, h: Tensor, wt: Tensor) -> Tensor:
    """h @ wt + b: ``addmm`` for one network; ``baddbmm`` with a member dimension (a shared
    2-D h, the normalized inputs, is broadcast over the members)."""
    if wt.dim() == 2:
        return torch.addmm(b, h, wt)
    if h.dim() == 2:
        h = h.expand(wt.shape[0], -1, -1)
    return torch.baddbmm(b.unsqueeze(-2), h, wt)


def _add_outer(g: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """g += a^T b (in place), per member when g has a member dimension."""
    if g.dim() == 2:
        return g.addmm_(_t(a), b)
    if b.dim() == 2:
        b = b.expand(g.shape[0], -1, -1)
    return g.baddbmm_(_t(a), b)


def _add_prod(c: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """c + a @ b, as ``addmm`` (one network) or ``baddbmm`` (members)."""
    return torch.addmm(c, a, b) if c.dim() == 2 else torch.baddbmm(c, a, b)


def _row_sum(t: Tensor) -> Tensor:
    """Sum over the row dimension (a bias gradient)."""
    return t.sum(-2)


# ---- the network as blocks ----------------------------------------------------------------
@dataclass
class Linear:
    """One Linear layer: weight and bias as views of ``FlatParams.flat``, their gradients as
    views of ``FlatParams.grad`` (``Wt``: the weight transposed)."""

    W: Tensor
    b: Tensor
    gW: Tensor
    gb: Tensor

    def __post_init__(self) -> None:
        self.Wt = _t(self.W)

    @classmethod
    def of(cls, layer: nn.Linear | StackedLinear, fp: FlatParams) -> "Linear":
        w, b = fp.index(layer.weight), fp.index(layer.bias)
        return cls(fp.views[w], fp.views[b], fp.grad_views[w], fp.grad_views[b])


@dataclass
class Block:
    """z = h W^T + b; a = act(z) (or z); h_new = a + skip(h) (identity, a Linear, or none)."""

    lin: Linear
    act: Optional[str]
    skip: Optional[Linear] = None
    identity_skip: bool = False


def blocks_of(model: RegressionNet | EnsembleNet, fp: FlatParams) -> tuple[list[Block], Linear]:
    """The hidden blocks and the output layer of a residual or sequential MLP (stacked or not)."""
    mlp = model.mlp
    if isinstance(mlp, (ResidualMLP, StackedResidualMLP)):
        act = mlp.activation.name
        blocks = [Block(Linear.of(mlp.input_layer, fp), act)]
        last = len(mlp.layers) - 1
        for i, (layer, skip) in enumerate(zip(mlp.layers, mlp.skip_connections)):
            lin_skip = Linear.of(skip, fp) if isinstance(skip, (nn.Linear, StackedLinear)) else None
            blocks.append(Block(Linear.of(layer, fp), act if i < last else None, lin_skip, lin_skip is None))
        return blocks, Linear.of(mlp.output_layer, fp)
    if isinstance(mlp, (SequentialMLP, StackedSequentialMLP)):
        mods = list(mlp.mlp)
        blocks = [Block(Linear.of(mods[i], fp), mods[i + 1].name) for i in range(0, len(mods) - 1, 2)]
        return blocks, Linear.of(mods[-1], fp)
    raise TypeError(f"fast step: expected a ResidualMLP or SequentialMLP, but got {type(mlp).__name__}")


# ---- the step's math ----------------------------------------------------------------------
@dataclass
class Forward:
    """What the backward pass needs from a forward pass over one batch."""

    y: Tensor                       # (B, K) network output (training units); (M, B, K) for M members
    hs: list[Tensor]                # input of each block (hs[0] = normalized x), then the last h
    d1: list[Optional[Tensor]]      # act'(z) per block (None: no activation)
    d2: list[Optional[Tensor]]      # act''(z) per block (None: zero or not needed)
    merged: list[Optional[Tensor]]  # W + W_skip of blocks without activation and a Linear skip
    us: list[Tensor] = field(default_factory=list)  # VJP seeds u_i per block (may be (1, w))
    vs: list[Tensor] = field(default_factory=list)  # v_i = u_i * act'(z_i)
    g: Optional[Tensor] = None      # (B, D) input gradient of sum_k y_k (raw x); None without penalty


def copy_forward(dst: Forward, src: Forward) -> None:
    """Copy a forward pass into another one's tensors (static buffers of a captured graph)."""
    pairs = [(dst.y, src.y), (dst.g, src.g)]
    for name in ("hs", "d1", "d2", "merged", "us", "vs"):
        pairs += zip(getattr(dst, name), getattr(src, name))
    for d, s in pairs:
        if d is not None and d is not s:
            d.copy_(s)


def _reduce_rows(t: Tensor, rows: int) -> Tensor:
    """Sum a broadcast adjoint back to ``rows`` rows (1 when its primal was a shared row)."""
    return t.sum(-2, keepdim=True) if rows == 1 and t.shape[-2] != 1 else t


def _merged_weights(blk: Block) -> Optional[tuple[Tensor, Tensor]]:
    """A block without activation and with a Linear skip is one Linear: (W + Ws, b + bs).

    The example config's residual [64, 32] ends with such a block, so this halves its largest
    matrix products, forward and backward.
    """
    if blk.act is None and blk.skip is not None:
        return blk.lin.W + blk.skip.W, blk.lin.b + blk.skip.b
    return None


class MLPStepMath:
    """Loss, input-gradient penalty and exact weight gradients of one ``RegressionNet``.

    ``forward`` runs the network (and, with the penalty, the input-gradient sweep);
    ``backward`` fills the grad buffer and returns the total loss and the stacked
    components ``[recon, l1, l2, grad_penalty]``. ``predict`` is the plain forward.
    """

    def __init__(self, model: RegressionNet | EnsembleNet, fp: FlatParams, cfg) -> None:
        self.model, self.fp, self.cfg = model, fp, cfg
        self.members = members_of(model)
        self.blocks, self.out = blocks_of(model, fp)
        self.flat, self.grad = fp.flat, fp.grad
        self.with_gp = cfg.grad_weight != 0
        self.raw_gp = cfg.grad_space == "raw"  # the penalty differentiates by raw (not normalized) inputs
        self.reset_constants()

    def reset_constants(self) -> None:
        """(Re)read normalization buffers and loss weights (after a state load). Updates the
        existing tensors in place, so a captured CUDA graph that reads them stays valid."""
        m, c, fp = self.model, self.cfg, self.fp
        fresh = {"mean": m.input_mean.detach(), "inv_std": 1.0 / m.input_std.detach(),
                 "c_l1": fp.inv_count * c.l1_weight, "c_l2": fp.inv_count * (2.0 * c.l2_weight),
                 "weights": torch.tensor([c.recon_weight, c.l1_weight, c.l2_weight, c.grad_weight],
                                         dtype=fp.flat.dtype, device=fp.flat.device)}
        with torch.no_grad():
            for name, value in fresh.items():
                current = getattr(self, name, None)
                if current is not None and current.shape == value.shape:
                    current.copy_(value)
                else:
                    setattr(self, name, value.clone())

    def normalize(self, x: Tensor) -> Tensor:
        """Raw inputs -> what the first layer sees."""
        return (x - self.mean) * self.inv_std

    # ---- forward ----------------------------------------------------------------------------
    def predict(self, xn: Tensor) -> Tensor:
        """Network output for normalized inputs (validation: no derivatives kept)."""
        h = xn
        for blk in self.blocks:
            merged = _merged_weights(blk)
            if merged is not None:
                h = _affine(merged[1], h, _t(merged[0]))
                continue
            z = _affine(blk.lin.b, h, blk.lin.Wt)
            h = self._add_skip(blk, ACTIVATIONS[blk.act].value(z) if blk.act else z, h)
        return _affine(self.out.b, h, self.out.Wt)

    @staticmethod
    def _add_skip(blk: Block, a: Tensor, h: Tensor) -> Tensor:
        if blk.skip is not None:
            return _affine(blk.skip.b, h, blk.skip.Wt).add_(a)
        return a + h if blk.identity_skip else a

    def forward(self, xn: Tensor) -> Forward:
        """Forward pass keeping what the gradients need, then the input-gradient sweep."""
        fw = Forward(xn, [xn], [], [], [])
        h = xn
        for blk in self.blocks:
            merged = _merged_weights(blk)
            if merged is not None:
                h, d1, d2 = _affine(merged[1], h, _t(merged[0])), None, None
            else:
                z = _affine(blk.lin.b, h, blk.lin.Wt)
                a, d1, d2 = ACTIVATIONS[blk.act].parts(z, self.with_gp) if blk.act else (z, None, None)
                h = self._add_skip(blk, a, h)
            fw.hs.append(h)
            fw.d1.append(d1)
            fw.d2.append(d2)
            fw.merged.append(merged[0] if merged is not None else None)
        fw.y = _affine(self.out.b, h, self.out.Wt)
        if self.with_gp:
            self._input_gradient(fw)
        return fw

    def _input_gradient(self, fw: Forward) -> None:
        """g = d sum_k y_k / d x (normalized or raw x), by the explicit reverse sweep (stores u_i, v_i)."""
        u = self.out.W.sum(-2, keepdim=True)
        us, vs = [], []
        for blk, d1, merged in zip(reversed(self.blocks), reversed(fw.d1), reversed(fw.merged)):
            v = u * d1 if d1 is not None else u
            if merged is not None:
                u_prev = u @ merged
            else:
                u_prev = v @ blk.lin.W
                if blk.skip is not None:
                    u_prev = _add_prod(u_prev, u, blk.skip.W)
                elif blk.identity_skip:
                    u_prev = u_prev + u
            us.append(u)
            vs.append(v)
            u = u_prev
        fw.us, fw.vs = us[::-1], vs[::-1]
        g = u * self.inv_std if self.raw_gp else u
        rows = fw.y.shape[:-1]
        fw.g = g if g.shape[:-1] == rows else g.expand(*rows, -1).contiguous()

    # ---- backward ---------------------------------------------------------------------------
    def backward(self, fw: Forward, yn: Tensor, loss: Loss, w: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Write d total / d weights into the grad buffer; return (total, [recon, l1, l2, gp]).
        ``w`` (K, B, 1): each member's weight of each row (bootstrap draw counts), or None."""
        c, fp, flat, grad = self.cfg, self.fp, self.flat, self.grad
        torch.mul(torch.sign(flat), self.c_l1, out=grad)
        grad.addcmul_(self.c_l2, flat)
        l1 = torch.dot(flat.abs(), fp.inv_count)
        l2 = torch.dot(flat.square(), fp.inv_count)
        r = fw.y - yn
        delta = c.recon_delta * loss.delta_scale
        rec = loss.value(r, delta, w)  # the members' mean; the gradient is of their sum
        ybar = loss.grad(r, delta).mul_(c.recon_weight * self.members / r.numel())
        if w is not None:
            ybar.mul_(w)
        if self.with_gp:
            gp, zbar_gp = self._penalty_backward(fw, w)
        else:
            gp, zbar_gp = rec.new_zeros(()), [None] * len(self.blocks)
        self._main_backward(fw, ybar, zbar_gp)
        if self.members > 1:  # l1, l2 are sums over members (FlatParams.inv_count): report means
            l1, l2 = l1 / self.members, l2 / self.members
        parts = torch.stack([rec, l1, l2, gp])
        return torch.dot(parts, self.weights), parts

    def _penalty_backward(self, fw: Forward, w: Optional[Tensor] = None) -> tuple[Tensor, list[Optional[Tensor]]]:
        """The penalty's value and its gradient through the input-gradient sweep (rows weighed by ``w``)."""
        g = fw.g
        gc = g.clamp(-GRAD_CLAMP, GRAD_CLAMP)
        per_row = gc.square().sum(-1)
        gp = per_row.mean() if w is None else (per_row * w[..., 0]).mean()
        # clamp passes the gradient where -C <= g <= C, i.e. where clamping changed nothing
        scale = 2.0 * self.cfg.grad_weight / g.shape[-2]  # per member: the gradient of the members' sum
        ubar = (gc * (gc == g)).mul_(self.inv_std * scale if self.raw_gp else scale)
        if w is not None:
            ubar.mul_(w)
        zbar_gp: list[Optional[Tensor]] = []
        for blk, u, v, d1, d2, merged in zip(self.blocks, fw.us, fw.vs, fw.d1, fw.d2, fw.merged):
            ubar = _reduce_rows(ubar, v.shape[-2])
            if merged is not None:  # u_prev = u (W + Ws)
                outer = _t(u) @ ubar
                blk.lin.gW.add_(outer)
                blk.skip.gW.add_(outer)
                ubar = _reduce_rows(ubar @ _t(merged), u.shape[-2])
                zbar_gp.append(None)
                continue
            _add_outer(blk.lin.gW, v, ubar)  # u_prev = v W (+ skip(u))
            vbar = ubar @ blk.lin.Wt
            ubar_u = None
            if blk.skip is not None:
                _add_outer(blk.skip.gW, u, _reduce_rows(ubar, u.shape[-2]))
                ubar_u = ubar @ blk.skip.Wt
            elif blk.identity_skip:
                ubar_u = ubar
            if d1 is not None:  # v = u * act'(z): adjoints of u and, through act'', of z
                from_v = vbar * d1
                zbar_gp.append((vbar * u).mul_(d2) if d2 is not None else None)
            else:
                from_v = vbar
                zbar_gp.append(None)
            ubar = _reduce_rows(from_v if ubar_u is None else from_v + ubar_u, u.shape[-2])
        self.out.gW.add_(ubar)  # u_{L-1} = ones(1, K) W_o
        return gp, zbar_gp

    def _main_backward(self, fw: Forward, ybar: Tensor, zbar_gp: list[Optional[Tensor]]) -> None:
        """Backward through the forward pass (adding the penalty's pre-activation adjoints)."""
        out = self.out
        _add_outer(out.gW, ybar, fw.hs[-1])
        out.gb.add_(_row_sum(ybar))
        hbar = ybar @ out.W
        for i in range(len(self.blocks) - 1, -1, -1):
            blk, d1, extra, h_prev, merged = self.blocks[i], fw.d1[i], zbar_gp[i], fw.hs[i], fw.merged[i]
            if merged is not None:  # h = h_prev (W + Ws)^T + b + bs
                outer, col = _t(hbar) @ h_prev, _row_sum(hbar)
                blk.lin.gW.add_(outer)
                blk.skip.gW.add_(outer)
                blk.lin.gb.add_(col)
                blk.skip.gb.add_(col)
                hbar = hbar @ merged
                continue
            if d1 is None:
                zbar = hbar if extra is None else hbar + extra
            else:
                zbar = torch.addcmul(extra, hbar, d1) if extra is not None else hbar * d1
            _add_outer(blk.lin.gW, zbar, h_prev)
            blk.lin.gb.add_(_row_sum(zbar))
            if i == 0:
                break
            hbar_prev = zbar @ blk.lin.W
            if blk.skip is not None:
                _add_outer(blk.skip.gW, hbar, h_prev)
                blk.skip.gb.add_(_row_sum(hbar))
                hbar_prev.addmm_(hbar, blk.skip.W) if hbar.dim() == 2 else hbar_prev.baddbmm_(hbar, blk.skip.W)
            elif blk.identity_skip:
                hbar_prev.add_(hbar)
            hbar = hbar_prev


# ---- the optimizer update ---------------------------------------------------------------------
class DirectAdam:
    """``opt.step()`` of a fused ``torch.optim.Adam``, calling its kernel directly.

    ``Optimizer.step`` spends ~130 us of Python per call (more than the rest of a small step;
    the kernel takes ~15 us). This does what ``Adam.step`` does for ``fused=True`` with the
    optimizer's own state tensors, so results and ``state_dict`` are identical. It falls back
    to ``opt.step()`` for the first step (lazy state), after ``load_state_dict``, and for any
    setting it does not reproduce (see ``usable``).
    """

    def __init__(self, opt: torch.optim.Optimizer):
        self.opt = opt
        self._lists: Optional[tuple] = None
        self._key: Optional[tuple] = None

    def usable(self) -> bool:
        """Whether the direct call reproduces ``opt.step()`` for this optimizer."""
        opt = self.opt
        if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1 or not hasattr(torch, "_fused_adam_"):
            return False
        g = opt.param_groups[0]
        plain = not (g["amsgrad"] or g["maximize"] or g["weight_decay"] or g["differentiable"] or g["capturable"]
                     or g.get("decoupled_weight_decay", False))
        hooks = (opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                 or _optim_module._global_optimizer_pre_hooks or _optim_module._global_optimizer_post_hooks)
        return (bool(g["fused"]) and plain and not hooks and not isinstance(g["lr"], Tensor)
                and getattr(opt, "grad_scale", None) is None)

    def step(self) -> None:
        """One Adam update of every parameter from its ``.grad``."""
        lists = self._current()
        if lists is None:
            self.opt.step()
            return
        params, grads, avgs, sqs, steps = lists
        g = self.opt.param_groups[0]
        beta1, beta2 = g["betas"]
        self._steps.add_(1)  # every counter (they are views of it)
        torch._fused_adam_(params, grads, avgs, sqs, [], steps, amsgrad=False, lr=g["lr"], beta1=beta1,
                           beta2=beta2, weight_decay=0.0, eps=g["eps"], maximize=False)

    def _current(self) -> Optional[tuple]:
        """The kernel's tensor lists, rebuilt when the optimizer state was created or replaced."""
        opt = self.opt
        params = opt.param_groups[0]["params"]
        first = opt.state.get(params[0])
        if not first or not self.usable():
            self._lists = None
            return None
        key = (id(opt.state), id(first), id(first["exp_avg"]), id(first["step"]), id(params[0].grad))
        if key != self._key:
            states = [opt.state.get(p) for p in params]
            if any(not s for s in states) or any(p.grad is None for p in params):
                return None
            self._lists = ([p.data for p in params], [p.grad for p in params], [s["exp_avg"] for s in states],
                           [s["exp_avg_sq"] for s in states], self._shared_steps(states))
            # the key again: _shared_steps replaced first["step"]
            self._key = (id(opt.state), id(first), id(first["exp_avg"]), id(first["step"]), id(params[0].grad))
        return self._lists

    def _shared_steps(self, states: list[dict]) -> list[Tensor]:
        """Make the per-parameter step counters views of one tensor (same values), so one
        ``add_`` counts the step for all of them (``_foreach_add_`` on CPU costs ~20 us)."""
        steps = [s["step"] for s in states]
        shared = torch.stack([t.detach() for t in steps])
        for s, view in zip(states, shared.unbind()):
            s["step"] = view
        self._steps = shared
        return [s["step"] for s in states]
