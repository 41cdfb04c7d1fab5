"""The distribution metrics against independent computations and hand-worked values."""

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import chebyshev as scipy_chebyshev
from scipy.spatial.distance import cosine as scipy_cosine_distance
from scipy.special import rel_entr
from scipy.stats import entropy

from emo_pipeline.core import metrics as m
from emo_pipeline.core.emotions import PROB_COLUMNS

U = np.array([[0.7, 0.1, 0.1, 0.0, 0.1, 0.0, 0.0],
              [0.0, 0.0, 0.2, 0.2, 0.2, 0.2, 0.2]])
V = np.array([[0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05],
              [0.1, 0.1, 0.1, 0.3, 0.2, 0.1, 0.1]])


def test_kl_matches_scipy_rel_entr_where_no_zero_is_involved():
    u = np.array([[0.5, 0.25, 0.25]])
    v = np.array([[0.25, 0.5, 0.25]])
    assert m.kl_divergence(u, v)[0] == pytest.approx(rel_entr(u, v).sum())
    assert m.kl_divergence(u, v)[0] == pytest.approx(0.25 * np.log(2))  # by hand: .5 ln2 + .25 ln(.5)


def test_kl_clips_zeros_like_pyldl():
    # A true zero contributes eps * ln(eps / v), not 0 as rel_entr would: tiny but defined.
    expected = rel_entr(U[1, 2:], V[1, 2:]).sum() + 2 * m.EPS * np.log(m.EPS / 0.1)
    assert m.kl_divergence(U, V)[1] == pytest.approx(expected, rel=1e-12)
    # A predicted zero where the truth has mass is large but finite.
    assert np.isfinite(m.kl_divergence([[1.0, 0.0]], [[0.0, 1.0]])[0])


def test_kl_is_true_before_predicted_and_kl_reverse_the_other_way_as_scipy_entropy_computes_them():
    # scipy.stats.entropy(p, q) = sum p ln(p / q): KL(p || q). Without zeros neither side is clipped.
    u = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    v = np.array([[0.2, 0.5, 0.3], [0.3, 0.4, 0.3]])
    assert m.kl_divergence(u, v) == pytest.approx([entropy(a, b) for a, b in zip(u, v)], rel=1e-12)
    assert m.kl_reverse(u, v) == pytest.approx([entropy(b, a) for a, b in zip(u, v)], rel=1e-12)
    assert m.kl_reverse(u, v)[0] != pytest.approx(m.kl_divergence(u, v)[0], rel=1e-3)  # KL is not symmetric
    # With annotated zeros (U), both sides clipped to [eps, 1] as the metric does; scipy renormalises the
    # clipped rows, which moves them by about 1e-15.
    clipped_u, clipped_v = np.clip(U, m.EPS, 1), np.clip(V, m.EPS, 1)
    expected = [entropy(b, a) for a, b in zip(clipped_u, clipped_v)]
    assert m.kl_reverse(U, V) == pytest.approx(expected, rel=1e-9)
    # Predicted mass where no annotator voted costs about ln(1 / eps) = 36 per unit in this direction.
    assert m.kl_reverse([[1.0, 0.0]], [[0.9, 0.1]])[0] == pytest.approx(
        0.9 * np.log(0.9) + 0.1 * np.log(0.1 / m.EPS), rel=1e-9)


def test_kl_reverse_is_its_own_column_in_every_metric_table():
    assert {"kl", "kl_reverse"} <= set(m.REPORTED)
    frame = m.metrics_table({("model", "test"): (U, V)})
    assert frame.loc[0, "kl_reverse"] == pytest.approx(m.kl_reverse(U, V).mean())
    assert frame.loc[0, "kl"] == pytest.approx(m.kl_divergence(U, V).mean())
    # A model's predictions for two test images and one training image, scored as a model asset is.
    keys, splits = ["a", "b", "c"], ["test", "test", "train"]
    truth, predicted = np.vstack([U, U[:1]]), np.vstack([V, V[:1]])
    labels = pd.DataFrame(truth, columns=list(PROB_COLUMNS)).assign(image_key=keys)
    predictions = pd.DataFrame(predicted, columns=list(PROB_COLUMNS)).assign(image_key=keys, split=splits)
    flat = m.flat_scores(m.split_metrics(predictions, labels, splits=("test",)))
    assert flat["test_kl_reverse"] == pytest.approx(m.kl_reverse(U, V).mean())
    # The train mean (U's first row, the only training image) beside it, in the same direction.
    assert flat["test_train_mean_kl_reverse"] == pytest.approx(m.kl_reverse(U, np.tile(U[0], (2, 1))).mean())


def test_distances_against_scipy_and_hand_values():
    assert m.chebyshev(U, V) == pytest.approx([scipy_chebyshev(a, b) for a, b in zip(U, V)])
    assert m.chebyshev(U, V)[0] == pytest.approx(0.3)
    assert m.cosine(U, V) == pytest.approx([1 - scipy_cosine_distance(a, b) for a, b in zip(U, V)])
    assert m.intersection(U, V) == pytest.approx(np.minimum(U, V).sum(axis=1))
    assert m.bhattacharyya(U, U) == pytest.approx([1.0, 1.0])
    assert m.bhattacharyya(U, V)[1] == pytest.approx(sum(np.sqrt(a * b) for a, b in zip(U[1], V[1])))
    assert m.squared_error(U, V)[0] == pytest.approx((0.09 + 0.01 + 0 + 0.01 + 0 + 0.0025 + 0.0025) / 7)
    # Dominant emotion: anger (0.7 vs 0.4); second row ties go to the first maximum (fear, 0.2 vs 0.1).
    assert m.max_emotion_distance(U, V) == pytest.approx([0.3, 0.1])
    assert m.top1(U, V).tolist() == [1.0, 0.0]


def test_means_and_the_train_mean_floor():
    table = m.distribution_metrics(U, V)
    assert table["mse"] == pytest.approx(np.mean((U - V) ** 2))
    baseline = m.train_mean_baseline(U, 3)
    assert baseline.shape == (3, 7) and baseline.sum(axis=1) == pytest.approx([1, 1, 1])
    frame = m.metrics_table({("model", "test"): (U, V), ("train_mean", "test"): (U, m.train_mean_baseline(U, 2))})
    assert list(frame["model"]) == ["model", "train_mean"]
    assert frame.loc[0, "chebyshev"] == pytest.approx(m.chebyshev(U, V).mean())


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one shape"):
        m.chebyshev(U, V[:, :6])
