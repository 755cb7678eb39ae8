"""How a mask token's output becomes the estimate of a missing modality's CLS feature, and how
well any estimate of a given form can do at best.

An MT(s->t) output leaves the *source* encoder through its final LayerNorm, so it lies on that
norm's affine manifold ``{gamma_s * z + beta_s : mean(z) = 0, |z|^2 = d}`` (``z`` the
parameter-free normalisation of the pre-norm state). When the target's CLS outputs lie far from that manifold, no amount of training brings
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
def reachable_floor(gamma: torch.Tensor, beta: torch.Tensor, targets: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """Per target row y: ``min over z`` of ``mean((gamma * z + beta - y) ** 2)`` subject to
    ``sum(z) = 0`` and ``|z|^2 = d`` - the best MSE per dimension that an output of a LayerNorm with
    scale ``gamma`` and shift ``beta`` can have from y. (The norm's epsilon lets ``|z|`` shrink only
    for pre-norm states whose variance across dimensions is below epsilon, 1e-6 or less; trained
    encoders do not produce those, so the sphere is the reachable set.)

    In an orthonormal basis Q of the hyperplane ``sum(z) = 0`` (z = Q u) this is a trust-region
    subproblem with an equality constraint: minimise ``|G Q u - w|^2`` (G = diag(gamma),
    w = y - beta) over ``|u|^2 = d``. With A = Q^T G^2 Q = V diag(l) V^T and c = V^T Q^T G w, the
    global minimiser is ``u = V c / (l + lam)`` with ``lam > -min(l)`` the root of
    ``sum(c^2 / (l + lam)^2) = d`` (decreasing in lam; found by bisection)."""
    g = gamma.double().flatten()
    d = g.numel()
    w = (targets.double() - beta.double()).reshape(-1, d)
    # orthonormal basis of {z : sum(z) = 0}: the last d-1 columns of a Householder-like QR
    ones = torch.ones(d, 1, dtype=torch.float64) / d ** 0.5
    q_full, _ = torch.linalg.qr(torch.cat([ones, torch.eye(d, dtype=torch.float64)[:, : d - 1]], dim=1))
    q = q_full[:, 1:]  # (d, d-1)
    a = q.T @ ((g ** 2).unsqueeze(1) * q)  # Q^T G^2 Q
    lam_eig, v = torch.linalg.eigh(a)
    c = (w * g) @ q @ v  # (n, d-1)
    lmin = float(lam_eig.min())

    def norm2(lam: torch.Tensor) -> torch.Tensor:
        return ((c / (lam_eig + lam.unsqueeze(1))) ** 2).sum(1)

    n = w.shape[0]
    span = max(float(lam_eig.max()) - lmin, 1.0)
    lo = torch.full((n,), -lmin + 1e-12 * span, dtype=torch.float64)
    hi = torch.full((n,), -lmin + span, dtype=torch.float64)
    while True:  # grow hi until the norm is below d for every row
        big = norm2(hi) > d
        if not big.any():
            break
        hi = torch.where(big, -lmin + (hi + lmin) * 4, hi)
    for _ in range(iters):
        mid = (lo + hi) / 2
        above = norm2(mid) > d
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    lam = (lo + hi) / 2
    u = c / (lam_eig + lam.unsqueeze(1))
    u = u * (d / (u ** 2).sum(1, keepdim=True)).sqrt()  # on the sphere exactly (hard-case guard)
    z = u @ v.T @ q.T
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
