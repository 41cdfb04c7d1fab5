"""How the synthetic annotators respond to a scene.

A scene's latent emotion distribution mixes the affinities of its objects (each weighted by its
salience times the square root of the share of the picture it covers) with the palette's affinity and
a little of everything. Annotators do not all agree: each picture gets its own
Dirichlet draw around the latent distribution, and 15 annotators vote from it, so the published
probabilities are vote fractions k/15 (0.0666667, 0.133333, ...) as in Emotion6. Valence and arousal
(1-9, one decimal) follow the votes plus rater noise.

The result is learnable (objects and palette explain most of the variance) but not trivial (the
annotator noise alone keeps a perfect model well above zero error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emo_pipeline.synthetic import grammar as g
from emo_pipeline.synthetic.scenes import SceneBatch

ANNOTATORS = 15
PALETTE_WEIGHT = 0.3     # against object weights of about salience * sqrt(area share), 0.1-0.5 each
PRIOR_WEIGHT = 0.08      # a little of every emotion, so no bin is impossible
# Dirichlet concentration around the latent distribution (lower = more dissent). With 10, the mean
# top vote share is about 0.5 and predicting the mean distribution scores an MSE of about 0.03, as in
# the real Emotion6.
AGREEMENT = 10.0
RATER_NOISE = 0.5        # standard deviation of valence / arousal noise, on the 1-9 scale

_AFFINITY = g.affinity_matrix()
_PALETTE_AFFINITY = g.palette_matrix()
_SALIENCE = np.array([k.salience for k in g.OBJECTS])


@dataclass
class Annotations:
    votes: np.ndarray     # (n, 7) int, summing to ANNOTATORS per row
    valence: np.ndarray   # (n,) 1-9, one decimal
    arousal: np.ndarray   # (n,) 1-9, one decimal

    @property
    def probabilities(self) -> np.ndarray:
        return self.votes / ANNOTATORS


def latent_distribution(batch: SceneBatch) -> np.ndarray:
    """(n, 7) the noise-free emotion distribution each scene was built to evoke."""
    img = batch.image_of_object()
    share = batch.visible_area() / (batch.width * batch.height)[img]
    weight = _SALIENCE[batch.kind] * np.sqrt(share)
    mix = np.zeros((len(batch), g.N_EMOTIONS))
    for e in range(g.N_EMOTIONS):
        mix[:, e] = np.bincount(img, weights=weight * _AFFINITY[batch.kind, e], minlength=len(batch))
    mix += PALETTE_WEIGHT * _PALETTE_AFFINITY[batch.palette] + PRIOR_WEIGHT / g.N_EMOTIONS
    return mix / mix.sum(axis=1, keepdims=True)


def annotate(rng: np.random.Generator, batch: SceneBatch) -> Annotations:
    """Votes of 15 annotators per scene, with valence and arousal."""
    latent = latent_distribution(batch)
    gamma = rng.gamma(AGREEMENT * latent + 0.02)
    opinion = gamma / gamma.sum(axis=1, keepdims=True)
    votes = rng.multinomial(ANNOTATORS, opinion)
    share = votes / ANNOTATORS
    valence = share @ g.VALENCE + rng.normal(0.0, RATER_NOISE, len(batch))
    arousal = share @ g.AROUSAL + rng.normal(0.0, RATER_NOISE, len(batch))
    return Annotations(votes=votes.astype(np.int64),
                       valence=np.round(np.clip(valence, 1.0, 9.0), 1),
                       arousal=np.round(np.clip(arousal, 1.0, 9.0), 1))


def format_number(value: float) -> str:
    """Format like the real ground_truth.txt: C's %g, six significant digits (0.0666667, 0.7, 0, 2.5)."""
    return "%g" % value
