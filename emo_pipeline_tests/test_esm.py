"""Emotion stimuli map models as assets: FCN-8s on the synthetic EmotionROI, the ESM-ResNet on Emotion6.

One module-scoped fixture materializes, on a synthetic world, the raw tables and the 32 px FCN, then
the ESM-ResNet reading that FCN's maps (the 64 px one is the same code at another size).
"""

import base64
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch

from emo_pipeline.core import metrics
from emo_pipeline.core.emotions import KEYWORDS, PROB_COLUMNS
from emo_pipeline.core.home import emo_home
from emo_pipeline.image_emotion.esm import esm_split, predict_maps
from emo_pipeline.image_emotion.image_data import ImagesWithMaps, MirroredPairs
from emo_pipeline.image_emotion.training import clip_distribution
from emo_pipeline.models import MapInput
from emo_pipeline.storage.model_store import load_torch_model
from emo_pipeline_tests.materialize import materialize, project_resources

FCN = "esm_fcn8s_32"
RAW = ("emotion6_labels", "emotion6_rejected", "emotion6_split", "emotionroi_maps", "emotionroi_split",
       "emotionroi_rejected")


@pytest.fixture(scope="module")
def materialized(world_factory, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("esm")
    resources = project_resources(world_factory(seed=3), tmp)
    instance = dg.DagsterInstance.ephemeral()
    # The suite shares two cores with other work: a second torch thread then only waits for a core,
    # and these small models train several times faster on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Two runs, so that the ESM-ResNet, pointed at the 32 px FCN by its config, runs after it.
        fcn_run = materialize(resources, (*RAW, FCN), instance=instance, raise_on_error=True,
                              run_config={"ops": {"esm_model": {"config": {"epochs": 16}}}})
        resnet_run = materialize(resources, ["esm_resnet_model", "esm_resnet_predictions"], instance=instance,
                                 raise_on_error=True,
                                 run_config={"ops": {"esm_resnet": {"config": {"epochs": 4, "esm_model": FCN}}}})
    finally:
        torch.set_num_threads(threads)
    return fcn_run, resnet_run, resources


def _metadata(result, key: str) -> dict:
    events = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    return {k: v.value for k, v in events[key].materialization.metadata.items()}


def _png(markdown: str) -> bytes:
    match = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", markdown)
    assert match, markdown[:80]
    return base64.b64decode(match.group(1))


@pytest.mark.slow
def test_fcn_beats_the_mean_training_map_on_test(materialized):
    fcn_run, _, _ = materialized
    assert fcn_run.success
    materialized_keys = {e.asset_key.to_user_string() for e in fcn_run.get_asset_materialization_events()}
    assert FCN in materialized_keys and "esm_fcn8s_64" not in materialized_keys  # the sizes materialize alone
    meta = _metadata(fcn_run, FCN)
    print(f"{FCN}: test MSE {meta['test_mse']:.4f} vs mean map {meta['test_mse_mean_map']:.4f}; "
          f"val {meta['val_mse']:.4f} vs {meta['val_mse_mean_map']:.4f}; epochs {meta['epochs_run']}")
    assert meta["test_mse"] < meta["test_mse_mean_map"]
    assert meta["val_mse"] < meta["val_mse_mean_map"]
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in fcn_run.get_asset_check_evaluations()}
    assert checks[(FCN, "maps_valid")] and checks[(FCN, "beats_mean_map")]
    assert all(checks.values()), checks


@pytest.mark.slow
def test_predicted_maps_have_the_input_size_and_lie_in_unit_range(materialized):
    _, _, resources = materialized
    model, card = load_torch_model(emo_home().models, FCN)
    assert card.kind == "esm_fcn8s" and card.size == 32
    maps = resources["warehouse"].get().read_table("emotionroi_maps")
    paths = maps["image_path"].head(6).tolist()
    for size in (32, 50):
        predicted = predict_maps(model, paths, size)
        assert predicted.shape == (6, 1, size, size)
        assert predicted.min() >= 0 and predicted.max() <= 1
    # A saturated or collapsed FCN gives one flat map for every picture; a trained one does not.
    predicted = predict_maps(model, paths, 32)
    spread, between = predicted.std(dim=(2, 3)).mean(), (predicted - predicted.mean(dim=0)).abs().mean()
    print(f"within-map std {spread:.3f}, mean distance between maps {between:.3f}")
    assert spread > 0.02 and between > 0.01


