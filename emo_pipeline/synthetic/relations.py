"""Relationships between placed objects, read off their boxes ("dog on grass", "sky above tree").

Every part gets a relationship with its host ("man WEARING shirt", "window ON building"). Other pairs
are drawn within a scene, the object often being the ground the subject stands on (what Visual Genome
annotators write most: "man ON grass"), and named by the first rule that fits:

1. a part is on its host, and the host has it;
2. a person next to something holdable is holding it;
3. a ground band is under anything; what stands on it is on it (a car is parked on it, a dog sits
   on it, people walk or stand on it);
4. the sky has what flies in it and is above everything else; what flies is in the sky;
5. a smaller box resting inside a larger one is on it;
6. plain geometry: above, under, near, in front of, behind.

Each canonical predicate is then written in one of Visual Genome's surface forms ("ON", "on top of",
"next to", "beside").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emo_pipeline.synthetic import grammar as g
from emo_pipeline.synthetic.scenes import SceneBatch

# Flattened surface forms: FORMS[i] = (predicate text, synsets); FORM_START[p] is predicate p's first.
FORMS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (text, synsets) for p in g.PREDICATES for text, _, synsets in p.forms)
FORM_START = np.cumsum([0] + [len(p.forms) for p in g.PREDICATES[:-1]])
_N_FORMS = np.array([len(p.forms) for p in g.PREDICATES])
_MAX_FORMS = max(len(p.forms) for p in g.PREDICATES)
_FORM_CDF = np.ones((len(g.PREDICATES), _MAX_FORMS))
for _p, _pred in enumerate(g.PREDICATES):
    _weights = np.array([wt for _, wt, _ in _pred.forms])
    _FORM_CDF[_p, :len(_weights)] = np.cumsum(_weights) / _weights.sum()

_P = g.PREDICATE_INDEX
_K = g.KIND_INDEX
_PEOPLE = [_K[name] for name in g.PEOPLE]
_HOLDABLE = [_K[name] for name in ("umbrella", "balloon", "flower", "knife", "gun", "gift")]
_PLACEMENT = np.array([k.placement for k in g.OBJECTS])
_GROUND_BAND = _PLACEMENT == g.GROUND_BAND
_STANDING = _PLACEMENT == g.STANDING
_AIRBORNE = _PLACEMENT == g.AIRBORNE
# Share of random pairs with a standing subject whose object is the scene's ground band (if any).
GROUND_ANCHOR_SHARE = 0.6


@dataclass
class RelationBatch:
    """Relationships in columnar form, grouped by scene: rows start[i]:start[i+1] belong to scene i."""

    start: np.ndarray      # (n + 1,)
    subject: np.ndarray    # (r,) object row in the SceneBatch
    object: np.ndarray     # (r,)
    predicate: np.ndarray  # (r,) index into grammar.PREDICATES
    form: np.ndarray       # (r,) index into FORMS

    def __len__(self) -> int:
        return len(self.subject)


def _part_relations(rng: np.random.Generator, batch: SceneBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = np.flatnonzero(batch.host >= 0)
    hosts = batch.host[parts]
    is_window = batch.kind[parts] == _K["window"]
    u = rng.random(len(parts))
    # window ON building / building has window / window OF building; man WEARING shirt / man has hat.
    predicate = np.where(is_window, np.select([u < 0.5, u < 0.8], [_P["on"], _P["has"]], _P["of"]),
                         np.where(u < 0.75, _P["wearing"], _P["has"]))
    part_first = is_window & (predicate != _P["has"])
    subject = np.where(part_first, parts, hosts)
    obj = np.where(part_first, hosts, parts)
    return subject, obj, predicate


def _pair_predicates(rng: np.random.Generator, batch: SceneBatch, s: np.ndarray, o: np.ndarray) -> np.ndarray:
    ks, ko = batch.kind[s], batch.kind[o]
    sx0, sy0 = batch.x[s], batch.y[s]
    sx1, sy1 = sx0 + batch.w[s], sy0 + batch.h[s]
    ox0, oy0 = batch.x[o], batch.y[o]
    ox1, oy1 = ox0 + batch.w[o], oy0 + batch.h[o]
    gap_x = np.maximum(np.maximum(ox0 - sx1, sx0 - ox1), 0)
    cx, cy = (sx0 + sx1) / 2, (sy0 + sy1) / 2
    rests_inside = ((cx > ox0) & (cx < ox1) & (cy > oy0) & (cy < oy1) & (sy1 <= oy1)
                    & (batch.w[s] * batch.h[s] < batch.w[o] * batch.h[o]))
    person = np.isin(ks, _PEOPLE)
    on_ground = _GROUND_BAND[ko] & _STANDING[ks]
    ground_verb = np.select(
        [ks == _K["car"], np.isin(ks, [_K["dog"], _K["cat"]]), person & (rng.random(len(s)) < 0.5), person],
        [_P["parked on"], _P["sitting on"], _P["walking on"], _P["standing on"]], _P["on"])
    rules = [
        (batch.host[s] == o, "on"),
        (batch.host[o] == s, "has"),
        (person & np.isin(ko, _HOLDABLE) & (gap_x < batch.w[s]), "holding"),
        (_GROUND_BAND[ks], "under"),
        (on_ground, None),  # the ground verb
        ((ks == _K["sky"]) & _AIRBORNE[ko], "has"),
        (ks == _K["sky"], "above"),
        ((ko == _K["sky"]) & _AIRBORNE[ks], "in"),
        (ko == _K["sky"], "under"),
        (rests_inside, "on"),
        (sy1 <= oy0, "above"),
        (sy0 >= oy1, "under"),
        (gap_x > 0, "near"),
        (sy1 > oy1, "in front of"),
    ]
    return np.select([condition for condition, _ in rules],
                     [ground_verb if name is None else _P[name] for _, name in rules], _P["behind"])


def sample_relations(rng: np.random.Generator, batch: SceneBatch, per_object: float) -> RelationBatch:
    """All part relationships plus about `per_object` random-pair relationships per object."""
    part_s, part_o, part_p = _part_relations(rng, batch)
    counts = np.diff(batch.start)
    pairs = np.where(counts >= 2, np.minimum(rng.poisson(per_object * counts), counts * (counts - 1)), 0)
    img = np.repeat(np.arange(len(batch)), pairs)
    first, n = batch.start[img], counts[img]
    s = first + np.floor(rng.random(len(img)) * n).astype(np.int64)
    o = first + np.floor(rng.random(len(img)) * (n - 1)).astype(np.int64)
    o = o + (o >= s)
    ground = np.full(len(batch), -1)
    band_rows = np.flatnonzero(_GROUND_BAND[batch.kind])
    ground[batch.image_of_object()[band_rows]] = band_rows
    anchored = (rng.random(len(img)) < GROUND_ANCHOR_SHARE) & (ground[img] >= 0) & _STANDING[batch.kind[s]]
    o = np.where(anchored, ground[img], o)
    pair_p = _pair_predicates(rng, batch, s, o)

    subject = np.concatenate([part_s, s])
    obj = np.concatenate([part_o, o])
    predicate = np.concatenate([part_p, pair_p]).astype(np.int64)
    # Group by scene, keeping the part relationships of a scene first.
    scene = batch.image_of_object()[subject]
    order = np.argsort(scene, kind="stable")
    subject, obj, predicate = subject[order], obj[order], predicate[order]
    u = 1.0 - rng.random(len(predicate))
    choice = np.minimum((_FORM_CDF[predicate] < u[:, None]).sum(axis=1), _N_FORMS[predicate] - 1)
    start = np.concatenate([[0], np.cumsum(np.bincount(scene, minlength=len(batch)))])
    return RelationBatch(start=start.astype(np.int64), subject=subject, object=obj, predicate=predicate,
                         form=FORM_START[predicate] + choice)
