"""FCN-8s (Long et al., 2015) on a VGG-16 trunk, predicting one emotion stimuli map (ESM).

Layers follow FCN-8s (Long et al.): VGG-16's conv layers, fc6/fc7 as convolutions, a 1-channel `score_fr`,
`upscore2` (x2), `score_pool4`, `upscore_pool4` (x2), `score_pool3`, then x8 back to the input. The
output is a sigmoid map in [0, 1] of the input's size, trained with MSE against the ground-truth ESM.

Padding and cropping differ from the Caffe original on purpose. There, conv1_1 pads by 100 and the
skips are cropped at fixed offsets so any size works; at the 32-64 px used here that padding would
make every image cost as much as a 230-290 px one. Instead fc6 is a "same" 7x7 convolution, the
poolings round up (`ceil_mode`), the x2 deconvolutions double exactly, and each upsampled map is
cropped at the bottom/right to its skip's size, where ceil rounding added the extra cell. The output
size therefore equals the input size for every input, exactly without any crop when the side is a
multiple of 32 (32, 64, 224).

Weights: the trunk's keys are torchvision's (`features.N`), so the ImageNet VGG-16 file loads with the
auto/required/none logic of `backbones`; with VGG-16's 4096-wide fc6/fc7, its fully connected layers
are reshaped into them, as in FCN-8s.
"""

from __future__ import annotations

import os
from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from emo_pipeline.models.backbones import PRETRAINED_MODES, WeightsInfo, find_weights

VGG16_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                       512, 512, 512, "M")
VGG_FC_WIDTH = 4096
VGG_TRUNK_WIDTH = 64  # conv1's channels in VGG-16; the later blocks have 2x, 4x, 8x, 8x


def _vgg16_features(trunk_width: int = VGG_TRUNK_WIDTH) -> nn.Sequential:
    """VGG-16's conv layers with torchvision's layer indices, poolings rounding up.

    `trunk_width` scales every block's channels (64 is VGG-16's own); the layer indices stay the same.
    """
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            width = int(item) * trunk_width // VGG_TRUNK_WIDTH
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    return nn.Sequential(*layers)


