"""Emotion -> objects (paper §3.6): which objects an emotion distribution calls for.

Two rankers, both trained on the images of a data set (A or B) with their distributions and objects:

- The score baseline, in DuckDB SQL over the per-object tables: score(e, o) = sum over images of
  count(o in i) * d_e(i), i.e. the sum of d_e over the object's rows; final(e, o) = score(e, o) minus
  its mean over the 7 emotions; a distribution d ranks objects by sum_e d_e * final(e, o).
- The paper's MLP: 7 -> 500 -> 2000 -> 1500 -> N objects with sigmoid outputs, trained with
  cross-entropy against a normalised object vector per image (`NORMALISATIONS`).

Both are judged, with a most-frequent-objects baseline beside them, by the ranking metrics in
`emo_pipeline.objects.ranking` against each test image's true objects.
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

# Target vectors the paper tried for the MLP (all within [0, 1], as a sigmoid output needs):
#   count_share        count(o in i) / number of object rows in i
#   sqrt_count_share   its square root (lifts rare objects)
#   log_count_share    log(1 + count(o in i)) / log(1 + number of object rows in i)
#   per_image_average  1 / number of distinct objects in i, for each object present
#   box_area           the share of i's total box area covered by o's boxes
NORMALISATIONS = ("count_share", "sqrt_count_share", "log_count_share", "per_image_average", "box_area")


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


# --- The MLP (emo_pipeline.models.emotion_objects_mlp) ------------------------------------------------
def object_vocabulary(objects: pd.DataFrame, train_keys: Sequence, size: int) -> list[str]:
    """The `size` objects found in the most training images (ties by name); `objects` has key, object."""
    train = objects[objects["key"].isin(set(train_keys))]
    images = train.groupby("object")["key"].nunique()
    ranked = images.reset_index().sort_values(["key", "object"], ascending=[False, True])
    return ranked["object"].head(size).tolist()


def object_targets(objects: pd.DataFrame, keys: Sequence, vocabulary: Sequence[str],
                   normalisation: str) -> sp.csr_matrix:
    """(len(keys), len(vocabulary)) sparse targets in [0, 1] for the MLP; see NORMALISATIONS.

    `objects` has one row per object occurrence: key, object and (for box_area) w, h.

    Shares are taken over all of an image's object rows, so an image whose objects fall outside the
    vocabulary has targets summing to less than one rather than inflated ones.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation {normalisation!r}: choose one of {', '.join(NORMALISATIONS)}")
    row_of = {k: i for i, k in enumerate(keys)}
    col_of = {o: j for j, o in enumerate(vocabulary)}
    frame = objects[objects["key"].isin(row_of.keys())]
    area = (frame["w"].astype(float) * frame["h"].astype(float)).clip(lower=0) if normalisation == "box_area" else None
    grouped = frame.assign(area=area if area is not None else 1.0).groupby(["key", "object"], sort=False).agg(
        count=("object", "size"), area=("area", "sum")).reset_index()
    per_image = grouped.groupby("key").agg(rows=("count", "sum"), distinct=("object", "size"), area=("area", "sum"))
    grouped = grouped.join(per_image, on="key", rsuffix="_image")
    grouped = grouped[grouped["object"].isin(col_of.keys())]
    count, rows = grouped["count"].to_numpy(float), grouped["rows"].to_numpy(float)
    if normalisation == "count_share":
        value = count / rows
    elif normalisation == "sqrt_count_share":
        value = np.sqrt(count / rows)
    elif normalisation == "log_count_share":
        value = np.log1p(count) / np.log1p(rows)
    elif normalisation == "per_image_average":
        value = 1.0 / grouped["distinct"].to_numpy(float)
    else:
        total = grouped["area_image"].to_numpy(float)
        value = np.divide(grouped["area"].to_numpy(float), total, out=np.zeros_like(total), where=total > 0)
    return sp.csr_matrix((value.astype(np.float32),
                          (grouped["key"].map(row_of).to_numpy(), grouped["object"].map(col_of).to_numpy())),
                         shape=(len(keys), len(vocabulary)))


class DistributionTargets(Dataset):
    """(distribution, dense target row) pairs from a dense input array and sparse targets."""

    def __init__(self, distributions: np.ndarray, targets: sp.csr_matrix):
        self.x = torch.as_tensor(np.asarray(distributions, dtype=np.float32))
        self.y = targets.tocsr().astype(np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], torch.from_numpy(self.y[i].toarray()[0])


@dataclass(frozen=True)
class MLPConfig:
    """The paper: Adagrad lr 0.005 with lr decay 0.01, 50 epochs, cross-entropy on sigmoid outputs."""

    normalisation: str = "count_share"
    vocabulary_size: int = 1000
    # The paper trains all epochs: a patience of 50 never stops early, and the best validation epoch is kept.
    training: TrainConfig = TrainConfig(epochs=50, batch_size=64, lr=0.005, lr_decay=0.01, patience=50,
                                     optimizer="adagrad")
    dropout: float = 0.5
    hidden: tuple[int, int, int] = (500, 2000, 1500)


@dataclass
class FittedMLP:
    model: EmotionObjectMLP
    config: MLPConfig
    vocabulary: list[str]
    result: TrainResult


def fit_emotion_object_mlp(inputs: pd.DataFrame, objects: pd.DataFrame, split: pd.DataFrame, config: MLPConfig,
                           checkpoint_dir: Path, *, device: torch.device | str = "cpu",
                           log: Callable[[str], None] = print) -> FittedMLP:
    """Train the MLP from each image's distribution (`inputs`: key, prob_*) to its normalised objects.

    `objects` has one row per object occurrence (key, object, w, h); `split` maps key to
    train/val/test. The vocabulary is the training split's `vocabulary_size` most common objects.
    """
    which = inputs[["key"]].merge(split, on="key", how="left")["split"].to_numpy()
    keys = {name: inputs["key"].to_numpy()[which == name] for name in ("train", "val")}
    if min(len(k) for k in keys.values()) == 0:
        raise ValueError(f"the train and validation splits need images ({len(keys['train'])} train, "
                         f"{len(keys['val'])} val)")
    vocabulary = object_vocabulary(objects, keys["train"], config.vocabulary_size)
    distributions = inputs.set_index("key")[list(PROB_COLUMNS)]
    data = {name: DistributionTargets(distributions.loc[k].to_numpy(),
                                      object_targets(objects, k, vocabulary, config.normalisation))
            for name, k in keys.items()}
    seed_everything(config.training.seed)
    model = EmotionObjectMLP(len(vocabulary), config.hidden, config.dropout)
    log(f"emotion -> objects MLP ({config.normalisation}): {len(keys['train'])} train images, "
        f"{len(vocabulary)} objects")
    result = train(model, data["train"], data["val"], nn.functional.binary_cross_entropy,
                   config.training,
                   checkpoint_dir, device=device, log=log)
    return FittedMLP(model.cpu().eval(), config, vocabulary, result)


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
