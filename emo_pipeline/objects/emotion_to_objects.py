"""Emotion -> objects (paper §3.6): which objects an emotion distribution calls for.

Two rankers, both trained on the training images of a data set (A or B) with their distributions and
objects:

- The score baseline, in DuckDB SQL over the per-object tables: score(e, o) = sum over images of
  count(o in i) * d_e(i), i.e. the sum of d_e over the object's rows; final(e, o) = score(e, o) minus
  its mean over the 7 emotions; a distribution d ranks objects by sum_e d_e * final(e, o).
- The paper's MLP: 7 -> 500 -> 2000 -> 1500 -> N objects with sigmoid outputs, trained with
  cross-entropy against a normalised object vector per image (`NORMALISATIONS`: the paper's count
  divided by the object's training count, and the variants it lists).

Both are judged, with a most-frequent-objects baseline beside them, by the ranking metrics in
`emo_pipeline.objects.ranking` against each test image's true objects, and by the same validation
loss (`validation_losses`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn
from torch.utils.data import Dataset

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.train_loop import TrainConfig, TrainResult, seed_everything, train
from emo_pipeline.models.emotion_objects_mlp import EmotionObjectMLP
from emo_pipeline.objects.ranking import ranking_metrics

# The per-object table and the key of its images, per data set.
OBJECT_TABLES = {"a": ("dataset_a_objects", "image_key"), "b": ("dataset_b_objects", "image_id")}

def distribution_vector(weights: Mapping[str, float]) -> np.ndarray:
    """A 7-way distribution from {emotion: weight}: missing emotions are 0, the rest renormalised.

    A name that is not one of the 7 emotions, a negative, non-finite or all-zero weight is a clear error.
    """
    unknown = sorted(set(weights) - set(EMOTIONS))
    if unknown:
        raise ValueError(f"unknown emotion(s) {', '.join(map(repr, unknown))}: choose from {', '.join(EMOTIONS)}")
    vector = np.array([float(weights.get(e, 0.0)) for e in EMOTIONS])
    bad = [f"{e}={v:g}" for e, v in zip(EMOTIONS, vector) if not np.isfinite(v) or v < 0]
    if bad:
        raise ValueError(f"emotion weights must be finite and non-negative, got {', '.join(bad)}")
    if vector.sum() <= 0:
        raise ValueError("give at least one emotion a positive weight (e.g. --joy 1)")
    return vector / vector.sum()


# --- The score baseline, in SQL ------------------------------------------------------------------
def score_sql(objects: str, key: str, keys_table: str | None = None) -> str:
    """SQL for one row per (emotion, object): occurrences, score and final.

    One scan and one GROUP BY over the object rows: the image's distribution already sits on each
    row, so no join is needed (a count of distinct images per object would cost more than the rest).

    `objects` is a relation with columns (`key`, object, anger ... neutral), one row per object
    occurrence; with `keys_table`, only the images whose `key` it lists are counted (a training split).
    """
    sums = ", ".join(f"sum({e}) AS {e}" for e in EMOTIONS)
    where = f"WHERE {key} IN (SELECT {key} FROM {keys_table})" if keys_table else ""
    return f"""
        WITH per_object AS (
            SELECT object, count(*) AS occurrences, {sums}
            FROM {objects} {where} GROUP BY object),
        long AS (
            UNPIVOT per_object ON {', '.join(EMOTIONS)} INTO NAME emotion VALUE score)
        SELECT emotion, object, occurrences, score,
               score - avg(score) OVER (PARTITION BY object) AS final
        FROM long"""


def score_objects(con: duckdb.DuckDBPyConnection, dataset: str,
                          train_keys: Sequence | None = None) -> pd.DataFrame:
    """The score table of data set `dataset` ("a" or "b"), over all images or only `train_keys`.

    `con` sees the dataset tables as views (`Warehouse.connect_scratch`). Rows are sorted by emotion
    (in EMOTIONS order), then by final score, highest first.
    """
    table, key = OBJECT_TABLES[dataset]
    keys_table = None
    if train_keys is not None:
        con.register("_train_keys", pd.DataFrame({key: list(train_keys)}))
        keys_table = "_train_keys"
    try:
        frame = con.execute(score_sql(table, key, keys_table)).fetchdf()
    finally:
        if keys_table:
            con.unregister(keys_table)
    frame["emotion"] = pd.Categorical(frame["emotion"], categories=list(EMOTIONS))
    frame = frame.sort_values(["emotion", "final", "object"], ascending=[True, False, True], ignore_index=True)
    frame["emotion"] = frame["emotion"].astype(str)
    return frame


def ranking_sql(scores: str, distribution: np.ndarray, k: int, dataset: str | None = None) -> str:
    """SQL ranking the objects of a score table for one distribution: sum_e d_e * final(e, o)."""
    weight = " ".join(f"WHEN '{e}' THEN {float(w)!r}" for e, w in zip(EMOTIONS, distribution))
    where = f"WHERE dataset = '{dataset}'" if dataset else ""
    return f"""
        SELECT object, sum(final * CASE emotion {weight} ELSE 0 END) AS score, max(occurrences) AS occurrences
        FROM {scores} {where}
        GROUP BY object ORDER BY score DESC, object LIMIT {int(k)}"""


def final_matrix(scores: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """(7, N) final scores with the N objects in name order, from a score table."""
    wide = scores.pivot(index="object", columns="emotion", values="final").reindex(columns=list(EMOTIONS))
    return wide.to_numpy(dtype=float).T, list(wide.index)


def rank_by_scores(distributions: np.ndarray, final: np.ndarray, k: int) -> np.ndarray:
    """(n, k) column indices of the k best objects for each distribution row, best first."""
    return top_k(np.asarray(distributions, dtype=float) @ final, k)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of each row's k highest scores, highest first (ties by lower index)."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


# --- The MLP's targets (paper §3.6.2) ------------------------------------------------------------------
# The paper: "The ground truth output is a vector where the confidence rating is the object occurrence
# count in the image divided by the total object occurrence count in the training set. [...] Other forms
# of normalization were also tried, including: dividing by the square root or log of the total
# occurrence count, dividing by the average occurrence count per image that contains the object,
# multiplying by (the square root, or log of) the area of each object bounding box."
#
# For object o in image i, with c = count(o in i), N = o's occurrences in the training images, n = the
# training images that hold o, and a_b the area of one of o's boxes b in i:
PAPER_NORMALISATIONS = {
    "inverse_total_count": "c / N",
    "inverse_sqrt_count": "c / sqrt(N)",
    "inverse_log_count": "c / log(1 + N)",
    "inverse_mean_count": "c / (N / n)",
    "times_area": "sum over b of a_b, / N",
    "times_sqrt_area": "sum over b of sqrt(a_b), / N",
    "times_log_area": "sum over b of log(1 + a_b), / N",
}
# Not the paper's: a per-image share, sqrt(c / C) with C the number of object rows in i (all objects,
# in the vocabulary or not); it needs no corpus statistic. Kept because it earned its place on
# validation: over datasets A and B of three synthetic demo worlds (seeds 3, 5, 11; demo profile), its
# mean validation nDCG@10 was A .588 and B .674, against .577 (inverse_mean_count) and .652
# (inverse_log_count), the best of the paper's seven on each, and it was ahead of the best of them in
# 4 of the 6 runs; the paper's own c / N scored .247 and .368. Other per-image shares tried (c / C,
# log(1 + c) / log(1 + C), 1 / the distinct objects in i, the share of i's box area) were dropped:
# none was ahead of it on average by more than .001.
OTHER_NORMALISATIONS = {"sqrt_image_share": "sqrt(c / C)"}
NORMALISATION_FORMULAS = {**PAPER_NORMALISATIONS, **OTHER_NORMALISATIONS}
NORMALISATIONS = tuple(NORMALISATION_FORMULAS)
# What the paper leaves open in its seven, and what was chosen:
# - N, n and the scale below come from the training split only: held-out images change no target.
# - log(1 + N), not log N: an object seen once in training would otherwise divide by log 1 = 0; for the
#   frequent objects that fill a vocabulary the two differ by less than 1/N.
# - "Multiplying by the area": each occurrence counts its box's area instead of 1, and the division by
#   N stays (for boxes of one size a, that is a * c / N: the paper's target times the area). The paper
#   lists these as variants of the count / total-count target and does not say the division goes.
# - The area is the box's w * h in pixels, as the object tables store it: the paper says "the area of
#   each object bounding box", and dataset A's object table has no image size to make it a share.
#   log(1 + a) keeps a degenerate zero-size box at 0 rather than minus infinity.
# - A sigmoid output, and the cross-entropy against it, need targets in [0, 1]. c / N is (c <= N on a
#   training image); the others can exceed 1, so their targets are divided by their largest training
#   value when that exceeds 1: one constant per normalisation, so the ratios between objects and
#   images stay the paper's. A held-out image can still exceed 1 (an object more often in it than in
#   the whole training split, a box larger than any in training); its target is clipped to 1.
AREA_NORMALISATIONS = {"times_area": lambda a: a, "times_sqrt_area": np.sqrt, "times_log_area": np.log1p}


def object_vocabulary(objects: pd.DataFrame, train_keys: Sequence, size: int) -> list[str]:
    """The `size` objects found in the most training images (ties by name); `objects` has key, object."""
    train = objects[objects["key"].isin(set(train_keys))]
    images = train.groupby("object")["key"].nunique()
    ranked = images.reset_index().sort_values(["key", "object"], ascending=[False, True])
    return ranked["object"].head(size).tolist()


@dataclass(frozen=True)
class TargetNormaliser:
    """What a normalisation takes from the training split: a divisor per vocabulary object, one scale."""

    normalisation: str
    vocabulary: tuple[str, ...]
    divisor: np.ndarray     # (len(vocabulary),) N, sqrt(N), log(1 + N), N / n (1 for the image share)
    scale: float            # the largest training value of numerator / divisor when above 1, else 1


def _numerators(objects: pd.DataFrame, keys: Sequence, vocabulary: Sequence[str],
                normalisation: str) -> pd.DataFrame:
    """key, object, value: c (or the sum of the area function over o's boxes, or sqrt(c / C)) per image
    and object of the vocabulary."""
    frame = objects[objects["key"].isin(set(keys))]
    rows_per_image = frame.groupby("key").size()
    frame = frame[frame["object"].isin(set(vocabulary))]
    if normalisation in AREA_NORMALISATIONS:
        area = frame["w"].astype(float) * frame["h"].astype(float)
        if area.isna().any():
            row = frame[area.isna()].iloc[0]
            raise ValueError(f"{int(area.isna().sum())} object rows have no box size (w, h), e.g. image "
                             f"{row['key']} object {row['object']!r}: {normalisation} needs every box's area")
        value = AREA_NORMALISATIONS[normalisation](area.clip(lower=0).to_numpy())
    else:
        value = np.ones(len(frame))
    summed = (frame[["key", "object"]].assign(value=value)
              .groupby(["key", "object"], sort=False, observed=True)["value"].sum().reset_index())
    if normalisation == "sqrt_image_share":
        summed["value"] = np.sqrt(summed["value"] / summed["key"].map(rows_per_image).to_numpy(float))
    return summed


def fit_target_normaliser(objects: pd.DataFrame, train_keys: Sequence, vocabulary: Sequence[str],
                          normalisation: str) -> TargetNormaliser:
    """The divisors and scale of `normalisation` (see NORMALISATIONS), from the training images' rows.

    `objects` has one row per object occurrence: key, object and (for the area ones) w, h. Every
    vocabulary object must occur in the training images (`object_vocabulary` picks them there).
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation {normalisation!r}: choose one of {', '.join(NORMALISATIONS)}")
    train_keys = set(train_keys)
    train = objects[objects["key"].isin(train_keys)]
    stats = train.groupby("object").agg(total=("key", "size"), images=("key", "nunique"))
    stats = stats.reindex(list(vocabulary))
    unseen = stats.index[stats["total"].isna()].tolist()
    if unseen:
        raise ValueError(f"{len(unseen)} vocabulary objects never occur in the training images "
                         f"({', '.join(map(repr, unseen[:5]))}): no training count to divide by")
    total, images = stats["total"].to_numpy(float), stats["images"].to_numpy(float)
    divisor = {"inverse_sqrt_count": np.sqrt(total), "inverse_log_count": np.log1p(total),
               "inverse_mean_count": total / images, "sqrt_image_share": np.ones_like(total)
               }.get(normalisation, total)
    numerators = _numerators(train, train_keys, vocabulary, normalisation)
    column = {o: j for j, o in enumerate(vocabulary)}
    values = numerators["value"].to_numpy() / divisor[numerators["object"].map(column).to_numpy()]
    scale = max(1.0, float(values.max())) if len(values) else 1.0
    return TargetNormaliser(normalisation, tuple(vocabulary), divisor, scale)


def object_targets(objects: pd.DataFrame, keys: Sequence, normaliser: TargetNormaliser) -> sp.csr_matrix:
    """(len(keys), vocabulary) sparse targets in [0, 1] for the images `keys`, row i for keys[i]."""
    row_of = {k: i for i, k in enumerate(keys)}
    column = {o: j for j, o in enumerate(normaliser.vocabulary)}
    numerators = _numerators(objects, keys, normaliser.vocabulary, normaliser.normalisation)
    columns = numerators["object"].map(column).to_numpy()
    value = np.minimum(numerators["value"].to_numpy() / normaliser.divisor[columns] / normaliser.scale, 1.0)
    return sp.csr_matrix((value.astype(np.float32), (numerators["key"].map(row_of).to_numpy(), columns)),
                         shape=(len(keys), len(normaliser.vocabulary)))


def split_keys(inputs: pd.DataFrame, split: pd.DataFrame, parts: Sequence[str]) -> dict[str, np.ndarray]:
    """The keys of `inputs` in each split part, in the order of `inputs`."""
    which = inputs[["key"]].merge(split, on="key", how="left")["split"].to_numpy()
    return {part: inputs["key"].to_numpy()[which == part] for part in parts}


def target_matrices(objects: pd.DataFrame, keys: Mapping[str, Sequence], vocabulary: Sequence[str],
                    normalisation: str) -> tuple[TargetNormaliser, dict[str, sp.csr_matrix]]:
    """The normaliser fitted on `keys["train"]` and the targets of every part of `keys`."""
    normaliser = fit_target_normaliser(objects, keys["train"], vocabulary, normalisation)
    return normaliser, {part: object_targets(objects, k, normaliser) for part, k in keys.items()}


class DistributionTargets(Dataset):
    """(distribution, dense target row) pairs from a dense input array and sparse targets."""

    def __init__(self, distributions: np.ndarray, targets: sp.csr_matrix):
        self.x = torch.as_tensor(np.asarray(distributions, dtype=np.float32))
        self.y = targets.tocsr().astype(np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], torch.from_numpy(self.y[i].toarray()[0])


# --- The MLP (emo_pipeline.models.emotion_objects_mlp) ------------------------------------------------
@dataclass(frozen=True)
class MLPConfig:
    """The paper: Adagrad lr 0.005 with lr decay 0.01, 50 epochs, cross-entropy on sigmoid outputs, a
    last layer FC(1500, 1500), i.e. 1,500 objects (profile `paper`)."""

    normalisation: str = "inverse_total_count"
    vocabulary_size: int = 1500
    # The paper trains all epochs: a patience of 50 never stops early, and the best validation epoch is kept.
    training: TrainConfig = TrainConfig(epochs=50, batch_size=64, lr=0.005, lr_decay=0.01, patience=50,
                                     optimizer="adagrad")
    dropout: float = 0.5
    hidden: tuple[int, int, int] = (500, 2000, 1500)
    # The paper does not say how its network starts. By default the output layer's bias starts at the
    # logit of each object's mean training target (`EmotionObjectMLP.start_outputs_at`); what it did on
    # the demo world: docs/models.md, "Results after `make demo`".
    bias_start: bool = True

    def __post_init__(self):
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation {self.normalisation!r}: choose one of {', '.join(NORMALISATIONS)}")
        if self.vocabulary_size < 1:
            raise ValueError(f"vocabulary_size must be at least 1, got {self.vocabulary_size}")


@dataclass
class MLPData:
    """What the MLP trains on: the vocabulary, the normaliser and the targets, from the training split."""

    vocabulary: list[str]
    normaliser: TargetNormaliser
    keys: dict[str, np.ndarray]
    targets: dict[str, sp.csr_matrix]


def mlp_data(inputs: pd.DataFrame, objects: pd.DataFrame, split: pd.DataFrame, config: MLPConfig,
             parts: Sequence[str] = ("train", "val")) -> MLPData:
    """The vocabulary (the training split's `vocabulary_size` objects found in the most images) and the
    targets of each part; every statistic comes from the training images, whatever `parts` holds."""
    keys = split_keys(inputs, split, ("train", *[p for p in parts if p != "train"]))
    if len(keys["train"]) == 0 or any(len(keys[p]) == 0 for p in parts):
        raise ValueError("the split needs images in each part: "
                         + ", ".join(f"{len(k)} {p}" for p, k in keys.items()))
    vocabulary = object_vocabulary(objects, keys["train"], config.vocabulary_size)
    normaliser, targets = target_matrices(objects, keys, vocabulary, config.normalisation)
    return MLPData(vocabulary, normaliser, keys, targets)


@dataclass
class FittedMLP:
    model: EmotionObjectMLP
    config: MLPConfig
    vocabulary: list[str]
    normaliser: TargetNormaliser
    result: TrainResult


def fit_emotion_object_mlp(inputs: pd.DataFrame, objects: pd.DataFrame, split: pd.DataFrame, config: MLPConfig,
                           checkpoint_dir: Path, *, device: torch.device | str = "cpu",
                           log: Callable[[str], None] = print) -> FittedMLP:
    """Train the MLP from each image's distribution (`inputs`: key, prob_*) to its normalised objects.

    `objects` has one row per object occurrence (key, object, w, h); `split` maps key to train/val/test.
    """
    data = mlp_data(inputs, objects, split, config)
    distributions = inputs.set_index("key")[list(PROB_COLUMNS)]
    sets = {part: DistributionTargets(distributions.loc[data.keys[part]].to_numpy(), data.targets[part])
            for part in ("train", "val")}
    seed_everything(config.training.seed)
    model = EmotionObjectMLP(len(data.vocabulary), config.hidden, config.dropout)
    if config.bias_start:
        model.start_outputs_at(torch.from_numpy(np.asarray(data.targets["train"].mean(axis=0)).ravel()))
    log(f"emotion -> objects MLP ({config.normalisation}): {len(data.keys['train'])} train images, "
        f"{len(data.vocabulary)} objects, target scale {data.normaliser.scale:.4g}")
    result = train(model, sets["train"], sets["val"], nn.functional.binary_cross_entropy, config.training,
                   checkpoint_dir, device=device, log=log)
    return FittedMLP(model.cpu().eval(), config, data.vocabulary, data.normaliser, result)


@torch.inference_mode()
def mlp_scores(model: EmotionObjectMLP, distributions: np.ndarray) -> np.ndarray:
    """(n, N) the MLP's sigmoid output per distribution row."""
    return model.eval()(torch.as_tensor(np.asarray(distributions, dtype=np.float32))).numpy()


# --- Evaluation ----------------------------------------------------------------------------------------
@dataclass
class RankingEvaluation:
    table: pd.DataFrame                 # method, normalisation, k, precision, recall, ndcg, images
    keys: list                          # the evaluated images, in order
    truth: list[set[str]]               # each image's objects
    ranked: dict[str, list[list[str]]]  # method label -> each image's top objects


def object_rows(con: duckdb.DuckDBPyConnection, dataset: str) -> pd.DataFrame:
    """key, object, w, h: one row per object occurrence of data set `dataset` ("a" or "b")."""
    table, key = OBJECT_TABLES[dataset]
    return con.execute(f"SELECT {key} AS key, object, w, h FROM {table} ORDER BY ALL").fetchdf()


def evaluate_rankers(inputs: pd.DataFrame, objects: pd.DataFrame, split: pd.DataFrame, train_scores: pd.DataFrame,
                     mlps: Mapping[str, tuple[nn.Module, Sequence[str]]] | None = None,
                     ks: Sequence[int] = (5, 10, 15), part: str = "test") -> RankingEvaluation:
    """Rank objects for the distribution of every image of split `part` and score the lists against
    its true objects.

    Methods: `score_baseline` (scores from the training images only), `most_frequent` (the objects in
    the most training images, the same list for every image) and `mlp` for each entry of `mlps`
    (normalisation -> (model, its vocabulary)). `objects` has key and object columns.
    """
    chosen = split.loc[split["split"] == part, "key"]
    rows_of = inputs[inputs["key"].isin(set(chosen))]
    keys = rows_of["key"].tolist()
    present = objects.groupby("key")["object"].agg(set)
    truth = [present.get(k, set()) for k in keys]
    distributions = rows_of[list(PROB_COLUMNS)].to_numpy(dtype=float)
    depth = max(ks)

    ranked: dict[str, list[list[str]]] = {}
    final, names = final_matrix(train_scores)
    ranked["score_baseline"] = [[names[j] for j in row] for row in rank_by_scores(distributions, final, depth)]
    frequent = object_vocabulary(objects, split.loc[split["split"] == "train", "key"], depth)
    ranked["most_frequent"] = [frequent] * len(keys)
    for normalisation, (model, vocabulary) in (mlps or {}).items():
        order = top_k(mlp_scores(model, distributions), depth)
        ranked[f"mlp:{normalisation}"] = [[vocabulary[j] for j in row] for row in order]

    rows = []
    for label, lists in ranked.items():
        method, _, normalisation = label.partition(":")
        for k in ks:
            rows.append({"method": method, "normalisation": normalisation, "k": k,
                         **ranking_metrics(lists, truth, k)})
    return RankingEvaluation(pd.DataFrame(rows), keys, truth, ranked)


# --- Validation loss of the score baseline beside the MLP's (paper Fig. 14) ---------------------------
# The paper gives a validation loss for both (Fig. 14) but not how the baseline's ranking scores became
# a loss. Here both are judged by the MLP's own loss: the mean binary cross-entropy against the
# normalised targets of the validation images. The baseline's score s(o) = sum_e d_e * final(e, o) is
# unbounded, so it becomes a prediction in [0, 1] by sigmoid(slope * s + intercept), the two numbers
# fitted to the training images' targets by the same loss. The slope is kept at 0 or above, so the
# baseline ranks exactly as before; the map only learns how large its targets are.
CALIBRATION_IMAGES = 5000   # training images the two numbers are fitted on (a seeded sample when more)
LOSS_CHUNK = 2048           # images per block when the loss is summed, so memory stays bounded


def mean_cross_entropy(predict: Callable[[np.ndarray], np.ndarray], distributions: np.ndarray,
                       targets: sp.spmatrix) -> float:
    """The mean binary cross-entropy over every (image, object) cell, as `binary_cross_entropy` computes
    it in training (its logs are clamped at -100); `predict` maps distribution rows to (rows, N) outputs."""
    targets = sp.csr_matrix(targets)
    total = 0.0
    for start in range(0, len(distributions), LOSS_CHUNK):
        stop = start + LOSS_CHUNK
        p = torch.as_tensor(np.asarray(predict(distributions[start:stop]), dtype=np.float32))
        t = torch.as_tensor(targets[start:stop].toarray(), dtype=torch.float32)
        total += float(nn.functional.binary_cross_entropy(p, t, reduction="sum"))
    return total / max(targets.shape[0] * targets.shape[1], 1)


def baseline_object_scores(distributions: np.ndarray, train_scores: pd.DataFrame,
                           vocabulary: Sequence[str]) -> np.ndarray:
    """(n, len(vocabulary)) the score baseline's sum_e d_e * final(e, o), 0 for an object it never saw."""
    final, names = final_matrix(train_scores)
    index = {o: j for j, o in enumerate(names)}
    columns = np.zeros((len(EMOTIONS), len(vocabulary)))
    for j, o in enumerate(vocabulary):
        if o in index:
            columns[:, j] = final[:, index[o]]
    return np.asarray(distributions, dtype=float) @ columns


@dataclass(frozen=True)
class Calibration:
    """sigmoid(slope * (score - centre) / spread + intercept): the baseline's scores as predictions."""

    slope: float
    intercept: float
    centre: float
    spread: float

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        z = self.slope * (np.asarray(scores, dtype=float) - self.centre) / self.spread + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


def fit_calibration(scores: np.ndarray, targets: sp.spmatrix, seed: int = 0) -> Calibration:
    """The slope (at least 0, so the ranking is kept) and intercept minimising the cross-entropy of
    sigmoid(slope * s + intercept) against `targets`, on at most CALIBRATION_IMAGES rows (a seeded sample)."""
    rows = np.arange(len(scores))
    if len(rows) > CALIBRATION_IMAGES:
        rows = np.sort(np.random.default_rng(seed).choice(rows, CALIBRATION_IMAGES, replace=False))
    s, t = np.asarray(scores, dtype=float)[rows], sp.csr_matrix(targets)[rows].toarray()
    centre, spread = float(s.mean()), float(s.std()) or 1.0
    x, y = torch.as_tensor((s - centre) / spread), torch.as_tensor(t, dtype=torch.float64)
    mean = float(np.clip(t.mean(), 1e-9, 1 - 1e-9))
    params = torch.tensor([0.0, np.log(mean / (1 - mean))], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    slope, intercept = (float(v) for v in params.detach())
    if slope < 0:
        # Scores that run against the targets: a falling map would reverse the baseline's ranking, so the
        # best map that keeps it is flat, at the mean target.
        slope, intercept = 0.0, float(np.log(mean / (1 - mean)))
    return Calibration(slope, intercept, centre, spread)


def validation_losses(inputs: pd.DataFrame, objects: pd.DataFrame, split: pd.DataFrame, train_scores: pd.DataFrame,
                      mlps: Mapping[str, tuple[nn.Module, Sequence[str]]], part: str = "val") -> pd.DataFrame:
    """normalisation, images, objects, mlp_loss, baseline_loss: for each entry of `mlps` (normalisation ->
    (model, its vocabulary)), the MLP's and the calibrated score baseline's mean cross-entropy against
    that normalisation's targets of split `part`, both over the MLP's vocabulary."""
    keys = split_keys(inputs, split, ("train", part))
    distributions = inputs.set_index("key")[list(PROB_COLUMNS)]
    d = {p: distributions.loc[k].to_numpy(dtype=float) for p, k in keys.items()}
    rows = []
    for normalisation, (model, vocabulary) in mlps.items():
        _, targets = target_matrices(objects, keys, vocabulary, normalisation)
        calibration = fit_calibration(baseline_object_scores(d["train"], train_scores, vocabulary), targets["train"])
        rows.append({
            "normalisation": normalisation, "images": len(keys[part]), "objects": len(vocabulary),
            "mlp_loss": mean_cross_entropy(lambda x, m=model: mlp_scores(m, x), d[part], targets[part]),
            "baseline_loss": mean_cross_entropy(
                lambda x, v=vocabulary, c=calibration: c(baseline_object_scores(x, train_scores, v)),
                d[part], targets[part])})
    return pd.DataFrame(rows, columns=["normalisation", "images", "objects", "mlp_loss", "baseline_loss"])


# --- Ranking for a user's distribution ----------------------------------------------------------------
SCORES_TABLE = "emotion_object_scores"


def mlp_model_name(dataset: str, normalisation: str | None = None) -> str:
    """The card of the MLP served for a data set (or of the one trained with `normalisation`)."""
    return f"emotion_objects_mlp_{dataset}" + (f"_{normalisation}" if normalisation else "")


def rank_with_scores(store, distribution: np.ndarray, k: int, dataset: str) -> pd.DataFrame:
    """rank, object, score, occurrences: the score baseline's top k, by read-only SQL on the catalog."""
    if not store.has_table(SCORES_TABLE):
        raise FileNotFoundError(
            f"no {SCORES_TABLE} table in {store.tables_location}: materialize the `objects` group first")
    frame = store.query(ranking_sql(SCORES_TABLE, distribution, k, dataset))
    if frame.empty:
        raise ValueError(f"{SCORES_TABLE} holds no objects of dataset {dataset!r}")
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame


def rank_with_mlp(models_dir: Path, distribution: np.ndarray, k: int, dataset: str) -> pd.DataFrame:
    """rank, object, score: the served MLP's top k (score = its sigmoid output)."""
    from emo_pipeline.storage.model_store import load_torch_model

    model, card = load_torch_model(models_dir, mlp_model_name(dataset))
    scores = mlp_scores(model, np.asarray(distribution, dtype=float)[None, :])[0]
    order = top_k(scores[None, :], k)[0]
    vocabulary = card.options["vocabulary"]
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "object": [vocabulary[j] for j in order],
                         "score": scores[order].astype(float)})
