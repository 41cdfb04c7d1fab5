"""Emotion -> scene: from a 7-way distribution to a coherent set of objects, their layout and a label map.

The composer, for a target distribution d and a size k:

1. Salience: each object's score-baseline ranking value sum_e d_e * final(e, o), standardised.
2. Candidate sets: the plain top k by salience, then greedy sets that add, one at a time, the object
   with the best salience + coherence_weight * (mean PMI with the objects chosen so far), with Gumbel
   noise after the first so that the candidates differ. Deterministic for a seed.
3. The critic, an objects -> emotion model (the GloVe FC), predicts each candidate's distribution;
   the candidate closest to d (KL(d || predicted)) wins: the cheap form of the paper's proposed
   generator / discriminator pair.
4. Relations between the chosen objects: each pair's most common predicate in dataset B (one
   direction per pair), then boxes drawn from each object's observed boxes, keeping the layout that
   satisfies the most relations without impossible overlaps (`scene_layout`).
5. Output: a scene graph (JSON), a label map PNG (one class id per pixel, larger objects painted
   first) with a colour legend, and the critic's distribution beside the target.

`fidelity` measures how well scenes carry their emotion, judged by a model the composer never used.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from emo_pipeline.core import metrics
from emo_pipeline.core.atomic import atomic_output, write_text_atomic
from emo_pipeline.core.emotions import EMOTIONS
from emo_pipeline.core.plots import scene_figure_png
from emo_pipeline.objects.emotion_to_objects import final_matrix, score_objects
from emo_pipeline.objects.objects_to_emotion import (
    ObjectEmotionConfig,
    fit_object_emotion_model,
    image_inputs,
    object_critic,
    split_images,
)
from emo_pipeline.objects.word_vectors import WordVectors
from emo_pipeline.scenes.layout import Box, colour_legend_png, label_map, label_map_png, place_objects
from emo_pipeline.scenes.statistics import box_samples, cooccurrence, relations

Critic = Callable[[list[list[str]]], np.ndarray]   # object lists -> (n, 7) predicted distributions


@dataclass
class SceneStatistics:
    """What the composer draws on, over one vocabulary of objects (sorted by name)."""

    objects: list[str]
    final: np.ndarray                      # (7, N) score-baseline final scores
    frequency: np.ndarray                  # (N,) occurrences, for the frequency-weighted baseline
    pmi: np.ndarray                        # (N, N) symmetric; pairs never seen together get `pmi_floor`
    pmi_floor: float
    predicates: dict[tuple[str, str], tuple[str, int]]  # (subject, object) -> most common predicate, count
    boxes: dict[str, np.ndarray] = field(default_factory=dict)  # object -> (n, 4) normalised x, y, w, h

    def index(self, names: Sequence[str]) -> list[int]:
        position = {name: i for i, name in enumerate(self.objects)}
        return [position[n] for n in names]


def build_statistics(scores: pd.DataFrame, cooccurrence: pd.DataFrame, relations: pd.DataFrame,
                     boxes: pd.DataFrame | None = None) -> SceneStatistics:
    """Statistics from the tables (score table of one data set, co-occurrence, relations, box samples)."""
    final, names = final_matrix(scores)
    position = {name: i for i, name in enumerate(names)}
    frequency = scores.groupby("object")["occurrences"].max().reindex(names).to_numpy(dtype=float)
    seen = cooccurrence[cooccurrence["object_a"].isin(position) & cooccurrence["object_b"].isin(position)]
    # Pairs never seen together are less coherent than any pair that was.
    floor = float(seen["pmi"].min()) - 1.0 if len(seen) else -1.0
    pmi = np.full((len(names), len(names)), floor)
    a, b = seen["object_a"].map(position).to_numpy(), seen["object_b"].map(position).to_numpy()
    pmi[a, b] = pmi[b, a] = seen["pmi"].to_numpy()
    np.fill_diagonal(pmi, 0.0)
    top = relations.sort_values(["relationships", "predicate"], ascending=[False, True]).drop_duplicates(
        ["subject", "object"])
    predicates = {(s, o): (p, int(n)) for s, o, p, n in
                  zip(top["subject"], top["object"], top["predicate"], top["relationships"])}
    samples = {} if boxes is None else {
        name: rows[["x", "y", "w", "h"]].to_numpy(dtype=float) for name, rows in boxes.groupby("object")}
    return SceneStatistics(names, final, frequency, pmi, floor, predicates, samples)


# --- Choosing objects ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComposerConfig:
    k: int = 8
    candidates: int = 16          # object sets the critic judges
    pool: int = 40                # the most salient objects any set draws from
    coherence_weight: float = 0.5
    noise: float = 0.5            # Gumbel noise scale that makes the candidate sets differ
    layout_tries: int = 64
    canvas: tuple[int, int] = (256, 256)   # label map width, height


def salience(stats: SceneStatistics, distribution: np.ndarray) -> np.ndarray:
    """(N,) standardised score-baseline value of each object for `distribution`."""
    value = np.asarray(distribution, dtype=float) @ stats.final
    spread = value.std()
    return (value - value.mean()) / spread if spread > 0 else np.zeros_like(value)


def top_k_objects(stats: SceneStatistics, distribution: np.ndarray, k: int) -> list[str]:
    """The plain score-baseline ranking's first k objects."""
    order = np.argsort(-salience(stats, distribution), kind="stable")[:k]
    return [stats.objects[i] for i in order]


