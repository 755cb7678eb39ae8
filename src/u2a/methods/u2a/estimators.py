"""How a mask token's output becomes the estimate of a missing modality's CLS feature, and how
well any estimate of a given form can do at best.

An MT(s->t) output leaves the *source* encoder through its final LayerNorm, so it lies on that
norm's affine manifold ``{gamma_s * z + beta_s : mean(z) = 0, |z|^2 <= d}`` (``z`` the
parameter-free normalisation of the pre-norm state; the epsilon makes every norm up to ``sqrt(d)``
reachable). When the target's CLS outputs lie far from that manifold, no amount of training brings
the paper's estimate closer than :func:`reachable_floor`; a constant (the mean target CLS) may do
better. The ``target_norm`` and ``residual`` outputs (:mod:`u2a.methods.u2a.config`) move the
estimate onto the target's own manifold, or anchor it at the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def layer_norm0(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Parameter-free LayerNorm over the last dimension (in fp32)."""
    return F.layer_norm(x.float(), (x.shape[-1],), eps=eps)


def pair_key(source: str, target: str) -> str:
    """Parameter-dict key of a (source, target) pair (module names cannot hold dots)."""
    return f"{source}_to_{target}"


@torch.no_grad()
def reachable_floor(gamma: torch.Tensor, beta: torch.Tensor, targets: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Per target row y: ``min over z`` of ``mean((gamma * z + beta - y) ** 2)`` subject to
    ``sum(z) = 0`` and ``|z|^2 <= d`` - the best MSE per dimension that an output of a LayerNorm
    with scale ``gamma`` and shift ``beta`` can have from y.

    The problem is convex (a quadratic over a ball cut by a hyperplane through its centre). With
    ``w = y - beta`` the optimum is ``z_i = (gamma_i w_i - nu) / (gamma_i^2 + lam)``, ``nu`` making
    ``sum(z) = 0`` and ``lam >= 0`` the smallest value with ``|z|^2 <= d`` (found by bisection;
    the norm decreases in ``lam``)."""
    g = gamma.double().flatten()
    w = (targets.double() - beta.double()).reshape(-1, g.numel())
    d = g.numel()

    def solve(lam: torch.Tensor) -> torch.Tensor:
        den = g.unsqueeze(0) ** 2 + lam.unsqueeze(1)  # (n, d)
        inv = 1.0 / den
        nu = (g * w * inv).sum(1, keepdim=True) / inv.sum(1, keepdim=True)
        return (g * w - nu) * inv

    eps = torch.full((w.shape[0],), 1e-12, dtype=torch.float64)
    z = solve(eps)
    over = (z ** 2).sum(1) > d
    if over.any():
        lo = torch.zeros_like(eps)
        hi = torch.ones_like(eps)
        while True:  # grow hi until the norm fits for every row that needs it
            zz = solve(hi)
            bad = over & ((zz ** 2).sum(1) > d)
            if not bad.any():
                break
            hi = torch.where(bad, hi * 4, hi)
        for _ in range(iters):
            mid = (lo + hi) / 2
            fits = (solve(mid) ** 2).sum(1) <= d
            hi = torch.where(fits, mid, hi)
            lo = torch.where(fits, lo, mid)
        z = torch.where(over.unsqueeze(1), solve(hi), z)
    return ((g * z - w) ** 2).mean(1).to(targets.dtype)


@dataclass
class FloorCheck:
    """The reachable floor of one estimator direction against the constant (mean target)."""

    source: str
    target: str
    output: str
    #: mean over the samples of the best reachable MSE per dimension; None: no bound (learned maps)
    floor: float | None
    #: MSE per dimension of the mean target (= its mean per-dimension variance)
    constant: float
    note: str

    @property
    def beats_constant(self) -> bool | None:
        return None if self.floor is None else self.floor < self.constant

    def line(self) -> str:
        f = "-" if self.floor is None else f"{self.floor:.4g}"
        return (f"  {self.source}->{self.target} ({self.output}): reachable floor {f} vs constant {self.constant:.4g}"
                f" per dim; {self.note}")

    def as_dict(self) -> dict:
        return {"direction": f"{self.source}->{self.target}", "output": self.output, "floor": self.floor,
                "constant": self.constant, "beats_constant": self.beats_constant, "note": self.note}
