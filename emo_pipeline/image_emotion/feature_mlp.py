"""A small neural network on the hand-made features (this project's addition, not the paper's).

Like `feature_gbm`, it predicts the whole 7-way distribution from every feature family of the table;
unlike the trees and the kernel ridge, it is trained on the distribution itself (soft cross-entropy,
that is the KL divergence up to a constant) and its softmax output is a distribution by construction.

- Features: the histogram families (`sqrt_families`: joint HSV, channel, hue-saturation, LBP and HOG
  histograms, all non-negative by construction) are square-rooted, which turns the L2 distances the
  network sees into Hellinger distances and lifts the many small bins; then every column is
  standardised on the training split and clipped to +-`clip_value` standard deviations, so that a
  rare extreme value cannot swamp a hidden unit.
- Network: one hidden layer of `hidden` ReLU units, dropout on the input (`input_dropout`) and on the
  hidden layer (`dropout`), a linear layer to the 7 emotion logits, softmax. The output bias starts at
  the log of the training mean distribution and the output weights at a tenth of their default, so
  training starts from the train-mean prediction.
- Training: AdamW (`weight_decay`), a one-cycle learning rate peaking at `max_lr`, `epochs` epochs of
  shuffled mini-batches of `batch_size`; the weights of the epoch with the lowest validation KL are
  kept. `members` networks are trained from different seeds (drawn from `seed`) and their logits
  averaged: the served model is one network whose hidden layer holds every member's units and whose
  output layer is the members' output layers averaged (the normalised geometric mean of their
  distributions).
- Auxiliary targets (`auxiliary_weight`): while training, a second linear layer on the hidden units
  also predicts each training image's valence and arousal (standardised on train, squared error) and
  the keyword folder it was collected under (cross-entropy), both part of the Emotion6 download. They
  add the weighted sum of those two losses to the KL loss and shape the hidden units; validation,
  the kept epoch and the served model use the emotion outputs alone, so predicting needs neither.
- Output floor: chosen on validation KL from `clip_grid` (0 always tried), as for the other feature
  models, and stored beside the model (`clip`).
- Mirror images (`mirrored`, for features that are not mirror-symmetric, as `patch_mlp`'s): the
  training images' mirror images join the training rows, and each prediction is the mean over the
  image and its mirror image.
- Only the train and validation splits take part in the fit and every choice; the test split is
  predicted once at the end.

The served model is a scikit-learn `Pipeline` (square roots of the histogram columns, standardisation,
clipping, and an `MLPRegressor` that holds the trained weights with a softmax output), so it saves
with skops, registers with MLflow's scikit-learn flavour and predicts (N, 7) distributions from the
raw feature columns like the other feature models. Training runs on the CPU in seconds: the network is
too small for a GPU to pay for the copies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import PROB_COLUMNS
from emo_pipeline.image_emotion.feature_splits import clipped_predictions, split_features
from emo_pipeline.image_emotion.features import columns_of

HISTOGRAM_FAMILIES = ("hsv_joint", "channel_histograms", "hue_saturation", "lbp", "hog")
AUXILIARY_COLUMNS = ("valence", "arousal", "keyword")  # labels columns of the auxiliary targets


@dataclass(frozen=True)
class FeatureMLPConfig:
    # Chosen on the validation splits of the real Emotion6 (split seeds 0-2) among a few settings
    # (docs/models.md): 64-512 hidden units, dropout .3-.6 and weight decay .001-.1 were within .005 of
    # each other in validation KL; 30 epochs beat 20 and 80 (the one-cycle rate then anneals near
    # where the members stop improving); square roots of the histograms lowered it by .001-.004 and
    # five members instead of one by up to .005.
    hidden: int = 128
    dropout: float = 0.5
    input_dropout: float = 0.1
    weight_decay: float = 0.01
    max_lr: float = 2e-3
    epochs: int = 30
    batch_size: int = 64
    members: int = 5
    seed: int = 0
    sqrt_families: tuple[str, ...] = HISTOGRAM_FAMILIES
    # Valence/arousal and keyword targets while training (0: the distributions alone). 1 lowered the
    # three-seed validation KL from .5031 to .5004; 0.3 gave .5011 and 2 .5003, a tie (docs/models.md).
    auxiliary_weight: float = 1.0
    clip_value: float = 6.0                            # standardised features are clipped to +-this
    clip_grid: tuple[float, ...] = metrics.CLIP_GRID   # floors tried on validation (0 always is)

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.members < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("hidden, members, epochs and batch_size must be at least 1")
        if not (0 <= self.dropout < 1 and 0 <= self.input_dropout < 1):
            raise ValueError("dropout and input_dropout must lie in [0, 1)")
        if self.weight_decay < 0 or self.auxiliary_weight < 0 or self.max_lr <= 0 or self.clip_value <= 0:
            raise ValueError("weight_decay and auxiliary_weight must be >= 0, max_lr and clip_value positive")
        if any(not 0 <= floor < 1 / len(PROB_COLUMNS) for floor in self.clip_grid):
            raise ValueError(f"clip_grid floors must lie in [0, 1/{len(PROB_COLUMNS)}), got {self.clip_grid}")


@dataclass
class FeatureMLPResult:
    model: Pipeline                      # raw feature columns -> 7-way distribution (before the floor)
    feature_columns: list[str]
    epochs_kept: list[int]               # per member: the epoch whose weights were kept (1-based)
    clip: float                          # the floor to apply to `model.predict` (metrics.clip_distribution)
    selection: pd.DataFrame              # per member: seed, epoch kept, val KL there and at the last epoch
    val_curves: np.ndarray               # (epochs, members) validation KL after each epoch
    predictions: pd.DataFrame            # image_key, split, prob_* (clipped), every image with features
    scores: dict[str, dict[str, float]]  # val, test, val_train_mean, test_train_mean -> distribution metrics
    seconds: float = 0.0


def _prepare(feature_columns: list[str], config: FeatureMLPConfig) -> Pipeline:
    """Raw feature columns -> the network's input: square roots of the histograms, standardised, clipped."""
    histograms = columns_of(feature_columns, config.sqrt_families)
    roots = ColumnTransformer([("sqrt", FunctionTransformer(np.sqrt), histograms)], remainder="passthrough",
                              verbose_feature_names_out=False)
    return Pipeline([("roots", roots), ("scale", StandardScaler()),
                     ("clip", FunctionTransformer(np.clip, kw_args={"a_min": -config.clip_value,
                                                                    "a_max": config.clip_value}))])


