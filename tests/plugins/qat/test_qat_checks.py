"""``hfx validate plugin=qat``: its checks pass, and the STE agrees with torch's fake quantization by hand."""

from __future__ import annotations

import torch

from hfx_plugins.qat.checks import checks
from hfx_plugins.qat.fake import fake_quant_ste


def test_every_check_within_tolerance() -> None:
    results = {c.name: (c.run(), c.tolerance) for c in checks()}
    assert len(results) == 4
    for name, (diff, tol) in results.items():
        assert diff <= tol, name


def test_ste_equals_torch_fake_quantize_and_its_gradient() -> None:
    # Reference: torch.fake_quantize_per_channel_affine, whose backward passes the gradient where the rounded
    # code is inside [quant_min, quant_max] (torch.ao's FakeQuantize), here with half of the values clamped.
    x = (torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 2).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    scale, zero = torch.tensor([0.05, 0.1, 0.3]), torch.tensor([2, 8, 13])
    ours = fake_quant_ste(x, scale[:, None], zero[:, None].float(), 0, 15)
    ref = torch.fake_quantize_per_channel_affine(x_ref, scale, zero.int(), 0, 0, 15)
    assert torch.equal(ours, ref)
    (ours * torch.arange(50.0)).sum().backward()
    (ref * torch.arange(50.0)).sum().backward()
    assert torch.equal(x.grad, x_ref.grad)
    assert 0.2 < float((x.grad == 0).float().mean()) < 0.8  # both sides of the STE are exercised