def random_objects(stats: SceneStatistics, k: int, rng: np.random.Generator) -> list[str]:
    """k distinct objects drawn with probability proportional to how often they occur."""
    weights = stats.frequency / stats.frequency.sum()
    chosen = rng.choice(len(stats.objects), size=min(k, len(stats.objects)), replace=False, p=weights)
    return [stats.objects[i] for i in chosen]


def _pmi_scale(stats: SceneStatistics) -> float:
    """The spread of the observed PMIs, so that the coherence term is on salience's (standard) scale."""
    observed = stats.pmi[np.triu_indices_from(stats.pmi, 1)]
    observed = observed[observed > stats.pmi_floor]
    return float(observed.std()) if len(observed) > 1 and observed.std() > 0 else 1.0


def candidate_sets(stats: SceneStatistics, distribution: np.ndarray, config: ComposerConfig,
                   rng: np.random.Generator) -> list[list[int]]:
    """Distinct object sets (indices): the top k first, then greedy salience + coherence sets."""
    sal = salience(stats, distribution)
    k = min(config.k, len(stats.objects))
    pool = np.argsort(-sal, kind="stable")[:max(config.pool, k)]
    scale = _pmi_scale(stats)
    sets = [sorted(pool[:k].tolist())]
    for c in range(config.candidates - 1):
        noise = rng.gumbel(size=len(stats.objects)) * config.noise if c > 0 else np.zeros(len(stats.objects))
        chosen: list[int] = []
        while len(chosen) < k:
            remaining = [i for i in pool if i not in chosen]
            coherence = (stats.pmi[np.ix_(remaining, chosen)].mean(axis=1) / scale if chosen
                         else np.zeros(len(remaining)))
            value = sal[remaining] + config.coherence_weight * coherence + noise[remaining]
            chosen.append(int(remaining[int(np.argmax(value))]))
        if sorted(chosen) not in sets:
            sets.append(sorted(chosen))
    return sets


def mean_pmi(stats: SceneStatistics, names: Sequence[str]) -> float:
    """Coherence: the mean PMI over the pairs of `names` (never-seen pairs count at the floor)."""
    idx = stats.index(names)
    if len(idx) < 2:
        return float("nan")
    pairs = stats.pmi[np.ix_(idx, idx)][np.triu_indices(len(idx), 1)]
    return float(pairs.mean())


