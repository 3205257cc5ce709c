from __future__ import annotations

import torch

from scenetag.train.losses import AsymmetricLoss



def test_asl_reduces_to_bce_without_focusing():
    logits = torch.randn(6, 5)
    y = (torch.rand(6, 5) > 0.5).float()
    asl = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)(logits, y)
    torch.testing.assert_close(asl, torch.nn.functional.binary_cross_entropy_with_logits(logits, y), atol=1e-5, rtol=1e-5)




def test_bce_options_for_incomplete_labels():
    from scenetag.train.losses import SmoothedBCE

    torch.manual_seed(0)
    logits, y = torch.randn(8, 5, requires_grad=True), (torch.rand(8, 5) > 0.6).float()
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    torch.testing.assert_close(SmoothedBCE()(logits, y), plain)
    # Bootstrapping: the target moves toward the model's own probability, and no gradient flows through it.
    b = 0.3
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, (1 - b) * y + b * torch.sigmoid(logits).detach())
    torch.testing.assert_close(SmoothedBCE(bootstrap=b)(logits, y), want)
    # Ignoring confident negatives: exactly the negatives above the probability drop out; positives always count.
    tau = 0.6
    keep = ~((y == 0) & (torch.sigmoid(logits) > tau))
    elementwise = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    loss = SmoothedBCE(ignore_negatives_above=tau)(logits, y)
    torch.testing.assert_close(loss, elementwise[keep].mean())
    loss.backward()
    assert torch.all(logits.grad[~keep] == 0) and torch.all(logits.grad[keep] != 0)
    assert (~keep).any() and (keep & (y == 1)).sum() == (y == 1).sum()
