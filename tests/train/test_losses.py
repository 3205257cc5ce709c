from __future__ import annotations

import torch

from scenetag.train.losses import AsymmetricLoss



def test_asl_reduces_to_bce_without_focusing():
    logits = torch.randn(6, 5)
    y = (torch.rand(6, 5) > 0.5).float()
    asl = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)(logits, y)
    torch.testing.assert_close(asl, torch.nn.functional.binary_cross_entropy_with_logits(logits, y), atol=1e-5, rtol=1e-5)


