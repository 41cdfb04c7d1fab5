"""ImageNet architectures from torchvision with a 7-way emotion head, and their pretrained weights.

AlexNet, VGG19-BN and ResNet-101 are the paper's image models; ResNet-18 is the light stand-in for
the CPU demo profile. The 1000-way ImageNet layer is replaced by 7 outputs. Distribution models end
in a softmax (the 7 probabilities, trained with MSE as in the paper); classifiers return logits for
cross-entropy on the dominant emotion.

Pretrained weights (`pretrained`: ``auto`` | ``required`` | ``none``) come from

- torchvision's cache: ``torch.hub.get_dir()/checkpoints/<basename of the weights url>``, the file
  that ``weights="DEFAULT"`` would load (so ``$TORCH_HOME`` decides where it is looked for), or
- ``weights_path``: a state dict file of the torchvision model, with or without its ImageNet head.

The file is found by checking that it exists and is read with ``torch.load(weights_only=True)``
here, instead of handing ``weights="DEFAULT"`` to torchvision: that way no code path can reach
``load_state_dict_from_url``, so nothing is ever downloaded. Every backbone key must load (strict),
only the replaced head is skipped. ``auto`` trains from scratch when no file is found, ``required``
raises, ``none`` never loads. `WeightsInfo` says which happened, for logs, metadata and MLflow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

PRETRAINED_MODES: tuple[str, ...] = ("auto", "required", "none")

# architecture -> (torchvision constructor, its ImageNet weights, prefix of the layer we replace)
ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], type[WeightsEnum], str]] = {
    "alexnet": (torchvision.models.alexnet, torchvision.models.AlexNet_Weights, "classifier.6"),
    "vgg16": (torchvision.models.vgg16, torchvision.models.VGG16_Weights, "classifier.6"),
    "vgg19_bn": (torchvision.models.vgg19_bn, torchvision.models.VGG19_BN_Weights, "classifier.6"),
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights, "fc"),
    "resnet101": (torchvision.models.resnet101, torchvision.models.ResNet101_Weights, "fc"),
}


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's initial weights came from.

    `source` is ``"torchvision cache: <path>"``, ``"user file: <path>"`` or starts with
    ``"none: trained from scratch"``; `detail` adds what was (not) loaded when only part was.
    """

    pretrained: bool
    source: str
    detail: str = ""

    def as_dict(self) -> dict[str, str | bool]:
        return asdict(self)


class PretrainedWeightsMissing(FileNotFoundError):
    """``pretrained="required"`` and no weights file was found."""


def cache_path(arch: str) -> Path:
    """Where torchvision keeps (and ``weights="DEFAULT"`` would load) the ImageNet weights of `arch`."""
    weights = ARCHITECTURES[arch][1].DEFAULT
    name = os.path.basename(urlparse(weights.url).path)
    # Read at call time: torch.hub.get_dir() follows TORCH_HOME and torch.hub.set_dir.
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def find_weights(
    arch: str, pretrained: str = "auto", weights_path: str | os.PathLike[str] | None = None
) -> tuple[dict[str, torch.Tensor] | None, WeightsInfo]:
    """The ImageNet state dict of `arch` to start from, or None, and a record of the choice."""
    if pretrained not in PRETRAINED_MODES:
        raise ValueError(f"pretrained must be one of {', '.join(PRETRAINED_MODES)}, not {pretrained!r}")
    if pretrained == "none":
        if weights_path is not None:
            # A file named by the user and then ignored would be a silent surprise.
            raise ValueError(f"pretrained='none' contradicts weights_path={str(weights_path)!r}")
        return None, WeightsInfo(False, "none: trained from scratch (pretrained='none')")
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"weights_path for {arch} does not exist: {path}")
        return _read_state_dict(path), WeightsInfo(True, f"user file: {path}")
    cached = cache_path(arch)
    if cached.is_file():
        return _read_state_dict(cached), WeightsInfo(True, f"torchvision cache: {cached}")
    if pretrained == "required":
        raise PretrainedWeightsMissing(
            f"ImageNet weights for {arch} are required but were not found: looked at {cached} "
            f"(torchvision cache, under TORCH_HOME) and no weights_path was given. Put the torchvision "
            f"file there, pass weights_path, or use pretrained='auto' to train from scratch."
        )
    return None, WeightsInfo(False, f"none: trained from scratch (no ImageNet weights at {cached})")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TypeError(f"{path} is not a state dict (a mapping of parameter names to tensors)")
    return dict(state)


def _in_layer(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def load_backbone(model: nn.Module, state: Mapping[str, torch.Tensor], skip: tuple[str, ...]) -> None:
    """Load `state` into `model`: every key outside the `skip` layers must match, both ways."""
    kept = {k: v for k, v in state.items() if not any(_in_layer(k, p) for p in skip)}
    result = model.load_state_dict(kept, strict=False)
    missing = [k for k in result.missing_keys if not any(_in_layer(k, p) for p in skip)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"weights do not fit {type(model).__name__}: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {result.unexpected_keys[:5]}"
            f"{' ...' if len(result.unexpected_keys) > 5 else ''}"
        )


def _head(in_features: int, outputs: int, distribution: bool) -> nn.Module:
    linear = nn.Linear(in_features, outputs)
    # The softmax sits inside the head so that the model's output is the distribution itself.
    return nn.Sequential(linear, nn.Softmax(dim=1)) if distribution else linear


def imagenet_model(
    arch: str, pretrained: str = "auto", weights_path: str | os.PathLike[str] | None = None
) -> tuple[nn.Module, WeightsInfo]:
    """The torchvision model `arch`, ImageNet head still in place, with weights per `pretrained`."""
    constructor, _, head = ARCHITECTURES[arch]
    state, info = find_weights(arch, pretrained, weights_path)
    model = constructor(weights=None)  # never lets torchvision fetch anything
    if state is not None:
        # The head is skipped even though it would fit: a user file may come without it.
        load_backbone(model, state, (head,))
    return model, info


def emotion_backbone(
    arch: str,
    *,
    outputs: int = 7,
    distribution: bool = True,
    pretrained: str = "auto",
    weights_path: str | os.PathLike[str] | None = None,
) -> tuple[nn.Module, WeightsInfo]:
    """`arch` with its last layer replaced by `outputs` units (softmax when `distribution`).

    Input: (N, 3, H, W) normalised with ImageNet statistics. 224 px is the paper's size; AlexNet
    runs from 64 px up and VGG / ResNet from 32 px up (their adaptive pooling absorbs the size),
    which the demo profile uses to stay fast on a CPU.
    """
    model, info = imagenet_model(arch, pretrained, weights_path)
    head = ARCHITECTURES[arch][2]
    if head == "fc":
        model.fc = _head(model.fc.in_features, outputs, distribution)
    else:
        model.classifier[6] = _head(model.classifier[6].in_features, outputs, distribution)
    return model, info