@dataclass(frozen=True)
class AuxiliaryTargets:
    """The training images' auxiliary targets, in the rows' order."""
    valence_arousal: np.ndarray  # (N, 2), standardised on train
    keyword: np.ndarray          # (N,) index of the image's keyword among `keywords`
    keywords: list[str]


def auxiliary_targets(labels: pd.DataFrame, image_keys: np.ndarray) -> AuxiliaryTargets:
    """Valence, arousal and keyword of `image_keys` from `labels` (as read by `sources.emotion6`)."""
    missing = [c for c in AUXILIARY_COLUMNS if c not in labels.columns]
    if missing:
        raise ValueError(f"the labels have no {', '.join(missing)} column: auxiliary_weight > 0 trains on "
                         "valence, arousal and keyword (set it to 0 to train on the distributions alone)")
    rows = labels.set_index("image_key").loc[image_keys]
    values = rows[["valence", "arousal"]].to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("valence or arousal is missing for some training images: set auxiliary_weight to 0")
    spread = values.std(axis=0)
    keywords, index = np.unique(rows["keyword"].astype(str).to_numpy(), return_inverse=True)
    return AuxiliaryTargets((values - values.mean(axis=0)) / np.where(spread > 0, spread, 1.0), index,
                            keywords.tolist())


def _train_member(Z_train: np.ndarray, Y_train: np.ndarray, Z_val: list[np.ndarray], Y_val: np.ndarray,
                  config: FeatureMLPConfig, seed: int, auxiliary: AuxiliaryTargets | None = None,
                  ) -> tuple[dict[str, np.ndarray], int, np.ndarray]:
    """One network trained on train (with `auxiliary` heads when given): the weights of its best
    validation epoch, that epoch (1-based) and the validation curve. `Z_val` holds one or more views of
    the validation images (the features, and of their mirror images), whose predictions are averaged."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Dropout(config.input_dropout), torch.nn.Linear(Z_train.shape[1], config.hidden), torch.nn.ReLU(),
        torch.nn.Dropout(config.dropout), torch.nn.Linear(config.hidden, len(PROB_COLUMNS)))
    output = net[-1]
    with torch.no_grad():  # start from the train-mean prediction
        output.bias.copy_(torch.as_tensor(np.log(np.clip(Y_train.mean(axis=0), 1e-6, None)), dtype=torch.float32))
        output.weight.mul_(0.1)
    parameters = list(net.parameters())
    if auxiliary is not None:  # valence, arousal and one logit per keyword, from the same hidden units
        auxiliary_layer = torch.nn.Linear(config.hidden, 2 + len(auxiliary.keywords))
        parameters += list(auxiliary_layer.parameters())
        A = torch.as_tensor(auxiliary.valence_arousal, dtype=torch.float32)
        K = torch.as_tensor(auxiliary.keyword, dtype=torch.long)
    X, Y = torch.as_tensor(Z_train, dtype=torch.float32), torch.as_tensor(Y_train, dtype=torch.float32)
    X_val = [torch.as_tensor(view, dtype=torch.float32) for view in Z_val]
    batches = -(-len(X) // config.batch_size)
    optimizer = torch.optim.AdamW(parameters, lr=config.max_lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.max_lr,
                                                   total_steps=config.epochs * batches)
    curve = np.empty(config.epochs)
    best: dict[str, np.ndarray] = {}
    kept = 0
    for epoch in range(config.epochs):
        net.train()
        for rows in torch.randperm(len(X), generator=generator).split(config.batch_size):
            optimizer.zero_grad()
            hidden = net[:-1](X[rows])
            loss = -(Y[rows] * torch.log_softmax(output(hidden), dim=1)).sum(dim=1).mean()
            if auxiliary is not None:
                extra = auxiliary_layer(hidden)
                loss = loss + config.auxiliary_weight * (
                    torch.nn.functional.mse_loss(extra[:, :2], A[rows])
                    + torch.nn.functional.cross_entropy(extra[:, 2:], K[rows]))
            loss.backward()
            optimizer.step()
            schedule.step()
        net.eval()
        with torch.no_grad():
            predicted = torch.stack([torch.softmax(net(view), dim=1) for view in X_val]).mean(dim=0)
            curve[epoch] = float(metrics.kl_divergence(Y_val, predicted.double().numpy()).mean())
        if curve[epoch] < curve[:epoch].min(initial=np.inf):  # ties keep the earlier epoch
            layers = {"w1": net[1].weight, "b1": net[1].bias, "w2": output.weight, "b2": output.bias}
            best = {name: tensor.detach().double().numpy().copy() for name, tensor in layers.items()}
            kept = epoch + 1
    if not best:  # every epoch's validation KL was NaN
        raise ValueError(f"the feature network of seed {seed} diverged (validation KL NaN after every epoch): "
                         "lower max_lr")
    return best, kept, curve


def _served_network(members: list[dict[str, np.ndarray]], n_features: int) -> MLPRegressor:
    """The members as one scikit-learn network: their hidden units side by side, their output layers
    averaged (so the logits are the members' mean logits), a softmax output."""
    hidden = sum(len(m["b1"]) for m in members)
    network = MLPRegressor(hidden_layer_sizes=(hidden,), activation="relu")
    network.coefs_ = [np.concatenate([m["w1"].T for m in members], axis=1),
                      np.concatenate([m["w2"].T for m in members], axis=0) / len(members)]
    network.intercepts_ = [np.concatenate([m["b1"] for m in members]), np.mean([m["b2"] for m in members], axis=0)]
    network.n_features_in_ = n_features
    network.n_layers_, network.n_outputs_, network.out_activation_ = 3, len(PROB_COLUMNS), "softmax"
    return network


def fit_feature_mlp(features: pd.DataFrame, labels: pd.DataFrame, split: pd.DataFrame,
                    config: FeatureMLPConfig = FeatureMLPConfig(), *,
                    mirrored: pd.DataFrame | None = None) -> FeatureMLPResult:
    """Fit `config.members` networks on train, keep each one's best validation epoch, choose the floor on
    validation, predict every image.

    `features`: image_key and the feature columns; `labels`: image_key and prob_* (and valence, arousal
    and keyword when `config.auxiliary_weight` > 0); `split`: image_key, split. Images without features
    are left out. `mirrored`: the same columns of each image's mirror image (for features that are not
    mirror-symmetric): the training images' mirror images are trained on as further examples with
    their image's labels, and every prediction (the kept epochs and the floor included) is the mean
    over the image and its mirror image; the served model then needs the mirror image's features too.
    """
    began = time.perf_counter()
    data = split_features(features, labels, split)
    views = [data]
    if mirrored is not None:
        views.append(split_features(mirrored[["image_key", *data.feature_columns]], labels, split))
        if any(not np.array_equal(views[1].keys[name], data.keys[name]) for name in data.keys):
            raise ValueError("the mirrored table does not hold the same images as the feature table")
    X_train = pd.concat([view.X["train"] for view in views], ignore_index=True)
    Y_train = np.concatenate([view.Y["train"] for view in views])
    prepare = _prepare(data.feature_columns, config).fit(X_train)
    auxiliary = (auxiliary_targets(labels, np.concatenate([view.keys["train"] for view in views]))
                 if config.auxiliary_weight > 0 else None)
    Z_train = prepare.transform(X_train)
    Z_val = [prepare.transform(view.X["val"]) for view in views]  # split_features: never empty
    seeds = np.random.SeedSequence(config.seed).generate_state(config.members).tolist()
    members, kept, curves = [], [], []
    for seed in seeds:
        weights, epoch, curve = _train_member(Z_train, Y_train, Z_val, data.Y["val"], config, seed, auxiliary)
        members.append(weights)
        kept.append(epoch)
        curves.append(curve)
    model = Pipeline([*prepare.steps, ("network", _served_network(members, Z_train.shape[1]))])

    grid = tuple(sorted({0.0, *config.clip_grid}))
    raw = {name: np.mean([model.predict(view.X[name]) for view in views], axis=0) if len(x)
           else np.zeros((0, len(PROB_COLUMNS))) for name, x in data.X.items()}
    clip = float(metrics.choose_clip(data.Y["val"], raw["val"], grid))
    predictions, scores = clipped_predictions(data, raw, clip)
    val_curves = np.stack(curves, axis=1)
    selection = pd.DataFrame({"member": range(config.members), "seed": seeds, "epoch_kept": kept,
                              "val_kl": [float(c[k - 1]) for c, k in zip(curves, kept)],
                              "val_kl_last_epoch": [float(c[-1]) for c in curves]})
    return FeatureMLPResult(model=model, feature_columns=data.feature_columns, epochs_kept=kept, clip=clip,
                            selection=selection, val_curves=val_curves, predictions=predictions, scores=scores,
                            seconds=time.perf_counter() - began)
