"""Run profiles: `demo` (the whole graph on a laptop CPU in minutes) and `paper` (the paper's sizes).

The profile comes from `EMO_PROFILE` (default `demo`); each asset's Dagster config can still override
any single value.
"""

from __future__ import annotations

import os
from dataclasses import replace

from emo_pipeline.core.train_loop import TrainConfig
from emo_pipeline.image_emotion.esm import ESMConfig, ESMResNetConfig
from emo_pipeline.image_emotion.training import EmotionModelConfig
from emo_pipeline.objects.emotion_to_objects import MLPConfig
from emo_pipeline.objects.objects_to_emotion import FAMILIES as OBJECT_FAMILIES
from emo_pipeline.objects.objects_to_emotion import ObjectEmotionConfig

PROFILES = ("demo", "paper")


def active_profile() -> str:
    profile = os.environ.get("EMO_PROFILE", "demo")
    if profile not in PROFILES:
        raise ValueError(f"EMO_PROFILE={profile!r}: choose one of {', '.join(PROFILES)}")
    return profile


# The paper: 224 px inputs, Adam 1e-4, MSE on the softmax output for distributions, batch 16; the
# small CNN at 32 px with Adam 1e-3. The demo keeps the same models at small inputs and few epochs;
# from scratch (no ImageNet weights on a laptop) a higher learning rate trains faster.
#
# Both profiles also use two additions that are not the paper's (EmotionModelConfig's defaults, see
# emo_pipeline.image_emotion.training): the output layer starts at the train-mean distribution
# (output_bias="train_mean", zero output weights), and a floor on the predicted probabilities is
# chosen on validation (clip_grid). Neither changes the architecture, the loss or the input size,
# and the floor never makes validation KL worse, so a user of the paper profile wants them too; to
# reproduce the paper's exact procedure set output_bias="default" and clip_grid=(0.0,).
_PAPER = {
    "small_cnn": EmotionModelConfig("small_cnn", size=32, loss="mse",
        training=TrainConfig(epochs=50, lr=1e-3, patience=8)),
    "small_cnn_classifier": EmotionModelConfig("small_cnn_classifier", size=32, loss="ce",
        training=TrainConfig(epochs=50, lr=1e-3, patience=8)),
    "alexnet": EmotionModelConfig("alexnet", size=224, loss="mse", training=TrainConfig(epochs=30, lr=1e-4)),
    "alexnet_classifier": EmotionModelConfig("alexnet_classifier", size=224, loss="ce",
        training=TrainConfig(epochs=30, lr=1e-4)),
    "vgg19_bn": EmotionModelConfig("vgg19_bn", size=224, loss="mse", training=TrainConfig(epochs=30, lr=1e-4)),
    "resnet101": EmotionModelConfig("resnet101", size=224, loss="mse", training=TrainConfig(epochs=30, lr=1e-4)),
    "resnet18": EmotionModelConfig("resnet18", size=224, loss="mse", training=TrainConfig(epochs=30, lr=1e-4)),
}
_DEMO = {
    # Chosen on validation of the real Emotion6 (split seeds 0-2): with 25 epochs the small CNN's
    # validation loss was still improving after epoch 15 on two of three splits (mean validation KL
    # .5375 against .5428 for 15 epochs with the default initialisation and no floor; on test the two
    # are within split noise). About two minutes on two CPU cores. 48 and 64 px inputs and the KL loss
    # did worse on validation within a demo's budget (KL overfits after 3-5 epochs), so it keeps the
    # paper's 32 px and MSE.
    "small_cnn": EmotionModelConfig("small_cnn", size=32, loss="mse",
        training=TrainConfig(epochs=25, lr=1e-3, patience=6)),
    "small_cnn_classifier": EmotionModelConfig("small_cnn_classifier", size=32, loss="ce",
        training=TrainConfig(epochs=15, lr=1e-3, patience=4)),
    "resnet18": EmotionModelConfig("resnet18", size=64, loss="mse",
        training=TrainConfig(epochs=8, lr=1e-3, patience=3)),
    # The paper's large models: their fully connected layers (58M-139M parameters) dominate on a CPU,
    # so the demo only shows them training for an epoch or two at the smallest input they accept.
    "alexnet": EmotionModelConfig("alexnet", size=64, loss="mse", training=TrainConfig(epochs=2, lr=1e-4, patience=2)),
    "alexnet_classifier": EmotionModelConfig("alexnet_classifier", size=64, loss="ce",
        training=TrainConfig(epochs=2, lr=1e-4, patience=2)),
    "vgg19_bn": EmotionModelConfig("vgg19_bn", size=32, loss="mse",
        training=TrainConfig(epochs=1, lr=1e-4, patience=1)),
    "resnet101": EmotionModelConfig("resnet101", size=64, loss="mse",
        training=TrainConfig(epochs=2, lr=1e-3, patience=2)),
}
EMOTION_MODELS: dict[str, dict[str, EmotionModelConfig]] = {"paper": _PAPER, "demo": _DEMO}

