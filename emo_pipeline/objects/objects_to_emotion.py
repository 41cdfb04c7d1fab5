"""Objects -> emotion (paper §3.5): an image's emotion distribution from what is in it, via GloVe.

- `fc`: the average GloVe vector of the image's objects -> one linear layer -> softmax.
- `rnn`, `lstm`, `lstm_dropout`: the image's relation phrases ("man riding horse . horse on grass")
  as one paragraph, embedded word by word with GloVe, read by an RNN, an LSTM, or two stacked LSTM
  layers with dropout; the last hidden state -> linear -> softmax.

All are trained with MSE against the image's distribution (the paper's loss) by the shared training
loop. Dataset A has no relationships (the detector gives boxes), so its paragraph is the list of its
detected object names, most confident first.

The embedding layer holds only the words the data set uses (a frozen copy of their GloVe rows), so a
saved model carries its vocabulary and runs without the full vector table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from emo_pipeline.core import metrics
from emo_pipeline.core.digests import frame_fingerprint
from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.splits import stratified_split
from emo_pipeline.core.train_loop import TrainConfig, TrainResult, predict, seed_everything, train
from emo_pipeline.models.object_models import FAMILIES, build_object_model
from emo_pipeline.objects.word_vectors import WordVectors

DATASETS = ("a", "b")

_EMOTION_COLUMNS = ", ".join(EMOTIONS)
# Per data set: one row per image with objects, its distribution, object names (repeats kept) and paragraph.
_INPUTS_SQL = {
    "a": f"""
        SELECT a.image_key AS key, a.dominant_emotion, {', '.join(f'a.{e}' for e in EMOTIONS)},
               list(o.object ORDER BY o.confidence DESC, o.object) AS objects,
               string_agg(o.object, ' ' ORDER BY o.confidence DESC, o.object) AS paragraph
        FROM dataset_a a JOIN dataset_a_objects o USING (image_key)
        GROUP BY ALL ORDER BY key""",
    "b": f"""
        WITH phrases AS (
            SELECT image_id, string_agg(subject || ' ' || predicate || ' ' || object, ' . '
                                        ORDER BY relationship_id) AS paragraph
            FROM dataset_b_relationships GROUP BY image_id)
        SELECT b.image_id AS key, b.dominant_emotion, {', '.join(f'b.{e}' for e in EMOTIONS)},
               list(o.object ORDER BY o.object_id) AS objects, coalesce(any_value(p.paragraph), '') AS paragraph
        FROM dataset_b b JOIN dataset_b_objects o USING (image_id) LEFT JOIN phrases p USING (image_id)
        WHERE b.readable
        GROUP BY ALL ORDER BY key""",
}


def object_model_name(family: str, dataset: str) -> str:
    """The model asset, registered model and card name of a family trained on dataset A or B."""
    return f"objects_emotion_{family}_{dataset}"


def inputs_fingerprint(inputs: pd.DataFrame, split: pd.DataFrame) -> str:
    """Changes when the images, their objects, distributions or the split change."""
    return frame_fingerprint(inputs.assign(objects=inputs["objects"].map(" | ".join)).merge(split, on="key"))


def image_inputs(con, dataset: str) -> pd.DataFrame:
    """key, dominant_emotion, prob_<emotion>..., objects (list), paragraph: the images with objects.

    `con` sees the dataset tables as views (`Warehouse.connect_scratch`).
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r}: choose a or b")
    frame = con.execute(_INPUTS_SQL[dataset]).fetchdf()
    return frame.rename(columns=dict(zip(EMOTIONS, PROB_COLUMNS)))