# --- The scene -------------------------------------------------------------------------------------------
@dataclass
class Scene:
    target: np.ndarray
    objects: list[str]
    boxes: list[Box]
    relations: list[tuple[int, str, int]]
    predicted: np.ndarray | None      # the critic's distribution for the objects (None without a critic)
    kl: float | None                  # KL(target || predicted)
    candidates: int                   # object sets the critic judged
    seed: int

    def class_ids(self, stats: SceneStatistics) -> list[int]:
        """Label map ids: 1 + the object's position in the vocabulary (0 is background)."""
        return [i + 1 for i in stats.index(self.objects)]

    def to_json(self, stats: SceneStatistics) -> dict:
        ids = self.class_ids(stats)
        return {
            "target": {e: round(float(v), 4) for e, v in zip(EMOTIONS, self.target)},
            "predicted": None if self.predicted is None else
            {e: round(float(v), 4) for e, v in zip(EMOTIONS, self.predicted)},
            "kl": None if self.kl is None else round(self.kl, 4),
            "candidates_judged": self.candidates,
            "seed": self.seed,
            "objects": [{"id": i, "name": name, "class_id": cid, "box": [round(v, 4) for v in box]}
                        for i, (name, cid, box) in enumerate(zip(self.objects, ids, self.boxes))],
            "relations": [{"subject": s, "predicate": p, "object": o} for s, p, o in self.relations],
            "classes": {str(cid): name for cid, name in zip(ids, self.objects)},
            "box_format": "x, y, w, h as fractions of the canvas width and height (top-left corner)",
        }


def scene_relations(stats: SceneStatistics, names: Sequence[str],
                    limit: int | None = None) -> list[tuple[int, str, int]]:
    """Each chosen pair's most common predicate in dataset B, in the direction seen more often."""
    found = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            forward = stats.predicates.get((names[i], names[j]))
            backward = stats.predicates.get((names[j], names[i]))
            if forward and (not backward or forward[1] >= backward[1]):
                found.append((forward[1], i, forward[0], j))
            elif backward:
                found.append((backward[1], j, backward[0], i))
    found.sort(key=lambda r: (-r[0], r[1], r[3]))
    return [(s, p, o) for _, s, p, o in found[:limit or 2 * len(names)]]


def compose_scene(stats: SceneStatistics, distribution: np.ndarray, config: ComposerConfig = ComposerConfig(),
                  seed: int = 0, critic: Critic | None = None) -> Scene:
    """The scene for `distribution`: objects chosen by the critic among the candidate sets, placed."""
    target = np.asarray(distribution, dtype=float)
    rng = np.random.default_rng(seed)
    sets = candidate_sets(stats, target, config, rng)
    names = [[stats.objects[i] for i in s] for s in sets]
    predicted = kl = None
    best = 0
    if critic is not None:
        judged = critic(names)
        losses = metrics.kl_divergence(np.tile(target, (len(names), 1)), judged)
        best = int(np.argmin(losses))
        predicted, kl = judged[best], float(losses[best])
    chosen = names[best]
    relations = scene_relations(stats, chosen)
    boxes = place_objects(chosen, relations, stats.boxes, rng, tries=config.layout_tries)
    return Scene(target, chosen, boxes, relations, predicted, kl, len(names), seed)


