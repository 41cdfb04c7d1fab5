"""Model cards, the ensemble and `emo-pipeline predict` on models saved to a folder."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from emo_pipeline.cli import main
from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.image_emotion.ensemble import fit_ensemble, relative_distance
from emo_pipeline.image_emotion.image_data import load_rgb, normalise
from emo_pipeline.image_emotion.predict import default_model, predict_images
from emo_pipeline.models import build_model
from emo_pipeline.storage.model_store import (
    ModelCard,
    ModelNotFound,
    load_card,
    load_torch_model,
    save_card,
    save_torch_model,
)


@pytest.fixture
def saved(tmp_path):
    """A small CNN with random weights saved with its card, and two pictures plus one damaged file."""
    torch.manual_seed(3)
    model, _ = build_model("small_cnn")
    models_dir = tmp_path / "models"
    save_torch_model(models_dir, ModelCard("small_cnn", "image", "small_cnn", 32, clip=0.02), model)
    rng = np.random.default_rng(0)
    images = []
    for i in range(2):
        path = tmp_path / f"photo{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
        images.append(path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    return models_dir, model.eval(), images, broken


def test_clip_distribution_on_a_hand_worked_row():
    clipped = metrics.clip_distribution([[0.9, 0.1, 0, 0, 0, 0, 0]], 0.05)
    # five entries raised to 0.05: the row sums to 1.25 before renormalising
    np.testing.assert_allclose(clipped, [[0.72, 0.08, 0.04, 0.04, 0.04, 0.04, 0.04]])


def test_choose_clip_never_worsens_kl_and_helps_overconfident_predictions():
    rng = np.random.default_rng(1)
    true = rng.dirichlet(np.ones(7), size=50)
    confident = np.eye(7)[true.argmax(axis=1)]  # all mass on one emotion: KL is huge without a floor
    floor = metrics.choose_clip(true, confident)
    assert floor > 0
    kl = lambda p: metrics.kl_divergence(true, p).mean()  # noqa: E731
    assert kl(metrics.clip_distribution(confident, floor)) < kl(confident)
    assert metrics.choose_clip(true, true) == 0.0  # a perfect prediction is left alone


def test_saved_model_round_trips_with_its_card(saved):
    models_dir, model, _, _ = saved
    loaded, card = load_torch_model(models_dir, "small_cnn")
    assert card == ModelCard("small_cnn", "image", "small_cnn", 32, clip=0.02)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


def test_unknown_model_names_the_ones_there_are(saved):
    models_dir, *_ = saved
    with pytest.raises(ModelNotFound, match=r"no model 'vgg' .*materialized models: small_cnn"):
        load_card(models_dir, "vgg")
    (models_dir / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not a valid model card"):
        load_card(models_dir, "bad")


def test_predict_matches_the_model_and_applies_the_card_floor(saved):
    models_dir, model, images, broken = saved
    prediction = predict_images([images[0], broken, images[1]], "small_cnn", models_dir)
    assert prediction.paths == [str(images[0]), str(images[1])]
    assert list(prediction.failed) == [str(broken)]
    with torch.inference_mode():
        direct = model(normalise(torch.from_numpy(np.stack([load_rgb(p, 32) for p in images])))).double().numpy()
    np.testing.assert_allclose(prediction.distributions, metrics.clip_distribution(direct, 0.02), atol=1e-6)
    assert prediction.distributions.min() >= 0.02 / (1 + 7 * 0.02) - 1e-9


def test_a_mirror_averaged_card_predicts_a_picture_and_its_mirror_alike(saved, tmp_path):
    models_dir, model, images, _ = saved
    save_torch_model(models_dir, ModelCard("mirrored", "image", "small_cnn", 32, flip_tta=True), model)
    save_torch_model(models_dir, ModelCard("unmirrored", "image", "small_cnn", 32), model)
    mirror = tmp_path / "mirror.png"
    Image.open(images[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirror)
    original = tmp_path / "original.png"  # lossless, like the mirror, so the two hold the same pixels
    Image.open(images[0]).save(original)
    plain = predict_images([original, mirror], "unmirrored", models_dir).distributions
    averaged = predict_images([original, mirror], "mirrored", models_dir).distributions
    assert np.abs(plain[0] - plain[1]).max() > 1e-4  # the model itself tells them apart
    np.testing.assert_allclose(averaged[0], averaged[1], atol=1e-9)
    # The mean of the model's outputs for the two (neither card has a floor).
    np.testing.assert_allclose(averaged[:1], metrics.clip_distribution((plain[:1] + plain[1:]) / 2, 0.0), atol=1e-6)


def test_predict_command_prints_json_and_names_the_unreadable_file(saved, capsys):
    models_dir, _, images, broken = saved
    code = main(["predict", str(images[0]), str(broken), "--model", "small_cnn", "--json", "--models", str(models_dir)])
    out, err = capsys.readouterr()
    assert code == 1  # one file was skipped
    (row,) = json.loads(out)
    assert row["image"] == str(images[0]) and row["model"] == "small_cnn"
    assert set(row["distribution"]) == set(EMOTIONS)
    assert abs(sum(row["distribution"].values()) - 1) < 1e-5
    assert row["dominant_emotion"] == max(row["distribution"], key=row["distribution"].get)
    assert f"skipped {broken}" in err

    assert main(["predict", str(images[0]), "--model", "nope", "--models", str(models_dir)]) == 2
    assert "no model 'nope'" in capsys.readouterr().err


def test_ensemble_card_averages_its_members(saved, tmp_path):
    models_dir, model, images, _ = saved
    torch.manual_seed(4)
    other, _ = build_model("small_cnn")
    save_torch_model(models_dir, ModelCard("other", "image", "small_cnn", 32), other)
    save_card(models_dir, ModelCard("ensemble", "ensemble", "mean", 0, clip=0.01, members=("small_cnn", "other")))
    one = predict_images(images, "small_cnn", models_dir).distributions
    two = predict_images(images, "other", models_dir).distributions
    both = predict_images(images, "ensemble", models_dir).distributions
    np.testing.assert_allclose(both, metrics.clip_distribution((one + two) / 2, 0.01), atol=1e-9)
    save_card(models_dir, ModelCard("ensemble", "ensemble", "weighted_mean", 0, clip=0.01,
                                    members=("small_cnn", "other"), member_weights=(0.75, 0.25)))
    weighted = predict_images(images, "ensemble", models_dir).distributions
    np.testing.assert_allclose(weighted, metrics.clip_distribution(0.75 * one + 0.25 * two, 0.01), atol=1e-9)
    save_card(models_dir, ModelCard("ensemble", "ensemble", "weighted_mean", 0, clip=0.01,
                                    members=("small_cnn", "other"), member_weights=(0.75, 0.25), power=1.5))
    sharpened = predict_images(images, "ensemble", models_dir).distributions
    raised = (0.75 * one + 0.25 * two) ** 1.5
    np.testing.assert_allclose(sharpened, metrics.clip_distribution(raised / raised.sum(axis=1, keepdims=True), 0.01),
                               atol=1e-9)
    # The lowest validation KL wins the default; without scores the ensemble does.
    assert default_model(models_dir, {"other": 0.4, "small_cnn": 0.5}) == "other"
    assert default_model(models_dir) == "ensemble"


def _frame(keys, splits, distributions):
    frame = pd.DataFrame(distributions, columns=list(PROB_COLUMNS))
    frame.insert(0, "split", splits)
    frame.insert(0, "image_key", keys)
    return frame


def _labelled(rng: np.random.Generator, concentration: float) -> tuple[list[str], np.ndarray, np.ndarray, pd.DataFrame]:
    """300 images split 200/50/50 with random true distributions: keys, splits, distributions, labels."""
    keys = [f"img{i}" for i in range(300)]
    splits = np.array(["train"] * 200 + ["val"] * 50 + ["test"] * 50)
    true = rng.dirichlet(np.ones(7) * concentration, size=len(keys))
    return keys, splits, true, _frame(keys, splits, true).drop(columns="split")


def test_ensemble_weights_members_on_validation_and_beats_each_of_them():
    rng = np.random.default_rng(7)
    keys, splits, true, labels = _labelled(rng, 0.7)
    noisy = lambda scale: np.vstack([rng.dirichlet(t * scale + 0.05) for t in true])  # noqa: E731
    good, also_good, worse = noisy(30), noisy(30), noisy(4)
    candidates = {"good": _frame(keys, splits, good), "also_good": _frame(keys, splits, also_good),
                  "worse": _frame(keys, splits, worse)}
    result = fit_ensemble(labels, candidates)
    weights = dict(zip(result.members, result.weights))
    assert sum(result.weights) == pytest.approx(1) and min(result.weights) >= 0
    # independent errors average out: the two good models share most of the weight, the worse one little
    assert weights["good"] > 0.3 and weights["also_good"] > 0.3 and weights.get("worse", 0) < 0.2
    assert result.val_kl["ensemble"] < min(result.val_kl["good"], result.val_kl["also_good"])
    # max_members keeps the largest weights
    assert fit_ensemble(labels, candidates, max_members=1).members in (["good"], ["also_good"])
    # the test split scores better than either member too, though it was never used to choose
    pairs = metrics.split_pairs(labels, result.predictions, ("test",))["test"]
    good_pairs = metrics.split_pairs(labels, _frame(keys, splits, good), ("test",))["test"]
    assert metrics.kl_divergence(*pairs).mean() < metrics.kl_divergence(*good_pairs).mean()
    # and changing the test labels changes nothing the ensemble chose
    relabelled = labels.copy()
    relabelled.loc[splits == "test", list(PROB_COLUMNS)] = rng.dirichlet(np.ones(7), size=int((splits == "test").sum()))
    again = fit_ensemble(relabelled, candidates)
    assert (again.members, again.weights, again.power, again.clip) == (result.members, result.weights, result.power,
                                                                       result.clip)


def test_a_flat_average_is_sharpened_by_a_power_chosen_on_validation():
    keys, splits, true, labels = _labelled(np.random.default_rng(8), 0.5)
    # Right on average but too flat: the truth raised to 0.5 and renormalised, so a power of 2 restores it.
    flat = np.sqrt(true) / np.sqrt(true).sum(axis=1, keepdims=True)
    result = fit_ensemble(labels, {"flat": _frame(keys, splits, flat)})
    assert result.power == pytest.approx(2.0) and result.clip == 0
    assert result.val_kl["ensemble"] < 0.01 * result.val_kl["flat"]
    restored = result.predictions.set_index("image_key").loc[keys, list(PROB_COLUMNS)].to_numpy()
    np.testing.assert_allclose(restored, true, atol=1e-9)
    # A model that is already sharp enough keeps the power 1.
    assert fit_ensemble(labels, {"right": _frame(keys, splits, true)}).power == 1.0


def test_the_power_is_chosen_by_three_distances_relative_to_the_train_mean():
    keys, splits, true, labels = _labelled(np.random.default_rng(9), 0.5)
    mean = true[splits == "train"].mean(axis=0)
    # The train mean itself scores 3 (each distance divided by itself), the truth 0.
    assert relative_distance(true, mean)(np.tile(mean, (len(true), 1))) == pytest.approx(3)
    assert relative_distance(true, mean)(true) == pytest.approx(0, abs=1e-9)
    # Halfway between them: every distance below the train mean's, so the sum lies between.
    assert 0 < relative_distance(true, mean)(0.5 * true + 0.5 * mean) < 3