def split_images(inputs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """70/15/15 by image, stratified by dominant emotion: columns key, split."""
    split = stratified_split(inputs["key"].tolist(), inputs["dominant_emotion"].tolist(), seed=seed)
    split = split.rename(columns={"image_key": "key"})
    return split.astype({"key": inputs["key"].dtype})


def mean_vectors(object_lists: Sequence[Sequence[str]],
                 vectors: WordVectors) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(n, dim) average vector of each image's objects (each occurrence counts), a mask of the images
    with at least one known object, and the out-of-vocabulary names."""
    names = {name for objects in object_lists for name in objects}
    known, missing = vectors.name_vectors(names)
    out = np.zeros((len(object_lists), vectors.dim), dtype=np.float32)
    has = np.zeros(len(object_lists), dtype=bool)
    for i, objects in enumerate(object_lists):
        rows = [known[name] for name in objects if name in known]
        if rows:
            out[i], has[i] = np.mean(rows, axis=0), True
    return out, has, missing


def paragraph_tokens(paragraphs: Sequence[str], vectors: WordVectors, max_tokens: int,
                     vocabulary: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(n, max_tokens) token ids into `vocabulary` (0 = padding), and the vocabulary.

    Without a vocabulary, it is built from the paragraphs' known words (id = position + 1); with one
    (a saved model's), words outside it are skipped. Long paragraphs keep their first `max_tokens` words.
    """
    words = [vectors.words(p or "")[:max_tokens] for p in paragraphs]
    if vocabulary is None:
        vocabulary = sorted({w for ws in words for w in ws})
    index = {w: i + 1 for i, w in enumerate(vocabulary)}
    ids = np.zeros((len(paragraphs), max_tokens), dtype=np.int64)
    for i, ws in enumerate(words):
        row = [index[w] for w in ws if w in index]
        ids[i, :len(row)] = row
    return ids, list(vocabulary)


def embedding_matrix(vocabulary: Sequence[str], vectors: WordVectors) -> torch.Tensor:
    """(len(vocabulary) + 1, dim): a zero padding row, then each word's GloVe row."""
    rows = np.zeros((len(vocabulary) + 1, vectors.dim), dtype=np.float32)
    if vocabulary:
        rows[1:] = vectors.vectors_of(list(vocabulary))
    return torch.from_numpy(rows)


# --- Training ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectEmotionConfig:
    family: str = "fc"
    training: TrainConfig = TrainConfig(epochs=60, batch_size=32, lr=1e-2, patience=10)
    hidden: int = 64
    dropout: float = 0.5
    max_tokens: int = 80


@dataclass
class FittedObjectModel:
    model: nn.Module
    family: str
    result: TrainResult
    predictions: pd.DataFrame      # key, split, prob_<emotion>... for every input image
    vocabulary: list[str]          # phrase models: the words of the embedding (fc: empty)
    out_of_vocabulary: list[str]   # object names / paragraph words without a GloVe vector
    images_without_input: int      # images whose objects (fc) or paragraph (phrase models) had no known word


def model_inputs(inputs: pd.DataFrame, vectors: WordVectors, family: str, max_tokens: int,
                 vocabulary: Sequence[str] | None = None) -> tuple[torch.Tensor, list[str], list[str], int]:
    """The input tensor of each image for `family`, the vocabulary, OOV words and the images with no input."""
    if family == "fc":
        x, has, missing = mean_vectors(inputs["objects"].tolist(), vectors)
        return torch.from_numpy(x), [], missing, int((~has).sum())
    ids, vocabulary = paragraph_tokens(inputs["paragraph"].tolist(), vectors, max_tokens, vocabulary)
    words = {w for p in inputs["paragraph"] for w in str(p or "").lower().split()}
    missing = sorted(w for w in words if not vectors.words(w))
    return torch.from_numpy(ids), vocabulary, missing, int((ids[:, 0] == 0).sum())


def card_options(fitted: FittedObjectModel, config: ObjectEmotionConfig, dataset: str) -> dict:
    """What a model card needs to rebuild and feed a fitted model."""
    return {"dataset": dataset, "hidden": config.hidden, "dropout": config.dropout,
            "max_tokens": config.max_tokens, "vocabulary": fitted.vocabulary}


def fit_object_emotion_model(inputs: pd.DataFrame, split: pd.DataFrame, vectors: WordVectors,
                             config: ObjectEmotionConfig, checkpoint_dir: Path, *,
                             device: torch.device | str = "cpu",
                             log: Callable[[str], None] = print) -> FittedObjectModel:
    """Train one objects -> emotion model on the train split, stopping early on the validation split."""
    if config.family not in FAMILIES:
        raise ValueError(f"family {config.family!r}: choose one of {', '.join(FAMILIES)}")
    x, vocabulary, missing, empty = model_inputs(inputs, vectors, config.family, config.max_tokens)
    y = torch.as_tensor(inputs[list(PROB_COLUMNS)].to_numpy(dtype=np.float32))
    which = inputs[["key"]].merge(split, on="key", how="left")["split"].to_numpy()
    parts = {name: torch.from_numpy(np.flatnonzero(which == name)) for name in ("train", "val")}
    if min(len(p) for p in parts.values()) == 0:
        raise ValueError(f"{config.family}: the train and validation splits need images "
                         f"({len(parts['train'])} train, {len(parts['val'])} val)")
    seed_everything(config.training.seed)
    embedding = embedding_matrix(vocabulary, vectors) if config.family != "fc" else None
    model = build_object_model(config.family, vectors.dim, embedding, config.hidden, config.dropout)
    log(f"{config.family}: {len(inputs)} images ({len(parts['train'])} train), {len(vocabulary)} words, "
        f"{len(missing)} out-of-vocabulary names, {empty} images without a known word")
    result = train(model, TensorDataset(x[parts["train"]], y[parts["train"]]),
                   TensorDataset(x[parts["val"]], y[parts["val"]]), nn.functional.mse_loss,
                   config.training,
                   checkpoint_dir, device=device, log=log)
    probs = predict(model, TensorDataset(x, y), batch_size=256, device=device).numpy()
    predictions = pd.DataFrame(probs, columns=list(PROB_COLUMNS))
    predictions.insert(0, "split", which)
    predictions.insert(0, "key", inputs["key"].to_numpy())
    return FittedObjectModel(model.cpu().eval(), config.family, result, predictions, vocabulary, missing, empty)


def evaluate_object_model(inputs: pd.DataFrame, predictions: pd.DataFrame, split: str = "test") -> dict[str, float]:
    """The model's metrics on one split, beside the train-mean baseline's."""
    truth = inputs.set_index("key")[list(PROB_COLUMNS)]
    part = predictions[predictions["split"] == split]
    true = truth.loc[part["key"]].to_numpy()
    train_keys = predictions.loc[predictions["split"] == "train", "key"]
    mean = metrics.train_mean_baseline(truth.loc[train_keys].to_numpy(), len(part))
    model = metrics.distribution_metrics(true, part[list(PROB_COLUMNS)].to_numpy())
    baseline = metrics.distribution_metrics(true, mean)
    return {**model, **{f"train_mean_{k}": v for k, v in baseline.items()}, "images": len(part)}


@torch.inference_mode()
def predict_distributions(model: nn.Module, family: str, vectors: WordVectors, inputs: pd.DataFrame,
                          max_tokens: int = 80, vocabulary: Sequence[str] | None = None) -> np.ndarray:
    """(n, 7) distributions of a fitted model for `inputs` with objects / paragraph columns; an image
    without a known word gets the model's output for an empty input."""
    x, *_ = model_inputs(inputs, vectors, family, max_tokens, vocabulary if family != "fc" else None)
    return model.eval()(x).numpy()


def predict_with_card(model: nn.Module, card, vectors: WordVectors, inputs: pd.DataFrame) -> np.ndarray:
    """`predict_distributions` for a saved model and its card (`load_torch_model`)."""
    return predict_distributions(model, card.architecture, vectors, inputs, card.options["max_tokens"],
                                 card.options["vocabulary"])


def object_critic(model: nn.Module, family: str, vectors: WordVectors, max_tokens: int = 80,
                  vocabulary: Sequence[str] | None = None) -> Callable[[list[list[str]]], np.ndarray]:
    """A function from object lists to the model's (n, 7) distributions (a paragraph is the names)."""
    def critic(object_lists: list[list[str]]) -> np.ndarray:
        inputs = pd.DataFrame({"objects": object_lists, "paragraph": [" ".join(o) for o in object_lists]})
        return predict_distributions(model, family, vectors, inputs, max_tokens, vocabulary)

    return critic
