"""Multi-instance pooling over a bag of views, and the bag model built around it."""
from __future__ import annotations

import pytest
import torch

from scenetag.errors import ModelError
from scenetag.models.bags import BAG_POOLS, BagPool
from scenetag.models.net import build_model


def test_pools_lie_between_the_mean_and_the_max_of_the_instances():
    torch.manual_seed(0)
    logits, features = torch.randn(4, 5, 3), torch.randn(4, 5, 8)
    mean, top = logits.mean(1), logits.max(1).values
    torch.testing.assert_close(BagPool("mean", 8, 3)(logits), mean)
    torch.testing.assert_close(BagPool("max", 8, 3)(logits), top)
    for kind in ("lse", "attention"):
        pooled = BagPool(kind, 8, 3)(logits, features)
        assert torch.all(pooled >= logits.min(1).values - 1e-6) and torch.all(pooled <= top + 1e-6), kind
    assert torch.all(BagPool("lse", 8, 3)(logits) >= mean - 1e-6)  # log-mean-exp is at least the mean (Jensen)


@pytest.mark.parametrize("kind", BAG_POOLS)
def test_a_bag_of_copies_scores_like_one_instance(kind):
    one = torch.randn(4, 1, 3)
    pool = BagPool(kind, 8, 3)
    torch.testing.assert_close(pool(one.expand(4, 6, 3), torch.randn(4, 1, 8).expand(4, 6, 8)), one[:, 0], atol=1e-5, rtol=1e-5)


def test_attention_weights_are_a_distribution_over_instances_per_label():
    pool = BagPool("attention", 8, 3)
    weights = pool.weights(torch.randn(2, 5, 8))
    assert weights.shape == (2, 5, 3)
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 3))
    with pytest.raises(ModelError, match="needs the instances' features"):
        pool(torch.randn(2, 5, 3))
    with pytest.raises(ModelError, match="unknown bag pooling"):
        BagPool("median", 8, 3)


@pytest.mark.parametrize("head", ["reference", "csra"])
@pytest.mark.parametrize("kind", BAG_POOLS)
def test_a_bag_model_pools_what_the_same_network_says_of_each_view(head, kind):
    torch.manual_seed(0)
    bag_model = build_model("test_efficientnet", "none", 5, head, quiet=True, bag_pool=kind).eval()
    single = build_model("test_efficientnet", "none", 5, head, quiet=True).eval()
    single.load_state_dict({k: v for k, v in bag_model.state_dict().items() if not k.startswith("bag_pool.")})
    bags = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        per_view = torch.stack([single(bags[:, j]) for j in range(3)], dim=1)
        features = torch.stack([single.head_input(single.backbone.forward_features(bags[:, j])) for j in range(3)], dim=1)
        features = features if features.dim() == 3 else features.mean(dim=(3, 4))
        torch.testing.assert_close(bag_model(bags), bag_model.bag_pool(per_view, features), atol=1e-5, rtol=1e-5)
    assert {n for n, p in bag_model.named_parameters() if p.requires_grad} >= {n for n, _ in bag_model.bag_pool.named_parameters(prefix="bag_pool")}
    bag_model.freeze_until(len(bag_model.pieces()))
    assert all(p.requires_grad for p in bag_model.head_parameters())