def write_scene(scene: Scene, stats: SceneStatistics, folder: Path, name: str,
                canvas: tuple[int, int] = (256, 256)) -> dict[str, Path]:
    """`<name>.json` (scene graph), `<name>_labels.png` (class ids), `<name>_legend.png`, written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = scene.class_ids(stats)
    labels = label_map(scene.boxes, ids, canvas)
    paths = {"json": folder / f"{name}.json", "labels": folder / f"{name}_labels.png",
             "legend": folder / f"{name}_legend.png"}
    for key, data in (("labels", label_map_png(labels)),
                      ("legend", scene_figure_png(colour_legend_png(labels, dict(zip(ids, scene.objects))),
                                                  scene.target, scene.predicted, name))):
        with atomic_output(paths[key]) as tmp:
            Path(tmp).write_bytes(data)
    write_text_atomic(json.dumps({"name": name, "canvas": list(canvas), **scene.to_json(stats)}, indent=2) + "\n",
                      paths["json"])
    return paths


# --- Fidelity --------------------------------------------------------------------------------------------
def fidelity_targets(mixtures: int = 20, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """The 7 one-hot emotions and `mixtures` random distributions (Dirichlet(1), seeded): names, (n, 7)."""
    names = list(EMOTIONS) + [f"mixture_{i:02d}" for i in range(mixtures)]
    mixed = np.random.default_rng(seed).dirichlet(np.ones(len(EMOTIONS)), size=mixtures)
    return names, np.vstack([np.eye(len(EMOTIONS)), mixed])


def fidelity(stats: SceneStatistics, critic: Critic, judge: Critic, judge_stats: SceneStatistics,
             config: ComposerConfig = ComposerConfig(), mixtures: int = 20, seed: int = 0) -> pd.DataFrame:
    """Per method and target: KL(d || judge(objects)) and the coherence (mean PMI on the judge's images).

    Methods: `composer` (candidates + critic), `top_k` (the score baseline's first k) and `random`
    (k objects weighted by frequency). The judge and `judge_stats` should come from images the
    composer's statistics and critic never saw.
    """
    names, targets = fidelity_targets(mixtures, seed)
    rng = np.random.default_rng(seed)
    chosen = {"composer": [], "top_k": [], "random": []}
    for i, target in enumerate(targets):
        chosen["composer"].append(compose_scene(stats, target, config, seed + i, critic).objects)
        chosen["top_k"].append(top_k_objects(stats, target, config.k))
        chosen["random"].append(random_objects(stats, config.k, rng))
    known = set(judge_stats.objects)
    rows = []
    for method, sets in chosen.items():
        judged = judge(sets)
        kl = metrics.kl_divergence(targets, judged)
        for name, target_kl, objects in zip(names, kl, sets):
            inside = [o for o in objects if o in known]
            rows.append({"method": method, "target": name, "kl": float(target_kl),
                         "coherence": mean_pmi(judge_stats, inside), "objects": ", ".join(objects)})
    return pd.DataFrame(rows)


def load_statistics(store, dataset: str = "b") -> SceneStatistics:
    """The composer's statistics from the warehouse tables (`objects` and `scenes` groups)."""
    scores = store.read_table("emotion_object_scores")
    pairs = store.read_table("object_cooccurrence")
    return build_statistics(scores[scores["dataset"] == dataset], pairs[pairs["dataset"] == dataset],
                            store.read_table("object_relations"), store.read_table("object_boxes"))


def halves(keys: Sequence, seed: int = 0) -> tuple[list, list]:
    """The images split at random into two disjoint halves (seeded)."""
    order = np.random.default_rng(seed).permutation(len(keys))
    keys = list(keys)
    middle = len(keys) // 2
    return [keys[i] for i in sorted(order[:middle])], [keys[i] for i in sorted(order[middle:])]


def held_out_fidelity(con, vectors: WordVectors, fc_config: ObjectEmotionConfig, checkpoint_root: Path,
                      config: ComposerConfig = ComposerConfig(), mixtures: int = 20, seed: int = 0, device: str = "cpu",
                      log: Callable[[str], None] = print) -> pd.DataFrame:
    """`fidelity` on dataset B with disjoint halves of its images: the composer's statistics and critic
    (a GloVe FC) learn from one half, the judge (another GloVe FC) and the coherence PMIs from the other.

    `con` sees the dataset B tables (`Warehouse.connect_scratch`); `fc_config` (family fc) trains both
    the critic and the judge.
    """
    if fc_config.family != "fc":
        raise ValueError(f"the critic and the judge are GloVe FC models, not {fc_config.family!r}")
    inputs = image_inputs(con, "b")
    boxes = box_samples(con)
    models = []
    for part, keys in zip(("composer", "judge"), halves(inputs["key"].tolist(), seed)):
        half = inputs[inputs["key"].isin(set(keys))].reset_index(drop=True)
        log(f"{part}: {len(half)} images")
        fitted = fit_object_emotion_model(half, split_images(half, seed), vectors, fc_config,
                                          Path(checkpoint_root) / part, device=device, log=log)
        stats = build_statistics(score_objects(con, "b", keys), cooccurrence(con, "b", keys=keys),
                                 relations(con, keys), boxes)
        models.append((stats, object_critic(fitted.model, "fc", vectors)))
    (stats, critic), (judge_stats, judge) = models
    return fidelity(stats, critic, judge, judge_stats, config, mixtures, seed)