@pytest.mark.slow
def test_esm_resnet_predicts_every_image_and_beats_the_train_mean(materialized):
    _, resnet_run, resources = materialized
    assert resnet_run.success
    store = resources["warehouse"].get()
    labels, split = store.read_table("emotion6_labels"), store.read_table("emotion6_split")
    table = store.read_table("esm_resnet_predictions")
    assert list(table.columns) == ["image_key", "split", *PROB_COLUMNS]
    assert len(table) == len(labels) and table["image_key"].is_unique
    assert set(table["image_key"]) == set(labels["image_key"])
    np.testing.assert_allclose(table[list(PROB_COLUMNS)].sum(axis=1), 1.0, atol=1e-6)

    truth = labels.merge(split, on="image_key")
    model = metrics.distribution_metrics(*metrics.split_pairs(truth, table)["val"])
    baseline = metrics.distribution_metrics(*metrics.train_mean_pairs(labels, split)["val"])
    print("esm_resnet val:", {k: round(model[k], 4) for k in ("mse", "chebyshev", "kl")},
          "train mean:", {k: round(baseline[k], 4) for k in ("mse", "chebyshev", "kl")})
    for name in ("mse", "chebyshev", "kl"):
        assert model[name] < baseline[name], name
    checks = resnet_run.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == ["predictions_cover_split"] and checks[0].passed


@pytest.mark.slow
def test_esm_resnet_reads_the_fcn_map_of_each_image(materialized):
    """The table is the model's output on the map the FCN predicted, and another map changes it."""
    _, _, resources = materialized
    net, card = load_torch_model(emo_home().models, "esm_resnet")
    assert card.kind == "esm_resnet" and card.esm_model == FCN and card.esm_size == 32
    fcn, _ = load_torch_model(emo_home().models, FCN)
    store = resources["warehouse"].get()
    table = store.read_table("esm_resnet_predictions")
    rows = table[table["split"] == "val"].head(8)
    paths = store.read_table("emotion6_labels").set_index("image_key").loc[rows["image_key"], "image_path"].tolist()

    maps = predict_maps(fcn, paths, card.esm_size)
    model = MapInput(net).eval()
    with torch.inference_mode():
        inputs = torch.stack([ImagesWithMaps(paths, maps, torch.zeros(len(paths)), card.size)[i][0]
                              for i in range(len(paths))])
        with_maps = model(inputs).double()
        blank = inputs.clone()
        blank[:, 3] = 0.0
        without = model(blank).double()
    np.testing.assert_allclose(clip_distribution(with_maps, card.clip).numpy(), rows[list(PROB_COLUMNS)].to_numpy(),
                               atol=1e-5)
    change = (with_maps - without).abs().mean()
    print(f"mean change of a probability when the map is blanked: {change:.4f}")
    assert change > 1e-3


@pytest.mark.slow
def test_models_are_registered_in_mlflow(materialized):
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from emo_pipeline.storage.tracking import tracking_store, tracking_uri

    fcn_run, resnet_run, resources = materialized
    uri = tracking_uri(Path(resources["mlflow"].root))
    client = MlflowClient(tracking_uri=uri)
    for name, run in ((FCN, fcn_run), ("esm_resnet_model", resnet_run)):
        (version,) = client.search_model_versions(f"name='{name}'")
        assert version.tags["dagster.run_id"] == run.run_id and version.tags["dagster.asset_key"] == name
        logged = client.get_run(version.run_id)
        assert logged.data.tags["dagster.run_id"] == run.run_id
        assert logged.data.params["weights_source"].startswith("none: trained from scratch")
        assert "val_loss" in logged.data.metrics
    fcn_logged = client.get_run(client.search_model_versions(f"name='{FCN}'")[0].run_id)
    assert fcn_logged.data.metrics["test_mse"] < fcn_logged.data.metrics["test_mse_mean_map"]
    with tracking_store(Path(resources["mlflow"].root)):
        loaded = mlflow.pyfunc.load_model(f"models:/{FCN}/1")
    assert loaded.predict(np.zeros((2, 3, 32, 32), dtype=np.float32)).shape == (2, 1, 32, 32)


