"""Torch models of the paper, by name.

Every torch module of the project lives in this package. `build_from_card(card)` rebuilds the
untrained network a model card describes (the registry from a card's kind to its builder), for
`emo_pipeline.storage.model_store` to load saved weights into: loading a model needs no training code.

`build_model(name)` gives the image -> emotion models that take one (N, 3, S, S) batch and return
(N, 7): the small CNN, the compact CNN (ours, not the paper's) and the ImageNet architectures, as
distribution models (softmax, MSE) or dominant-emotion classifiers (`*_classifier`, logits for
cross-entropy). The two ESM models have
their own builders: `build_fcn8s` (image -> stimuli map) and `build_esm_resnet` (image and map ->
distribution).

Input sizes: `input_size(name)` is the default side: 32 px for the small CNN (the paper's), 224 px
for the ImageNet architectures (their ImageNet size; the paper does not state one). They pool
adaptively, so a caller may feed smaller images down to `min_input_size(name)` (for example ResNet
at 112 px in the CPU demo). The small CNN's fully connected layer depends on its input side, so it
is built for one: `build_model("small_cnn", input_size=64)` (default 32, the paper's) takes exactly
64x64 images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from emo_pipeline.models.backbones import (
    PRETRAINED_MODES,
    PretrainedWeightsMissing,
    WeightsInfo,
    cache_path,
    emotion_backbone,
)
from emo_pipeline.models.compact_cnn import CompactCNN
from emo_pipeline.models.emotion_objects_mlp import EmotionObjectMLP
from emo_pipeline.models.esm_resnet import ESMResNet, MapInput, build_esm_resnet
from emo_pipeline.models.fcn8s import FCN8s, build_fcn8s
from emo_pipeline.models.mirror import MirrorAveraged
from emo_pipeline.models.object_models import ObjectFC, PhraseRNN, rebuild_object_model
from emo_pipeline.models.patch_mlp import PatchEncoder, PatchMLP
from emo_pipeline.models.small_cnn import SmallCNN

__all__ = [
    "MODEL_NAMES",
    "PRETRAINED_MODES",
    "TORCH_KINDS",
    "CompactCNN",
    "ESMResNet",
    "EmotionObjectMLP",
    "FCN8s",
    "MapInput",
    "MirrorAveraged",
    "ObjectFC",
    "PatchEncoder",
    "PatchMLP",
    "PhraseRNN",
    "PretrainedWeightsMissing",
    "SmallCNN",
    "WeightsInfo",
    "build_esm_resnet",
    "build_fcn8s",
    "build_from_card",
    "build_model",
    "cache_path",
    "input_size",
    "is_distribution_model",
    "min_input_size",
]

EMOTION_OUTPUTS = 7


@dataclass(frozen=True)
class _Spec:
    arch: str | None  # torchvision architecture, None for the from-scratch CNNs
    distribution: bool
    input_size: int
    min_input_size: int


_SPECS: dict[str, _Spec] = {
    # The small CNN is built for its input side (see build_model); two 2x2 poolings need at least 4.
    "small_cnn": _Spec(None, True, 32, 4),
    "small_cnn_classifier": _Spec(None, False, 32, 4),
    # Pools adaptively after three 2x2 poolings; 64 px is the side its settings were chosen at.
    "compact_cnn": _Spec(None, True, 64, 8),
    # AlexNet's stride-4 first layer and three poolings leave nothing below 63 px.
    "alexnet": _Spec("alexnet", True, 224, 64),
    "alexnet_classifier": _Spec("alexnet", False, 224, 64),
    "vgg19_bn": _Spec("vgg19_bn", True, 224, 32),
    "resnet101": _Spec("resnet101", True, 224, 32),
    "resnet18": _Spec("resnet18", True, 224, 32),
}

MODEL_NAMES: tuple[str, ...] = tuple(_SPECS)


def _spec(name: str) -> _Spec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}") from None


def input_size(name: str) -> int:
    """The default input side in pixels for model `name`: 32 for the small CNN (the paper's), 224 for the
    ImageNet architectures (not stated by the paper); see `min_input_size` for smaller inputs."""
    return _spec(name).input_size


def is_distribution_model(name: str) -> bool:
    """True when model `name` ends in a softmax (a distribution), False for a logits classifier."""
    return _spec(name).distribution


def min_input_size(name: str) -> int:
    """The smallest input side model `name` runs at."""
    return _spec(name).min_input_size


def build_model(
    name: str,
    *,
    pretrained: str = "auto",
    weights_path: str | os.PathLike[str] | None = None,
    input_size: int | None = None,
) -> tuple[nn.Module, WeightsInfo]:
    """Model `name` with 7 outputs, and where its initial weights came from.

    `pretrained` (auto | required | download | none) and `weights_path` choose ImageNet weights as
    described in `emo_pipeline.models.backbones`; only `download` touches the network. The small and
    compact CNNs have no pretrained weights: they accept only `auto` or `none` and no `weights_path`.

    `input_size` builds the small CNN for that side (default 32, a multiple of 4). The compact CNN and
    the torchvision models do not depend on it: it is only checked against `min_input_size(name)`, so that a size
    they cannot run at fails here rather than inside a forward pass.
    """
    spec = _spec(name)
    if pretrained not in PRETRAINED_MODES:
        raise ValueError(f"pretrained must be one of {', '.join(PRETRAINED_MODES)}, not {pretrained!r}")
    if input_size is not None and input_size < spec.min_input_size:
        raise ValueError(f"{name} needs inputs of at least {spec.min_input_size} px, not {input_size}")
    if spec.arch is None:
        if pretrained in ("required", "download") or weights_path is not None:
            raise ValueError(f"{name} has no pretrained weights; use pretrained='auto' or 'none' without weights_path")
        if name == "compact_cnn":
            model: nn.Module = CompactCNN(EMOTION_OUTPUTS, distribution=spec.distribution)
        else:
            model = SmallCNN(EMOTION_OUTPUTS, distribution=spec.distribution,
                             input_size=spec.input_size if input_size is None else input_size)
        return model, WeightsInfo(False, f"none: trained from scratch (no pretrained weights exist for {name})")
    return emotion_backbone(spec.arch, outputs=EMOTION_OUTPUTS, distribution=spec.distribution,
                            pretrained=pretrained, weights_path=weights_path)


def _image_model(card) -> nn.Module:
    return build_model(card.architecture, pretrained="none", **card.options)[0]


def _emotion_objects_mlp(card) -> nn.Module:
    options = card.options
    return EmotionObjectMLP(len(options["vocabulary"]), tuple(options["hidden"]), options["dropout"])


# A model card's kind -> the builder of its untrained network (no pretrained weights are looked for).
_BUILDERS = {
    "image": _image_model,
    "esm_fcn8s": lambda card: build_fcn8s(pretrained="none", **card.options)[0],
    "esm_resnet": lambda card: build_esm_resnet(card.architecture, pretrained="none", **card.options)[0],
    "objects_emotion": lambda card: rebuild_object_model(card.architecture, card.size, card.options),
    "emotion_objects": _emotion_objects_mlp,
    "patches": lambda card: PatchMLP(**card.options),
}
TORCH_KINDS: tuple[str, ...] = tuple(_BUILDERS)


def build_from_card(card) -> nn.Module:
    """The untrained network a model card (`emo_pipeline.storage.model_store.ModelCard`) describes."""
    try:
        builder = _BUILDERS[card.kind]
    except KeyError:
        raise ValueError(f"model {card.name!r} is of kind {card.kind!r}, not a torch model") from None
    return builder(card)
