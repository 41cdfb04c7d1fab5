"""ImageNet architectures from torchvision with a 7-way emotion head, and their pretrained weights.

AlexNet, VGG19-BN and ResNet-101 are the paper's image models; ResNet-18 is the light stand-in for
the CPU demo profile. The 1000-way ImageNet layer is replaced by 7 outputs. Distribution models end
in a softmax (the 7 probabilities, trained with MSE as in the paper); classifiers return logits for
cross-entropy on the dominant emotion.

Pretrained weights (`pretrained`: ``auto`` | ``required`` | ``download`` | ``none``) come from

- torchvision's cache: ``torch.hub.get_dir()/checkpoints/<basename of the weights url>``, the file
  that ``weights="DEFAULT"`` would load (so ``$TORCH_HOME`` decides where it is looked for), or
- ``weights_path``: a state dict file of the torchvision model, with or without its ImageNet head.

The file is found by checking that it exists and is read with ``torch.load(weights_only=True)``
here, instead of handing ``weights="DEFAULT"`` to torchvision, so that only ``download`` ever touches
the network. Every backbone key must load (strict), only the replaced head is skipped. ``auto`` trains
from scratch when no file is found, ``required`` raises, ``none`` never loads. ``download`` (never the
default) first fetches a missing file into the cache with torchvision's downloader
(``torch.hub.download_url_to_file``, the sha256 prefix in the file name checked, as torchvision
does), then loads it like the others; `fetch_weights` does the same ahead of a run
(``emo-pipeline weights fetch``). Offline it raises `WeightsDownloadFailed`, one line naming the file
to place by hand and where. `WeightsInfo` says which happened, for logs, metadata and MLflow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from http.client import HTTPException
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

PRETRAINED_MODES: tuple[str, ...] = ("auto", "required", "download", "none")
# torchvision's ImageNet statistics: the pretrained backbones expect inputs normalised with them, and every
# image model of the project is fed that way (`image_emotion.image_data.normalise`).
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

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
    ``"none: trained from scratch"``; `detail` adds what was (not) loaded when only part was, or
    ``"downloaded from <url>"`` when ``pretrained="download"`` fetched the file for this model.
    """

    pretrained: bool
    source: str
    detail: str = ""

    def as_dict(self) -> dict[str, str | bool]:
        return asdict(self)


class PretrainedWeightsMissing(FileNotFoundError):
    """``pretrained="required"`` and no weights file was found."""


class WeightsDownloadFailed(PretrainedWeightsMissing):
    """``pretrained="download"`` (or `fetch_weights`) could not fetch the file; says where to put it."""


def weights_url(arch: str) -> str:
    """The address torchvision downloads the ImageNet weights of `arch` from (its DEFAULT weights)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch][1].DEFAULT.url


def cache_path(arch: str) -> Path:
    """Where torchvision keeps (and ``weights="DEFAULT"`` would load) the ImageNet weights of `arch`."""
    name = os.path.basename(urlparse(weights_url(arch)).path)
    # Read at call time: torch.hub.get_dir() follows TORCH_HOME and torch.hub.set_dir.
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def fetch_weights(arch: str, *, progress: bool = False) -> tuple[Path, bool]:
    """The cache file of `arch`'s ImageNet weights, downloaded first when absent; (path, downloaded).

    torchvision's downloader writes a temporary file beside the target and renames it when complete
    (an interrupted download leaves no half file under the real name) and checks the sha256 prefix
    that the file name carries, as ``weights="DEFAULT"`` does. Raises WeightsDownloadFailed.
    """
    url, path = weights_url(arch), cache_path(arch)
    if path.is_file():
        return path, False
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=progress)
    # URLError / HTTPError are OSErrors, a cut connection an HTTPException, a bad hash a RuntimeError.
    except (OSError, HTTPException, RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__  # one line, always
        raise WeightsDownloadFailed(
            f"could not download the ImageNet weights of {arch} from {url} ({reason}); "
            f"place {path.name} by hand at {path}"
        ) from exc
    return path, True


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
    if pretrained == "download":
        cached, downloaded = fetch_weights(arch)
        return _read_state_dict(cached), WeightsInfo(
            True, f"torchvision cache: {cached}", f"downloaded from {weights_url(arch)}" if downloaded else "")
    if cached.is_file():
        return _read_state_dict(cached), WeightsInfo(True, f"torchvision cache: {cached}")
    if pretrained == "required":
        raise PretrainedWeightsMissing(
            f"ImageNet weights for {arch} are required but were not found: looked at {cached} "
            f"(torchvision cache, under TORCH_HOME) and no weights_path was given. Put the torchvision "
            f"file there (`emo-pipeline weights fetch {arch}` or pretrained='download' fetches it), pass "
            f"weights_path, or use pretrained='auto' to train from scratch."
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
    model = constructor(weights=None)  # torchvision itself never fetches: find_weights decides
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

    Input: (N, 3, H, W) normalised with ImageNet statistics. 224 px is their ImageNet size (the paper
    states none), the paper profile's; AlexNet
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