@pytest.mark.slow
def test_metadata_shows_the_maps_and_how_the_models_were_trained(materialized):
    fcn_run, resnet_run, _ = materialized
    meta = _metadata(fcn_run, FCN)
    assert meta["pretrained"] is False and meta["weights_source"].startswith("none: trained from scratch")
    assert meta["epochs_run"] <= 16 and meta["size"] == 32
    assert "image | true map | predicted map | difference" in meta["test_samples"]
    assert _png(meta["test_samples"]).startswith(b"\x89PNG") and _png(meta["training_curve"]).startswith(b"\x89PNG")
    weights = Path(meta["weights"])
    assert weights.is_file() and weights.with_suffix(".json").is_file()
    assert not (emo_home().root / "checkpoints" / FCN).exists()  # resume checkpoints of a finished run are gone

    resnet = _metadata(resnet_run, "esm_resnet_model")
    assert resnet["esm_model"] == FCN and resnet["esm_size"] == 32
    assert _png(resnet["predicted_maps"]).startswith(b"\x89PNG")
    assert resnet["val_mse"] < resnet["val_train_mean_mse"]


# --- library pieces, no training -------------------------------------------------------------------------

def test_validation_is_carved_from_train_by_emotion_and_test_is_untouched():
    keys = [f"{e}/{n}.jpg" for e in KEYWORDS for n in range(1, 21)]
    maps = pd.DataFrame({"image_key": keys, "emotion": [k.split("/")[0] for k in keys]})
    split = pd.DataFrame({"image_key": keys, "split": ["test" if int(k.split("/")[1][:-4]) > 14 else "train"
                                                       for k in keys]})
    parts = esm_split(maps, split, 0.15, seed=0)
    assert parts.equals(esm_split(maps, split, 0.15, seed=0))
    counts = parts.merge(maps, on="image_key").groupby(["split", "emotion"]).size().unstack()
    assert (counts.loc["test"] == 6).all()  # EmotionROI's test split as it came
    assert (counts.loc["val"] >= 1).all() and counts.loc["val"].sum() == round(0.15 * 84)
    train_keys = set(split.loc[split["split"] == "train", "image_key"])
    assert set(parts.loc[parts["split"] == "val", "image_key"]) <= train_keys
    assert not parts.equals(esm_split(maps, split, 0.15, seed=1))


def test_mirrored_pairs_flip_image_and_map_together():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    maps = torch.rand(2, 1, 4, 4)
    base = list(zip(images, maps))
    mirrored = MirroredPairs(base)
    assert len(mirrored) == 4
    image, esm = mirrored[3]
    assert torch.equal(image, images[1].flip(-1)) and torch.equal(esm, maps[1].flip(-1))
    assert torch.equal(mirrored[0][0], images[0])


def test_a_narrow_trunk_trains_from_scratch_and_says_why():
    from emo_pipeline.models import build_fcn8s

    model, info = build_fcn8s(trunk_width=8, fc_channels=16)
    assert not info.pretrained and "cannot take VGG-16's ImageNet weights" in info.source
    assert model.features[0].out_channels == 8 and model.score_pool4.in_channels == 64
    with torch.no_grad():
        assert model(torch.randn(1, 3, 50, 50)).shape == (1, 1, 50, 50)
    with pytest.raises(ValueError, match="trunk_width=64"):
        build_fcn8s(trunk_width=8, pretrained="required")


@pytest.mark.slow
def test_predict_command_rebuilds_the_esm_resnet_with_its_fcn(materialized):
    """`emo-pipeline predict --model esm_resnet` runs the FCN first and lands on the table's values."""
    from emo_pipeline.image_emotion.predict import predict_images

    _, _, resources = materialized
    store = resources["warehouse"].get()
    rows = store.read_table("esm_resnet_predictions").head(6)
    paths = store.read_table("emotion6_labels").set_index("image_key").loc[rows["image_key"], "image_path"].tolist()
    prediction = predict_images(paths, "esm_resnet", emo_home().models)
    assert prediction.paths == paths
    # The FCN sees the image resized from the ResNet's input rather than decoded at its own side:
    # close to the training-time maps, not bit-identical.
    np.testing.assert_allclose(prediction.distributions, rows[list(PROB_COLUMNS)].to_numpy(), atol=0.03)