def _bilinear_kernel(size: int) -> torch.Tensor:
    """A (1, 1, size, size) bilinear interpolation kernel, the FCN initialisation of a deconvolution."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 else factor - 0.5
    line = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    return (line[:, None] * line[None, :])[None, None]


def _upsample2() -> nn.ConvTranspose2d:
    layer = nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1, bias=False)  # exactly doubles the size
    with torch.no_grad():
        layer.weight.copy_(_bilinear_kernel(4))
    return layer


class FCN8s(nn.Module):
    """(N, 3, H, W) images normalised with ImageNet statistics -> (N, 1, H, W) stimuli maps in [0, 1].

    `fc_channels` is the width of fc6/fc7: the paper's 4096 (134M parameters in all, and the only
    width that takes VGG-16's fully connected weights), or less for a quick CPU run. Trained from
    scratch it is a plain 15-layer network without normalisation: Adam at lr 1e-3 drives the sigmoid
    into saturation within a few steps, 1e-4 learns.

    `trunk_width` is conv1's width (VGG-16's 64; the other blocks scale with it). Only 64 takes the
    ImageNet file; a narrower trunk (16: 1/16 of the computation) is for training from scratch on a
    CPU, where the full VGG-16 costs seconds per batch even at 32 px.
    """

    def __init__(self, *, fc_channels: int = VGG_FC_WIDTH, dropout: float = 0.5,
                 trunk_width: int = VGG_TRUNK_WIDTH):
        super().__init__()
        if trunk_width < 1:
            raise ValueError(f"trunk_width must be positive, not {trunk_width}")
        self.features = _vgg16_features(trunk_width)
        top = 8 * trunk_width  # pool4 / pool5 channels (512 in VGG-16)
        self.fc6 = nn.Sequential(nn.Conv2d(top, fc_channels, 7, padding=3), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc7 = nn.Sequential(nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout(dropout))
        for module in [*self.features, self.fc6[0], self.fc7[0]]:
            if isinstance(module, nn.Conv2d):
                # torchvision's VGG initialisation: PyTorch's default would shrink the signal at every
                # one of the 15 layers, leaving a from-scratch model (no ImageNet file) unable to learn.
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        self.score_fr = nn.Conv2d(fc_channels, 1, 1)
        self.score_pool4 = nn.Conv2d(top, 1, 1)
        self.score_pool3 = nn.Conv2d(4 * trunk_width, 1, 1)
        # Scores start at zero (as in FCN) so the skips add nothing until training finds them useful.
        for layer in (self.score_fr, self.score_pool4, self.score_pool3):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.upscore2 = _upsample2()
        self.upscore_pool4 = _upsample2()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        pools = []
        h = images
        for layer in self.features:
            h = layer(h)
            if isinstance(layer, nn.MaxPool2d):
                pools.append(h)
        pool3, pool4 = pools[2], pools[3]

        h = self.score_fr(self.fc7(self.fc6(h)))
        h = _crop_to(self.upscore2(h), pool4) + self.score_pool4(pool4)
        h = _crop_to(self.upscore_pool4(h), pool3) + self.score_pool3(pool3)
        # The final x8 is fixed bilinear interpolation, as in FCN-8s at-once; F.interpolate also gets the
        # border right where a fixed deconvolution would darken it.
        h = F.interpolate(h, scale_factor=8, mode="bilinear", align_corners=False)
        return torch.sigmoid(h[..., :height, :width])


def _crop_to(upsampled: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    return upsampled[..., : skip.shape[-2], : skip.shape[-1]]


def build_fcn8s(
    *,
    pretrained: str = "auto",
    weights_path: str | os.PathLike[str] | None = None,
    fc_channels: int = VGG_FC_WIDTH,
    trunk_width: int = VGG_TRUNK_WIDTH,
) -> tuple[FCN8s, WeightsInfo]:
    """An FCN-8s whose trunk starts from ImageNet VGG-16 weights when present (see `backbones`).

    `weights_path` is a torchvision VGG-16 state dict: every `features.*` key must load; its fully
    connected layers (`classifier.0`, `classifier.3`) initialise fc6/fc7 when present and of the same
    width (VGG-16's 4096, the default), and the ImageNet output layer (`classifier.6`) is ignored.
    `WeightsInfo.detail` says whether fc6/fc7 were loaded.

    A `trunk_width` other than VGG-16's 64 cannot take the ImageNet file: `auto` then trains from
    scratch and says why; `required`, `download` or a `weights_path` is refused.
    """
    if trunk_width != VGG_TRUNK_WIDTH:
        if pretrained not in PRETRAINED_MODES:
            raise ValueError(f"pretrained must be one of {', '.join(PRETRAINED_MODES)}, not {pretrained!r}")
        if pretrained in ("required", "download") or weights_path is not None:
            raise ValueError(f"ImageNet VGG-16 weights need trunk_width={VGG_TRUNK_WIDTH}, not {trunk_width}")
        info = (WeightsInfo(False, "none: trained from scratch (pretrained='none')") if pretrained == "none" else
                WeightsInfo(False, f"none: trained from scratch (a trunk of width {trunk_width} cannot take "
                                   f"VGG-16's ImageNet weights)"))
        return FCN8s(fc_channels=fc_channels, trunk_width=trunk_width), info
    state, info = find_weights("vgg16", pretrained, weights_path)
    model = FCN8s(fc_channels=fc_channels)
    if state is None:
        return model, info

    trunk = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    fc_keys = {f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}
    unexpected = [k for k in state if not k.startswith("features.") and k not in fc_keys]
    if unexpected:
        raise ValueError(f"weights do not fit VGG-16: unexpected {unexpected[:5]}")
    model.features.load_state_dict(trunk)  # strict: every VGG-16 conv layer must be there

    fc6, fc7 = model.fc6[0], model.fc7[0]
    w6, b6, w7, b7 = (state.get(f"classifier.{i}.{p}") for i in (0, 3) for p in ("weight", "bias"))
    width = fc6.out_channels
    expected = [(width, 512 * 7 * 7), (width,), (width, width), (width,)]
    fits = all(t is not None and tuple(t.shape) == e for t, e in zip((w6, b6, w7, b7), expected))
    if not fits:  # a trunk-only file, or fc6/fc7 narrower than VGG-16's 4096
        return model, replace(info, detail="trunk from VGG-16; fc6/fc7 trained from scratch")
    with torch.no_grad():
        # torchvision flattens pool5 as (C, 7, 7), so the fc6 matrix reshapes into a 7x7 convolution.
        fc6.weight.copy_(w6.view_as(fc6.weight))
        fc6.bias.copy_(b6)
        fc7.weight.copy_(w7.view_as(fc7.weight))
        fc7.bias.copy_(b7)
    return model, replace(info, detail="trunk and fc6/fc7 from VGG-16")