# Models that predict the dominant emotion (cross-entropy) rather than the distribution.
CLASSIFIERS = ("small_cnn_classifier", "alexnet_classifier")


def emotion_model_config(name: str, profile: str | None = None) -> EmotionModelConfig:
    return EMOTION_MODELS[profile or active_profile()][name]


# --- Emotion stimuli map models (group `esm`) ---------------------------------------------------------
# FCN-8s on EmotionROI at the paper's two sides, 32 and 64 px. Paper: VGG-16's full width (ImageNet
# weights when present), Adam 1e-4, MSE. Demo: a trunk a quarter as wide (1/16 of the computation) and
# narrow fc6/fc7, from scratch, where 3e-4 learns within the epochs a laptop affords and 1e-3 drives
# the sigmoid into saturation. The ESM-ResNet reads the 64 px FCN's maps in both profiles.
ESM_SIZES = (32, 64)
_ESM_PAPER = {f"esm_fcn8s_{size}": ESMConfig(size=size,
    training=TrainConfig(epochs=50, batch_size=16, lr=1e-4, patience=8))
              for size in ESM_SIZES}
_ESM_DEMO = {f"esm_fcn8s_{size}": ESMConfig(size=size, trunk_width=16, fc_channels=128,
    training=TrainConfig(epochs=30, batch_size=8, lr=3e-4, patience=8))
             for size in ESM_SIZES}
ESM_MODELS: dict[str, dict[str, ESMConfig]] = {"paper": _ESM_PAPER, "demo": _ESM_DEMO}
ESM_RESNET: dict[str, ESMResNetConfig] = {
    "paper": ESMResNetConfig(arch="resnet101", size=224, esm_model="esm_fcn8s_64",
        training=TrainConfig(epochs=30, lr=1e-4)),
    "demo": ESMResNetConfig(arch="resnet18", size=64, esm_model="esm_fcn8s_64",
        training=TrainConfig(epochs=8, lr=1e-3, patience=3)),
}


def esm_model_config(name: str, profile: str | None = None) -> ESMConfig:
    return ESM_MODELS[profile or active_profile()][name]


def esm_resnet_config(profile: str | None = None) -> ESMResNetConfig:
    return ESM_RESNET[profile or active_profile()]


# --- Objects <-> emotions (group `objects`) ----------------------------------------------------------
# Objects -> emotion on GloVe: the paper gives no training settings; Adam with early stopping on the
# validation split. Emotion -> objects MLP: the paper's Adagrad settings and 50 epochs; the demo's
# 20 epochs cover most of the validation-loss drop on the synthetic world (still improving slowly).
_OBJECT_EMOTION_PAPER = {family: ObjectEmotionConfig(family=family, hidden=128, max_tokens=200,
    training=TrainConfig(epochs=50, batch_size=64, lr=1e-3, patience=8))
                         for family in OBJECT_FAMILIES}
_OBJECT_EMOTION_DEMO = {family: ObjectEmotionConfig(family=family, hidden=64, max_tokens=80,
    training=TrainConfig(epochs=60, batch_size=32, lr=1e-2, patience=10))
                        for family in OBJECT_FAMILIES}
OBJECT_EMOTION: dict[str, dict[str, ObjectEmotionConfig]] = {"paper": _OBJECT_EMOTION_PAPER,
                                                             "demo": _OBJECT_EMOTION_DEMO}
EMOTION_OBJECTS_MLP: dict[str, MLPConfig] = {
    "paper": MLPConfig(vocabulary_size=1000, training=replace(MLPConfig().training, epochs=50, batch_size=64)),
    "demo": MLPConfig(vocabulary_size=1000, training=replace(MLPConfig().training, epochs=20, batch_size=32)),
}


def object_emotion_config(family: str, profile: str | None = None) -> ObjectEmotionConfig:
    return OBJECT_EMOTION[profile or active_profile()][family]


def emotion_objects_mlp_config(profile: str | None = None) -> MLPConfig:
    return EMOTION_OBJECTS_MLP[profile or active_profile()]
