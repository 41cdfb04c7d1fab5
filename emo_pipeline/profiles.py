"""Run profiles: `demo` (the whole graph on a laptop CPU in minutes) and `paper` (the paper's sizes).

The profile comes from `EMO_PROFILE` (default `demo`); each asset's Dagster config can still override
any single value.
"""

from __future__ import annotations

import os

from emo_pipeline.emotion_models import EmotionModelConfig

PROFILES = ("demo", "paper")


def active_profile() -> str:
    profile = os.environ.get("EMO_PROFILE", "demo")
    if profile not in PROFILES:
        raise ValueError(f"EMO_PROFILE={profile!r}: choose one of {', '.join(PROFILES)}")
    return profile


# The paper: 224 px inputs, Adam 1e-4, MSE on the softmax output for distributions, batch 16; the
# small CNN at 32 px with Adam 1e-3. The demo keeps the same models at small inputs and few epochs;
# from scratch (no ImageNet weights on a laptop) a higher learning rate trains faster.
_PAPER = {
    "small_cnn": EmotionModelConfig("small_cnn", size=32, loss="mse", epochs=50, lr=1e-3, patience=8),
    "small_cnn_classifier": EmotionModelConfig("small_cnn_classifier", size=32, loss="ce", epochs=50, lr=1e-3,
                                               patience=8),
    "alexnet": EmotionModelConfig("alexnet", size=224, loss="mse", epochs=30, lr=1e-4),
    "alexnet_classifier": EmotionModelConfig("alexnet_classifier", size=224, loss="ce", epochs=30, lr=1e-4),
    "vgg19_bn": EmotionModelConfig("vgg19_bn", size=224, loss="mse", epochs=30, lr=1e-4),
    "resnet101": EmotionModelConfig("resnet101", size=224, loss="mse", epochs=30, lr=1e-4),
    "resnet18": EmotionModelConfig("resnet18", size=224, loss="mse", epochs=30, lr=1e-4),
}
_DEMO = {
    "small_cnn": EmotionModelConfig("small_cnn", size=32, loss="mse", epochs=15, lr=1e-3, patience=4),
    "small_cnn_classifier": EmotionModelConfig("small_cnn_classifier", size=32, loss="ce", epochs=15, lr=1e-3,
                                               patience=4),
    "resnet18": EmotionModelConfig("resnet18", size=64, loss="mse", epochs=8, lr=1e-3, patience=3),
    # The paper's large models: their fully connected layers (58M-139M parameters) dominate on a CPU,
    # so the demo only shows them training for an epoch or two at the smallest input they accept.
    "alexnet": EmotionModelConfig("alexnet", size=64, loss="mse", epochs=2, lr=1e-4, patience=2),
    "alexnet_classifier": EmotionModelConfig("alexnet_classifier", size=64, loss="ce", epochs=2, lr=1e-4,
                                             patience=2),
    "vgg19_bn": EmotionModelConfig("vgg19_bn", size=32, loss="mse", epochs=1, lr=1e-4, patience=1),
    "resnet101": EmotionModelConfig("resnet101", size=64, loss="mse", epochs=2, lr=1e-3, patience=2),
}
EMOTION_MODELS: dict[str, dict[str, EmotionModelConfig]] = {"paper": _PAPER, "demo": _DEMO}

# Models that predict the dominant emotion (cross-entropy) rather than the distribution.
CLASSIFIERS = ("small_cnn_classifier", "alexnet_classifier")


def emotion_model_config(name: str, profile: str | None = None) -> EmotionModelConfig:
    return EMOTION_MODELS[profile or active_profile()][name]
