"""FastDropout (u2a.model.dropout): the distribution, the exact values, shared masks, seeding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from u2a.model.dropout import FastDropout, SharedMask, keep_mask, random_int16
from u2a.model.lora import install_fast_dropout


def reference(x: torch.Tensor, p: float) -> torch.Tensor:
    """The bool-mask formulation with the same random integers (what u2a computed before)."""
    keep = random_int16(x.shape) >= (int(round(p * 65536)) - 32768)
    return torch.where(keep, x * (1.0 / (1.0 - p)), x.new_zeros(()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_equals_the_bool_mask_formulation_bit_for_bit(dtype):
    x = torch.randn(4, 7, 33).to(dtype)
    drop = FastDropout(0.1).train()
    torch.manual_seed(5)
    out = drop(x)
    torch.manual_seed(5)
    ref = reference(x, 0.1)
    assert out.dtype == dtype
    assert torch.equal(out, ref)


def test_drop_rate_scale_and_gradient():
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, requires_grad=True)
    out = FastDropout(0.1).train()(x)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.002  # 1e6 Bernoulli(0.1) draws: std 3e-4
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.9))
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())  # d(x * m)/dx = m, and x = 1


def test_eval_mode_and_zero_p_return_the_input():
    x = torch.randn(3, 5)
    assert FastDropout(0.3).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FastDropout(1.0)


def test_seeded_like_every_other_draw():
    x = torch.randn(64, 64)
    drop = FastDropout(0.5).train()
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    b = drop(x)
    c = drop(x)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_shared_group_reuses_the_mask_only_for_the_same_tensor():
    group = SharedMask()
    q, k = FastDropout(0.5, group).train(), FastDropout(0.5, group).train()
    x = torch.randn(32, 32)
    first = q(x)
    assert torch.equal(k(x), first)  # the same tensor: the same mask
    other = k(x.clone())
    assert not torch.equal(other, first)


def test_keep_mask_values():
    torch.manual_seed(1)
    m = keep_mask((50, 40), 0.25, value=4.0, dtype=torch.bfloat16)
    assert m.dtype == torch.bfloat16 and m.shape == (50, 40)
    assert set(m.unique().tolist()) == {0.0, 4.0}


def test_install_replaces_encoder_dropout():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Dropout(0.0))
    assert install_fast_dropout(model) == 1
    assert isinstance(model[1], FastDropout) and type(model[2]) is nn.Dropout


def test_a_shared_group_keeps_no_activation_alive():
    """The group remembers the tensor it drew a mask for by a weak reference: once the step's
    activation is gone, it is freed (and its autograd graph with it), not kept until the next step."""
    import gc
    import weakref

    from u2a.model.dropout import FastDropout, SharedMask

    group = SharedMask()
    a, b = FastDropout(0.1, group), FastDropout(0.1, group)
    x = torch.randn(4, 8, requires_grad=True) * 2  # an activation with a graph
    ya, yb = a(x), b(x)
    assert torch.equal(ya != 0, yb != 0)  # the second module reused the first one's mask
    ref = weakref.ref(x)
    del x, ya, yb
    gc.collect()
    assert ref() is None
    z = torch.randn(4, 8)
    assert not group.holds(z)
