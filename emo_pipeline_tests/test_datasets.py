"""Dataset B: sharded Visual Genome predictions that resume after a crash, the joined tables and their SQL."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.home import emo_home
from emo_pipeline.datasets.build import (
    SHARDS,
    predict_shard,
    resolve_image_paths,
    select_images,
    shard_images,
    shard_keys,
)
from emo_pipeline.defs.shared.resources import WarehouseResource
from emo_pipeline.storage.model_store import card_version, load_card
from emo_pipeline.storage.warehouse import Warehouse
from emo_pipeline_tests.materialize import materialize, project_resources

FULL_RANGE = {"dagster/asset_partition_range_start": shard_keys()[0],
              "dagster/asset_partition_range_end": shard_keys()[-1]}
PREDICTIONS = "vg_emotion_predictions"


@pytest.fixture(scope="module")
def ingested(world, tmp_path_factory: pytest.TempPathFactory):
    """The session's world ingested, with the small CNN trained and scored (the default model of dataset B)."""
    tmp = tmp_path_factory.mktemp("datasets")
    resources = project_resources(world, tmp)
    keys = ["emotion6_labels", "emotion6_rejected", "emotion6_split", "vg_images", "vg_objects", "vg_relationships",
            "vg_attributes", "vg_rejected", "small_cnn_model", "small_cnn_predictions", "emotion_distribution_metrics"]
    result = materialize(resources, keys, run_config={"ops": {"small_cnn": {"config": {"epochs": 2}}}})
    assert result.success
    return tmp, resources


def _with_warehouse(resources: dict, root) -> dict:
    """The same models and data in another warehouse, sharing the ingested tables."""
    target = Warehouse(root)
    shutil.copytree(resources["warehouse"].get().tables_dir, target.tables_dir)
    target.refresh_views()
    return {**resources, "warehouse": WarehouseResource(root=str(root))}


@pytest.mark.slow
def test_a_crashed_run_resumes_without_redoing_finished_shards(ingested):
    tmp, base = ingested
    crashed = _with_warehouse(base, tmp / "crashed")
    store = crashed["warehouse"].get()
    # A folder where shard_05's file must go makes the rename fail there: the run dies mid-way, as on a
    # full disk, after shards 00-04 were written.
    blocker = store.partition_path(PREDICTIONS, "shard_05")
    blocker.mkdir(parents=True)
    first = materialize(crashed, [PREDICTIONS], tags=FULL_RANGE)
    assert not first.success
    done = {key: store.partition_path(PREDICTIONS, key) for key in shard_keys()[:5]}
    assert all(path.is_file() for path in done.values())
    assert not any(store.partition_path(PREDICTIONS, key).is_file() for key in shard_keys()[6:])
    stamps = {key: path.stat().st_mtime_ns for key, path in done.items()}

    blocker.rmdir()
    second = materialize(crashed, [PREDICTIONS], tags=FULL_RANGE)
    assert second.success
    assert {key: path.stat().st_mtime_ns for key, path in done.items()} == stamps  # not redone
    event = second.get_asset_materialization_events()[0]  # one per shard, the same metadata on each
    kept = sum(len(store.read_partition(PREDICTIONS, key)) for key in done)
    assert event.materialization.metadata["images_kept_from_earlier_run"].value == kept

    clean = _with_warehouse(base, tmp / "uninterrupted")
    straight_run = materialize(clean, [PREDICTIONS], tags=FULL_RANGE)
    assert straight_run.success
    # The same model version over the same images: the same data version, so nothing built on the
    # predictions goes stale when a run only keeps what was there.
    versions = {run.get_asset_materialization_events()[0].materialization.tags["dagster/data_version"]
                for run in (second, straight_run)}
    assert len(versions) == 1 and versions.pop().startswith("small_cnn-")
    resumed = store.read_table(PREDICTIONS).sort_values("image_id").reset_index(drop=True)
    straight = clean["warehouse"].get().read_table(PREDICTIONS).sort_values("image_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(resumed, straight)
    assert len(resumed) == store.table_row_count("vg_images")
    assert set(resumed["model"]) == {"small_cnn"}  # the only scored model is the best one


@pytest.mark.slow
def test_dataset_b_covers_every_image_and_answers_sql(ingested):
    tmp, base = ingested
    resources = _with_warehouse(base, tmp / "dataset_b")
    assert materialize(resources, [PREDICTIONS], tags=FULL_RANGE).success
    result = materialize(resources, ["dataset_b", "dataset_b_objects", "dataset_b_relationships"])
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} >= {"every_image_once", "distributions_sum_to_one"}
    assert all(c.passed for c in checks)

    store = resources["warehouse"].get()
    images = store.read_table("vg_images")
    table = store.read_table("dataset_b")
    assert len(table) == len(images) and table["readable"].all()  # the synthetic world has every picture
    np.testing.assert_allclose(table[list(EMOTIONS)].sum(axis=1), 1.0, atol=1e-6)
    # The per-object table has one row per annotated object, carrying its image's emotions.
    objects = store.read_table("vg_objects")
    assert store.table_row_count("dataset_b_objects") == len(objects)
    assert store.table_row_count("dataset_b_relationships") == store.table_row_count("vg_relationships")
    counts = objects.groupby("image_id").size()
    merged = table.set_index("image_id")["objects"]
    assert (merged.loc[counts.index] == counts).all()

    profile = store.query("""SELECT object, count(*) AS n, avg(joy) AS joy FROM dataset_b_objects
                             GROUP BY object ORDER BY n DESC LIMIT 3""")
    assert len(profile) == 3 and profile["joy"].between(0, 1).all()
    top = store.query("SELECT dominant_emotion, count(*) AS n FROM dataset_b GROUP BY 1")
    assert top["n"].sum() == len(images)


@pytest.mark.slow
def test_dataset_b_of_a_sample_has_that_many_images(ingested):
    tmp, base = ingested
    resources = _with_warehouse(base, tmp / "sample")
    store = resources["warehouse"].get()
    every = store.table_row_count("vg_images")
    count = every // 3
    config = {"ops": {PREDICTIONS: {"config": {"images": count, "sample_seed": 4}}}}
    run = materialize(resources, [PREDICTIONS], tags=FULL_RANGE, run_config=config)
    assert run.success
    predictions = store.read_table(PREDICTIONS)
    assert len(predictions) == count == predictions["image_id"].nunique()  # across the 16 shards
    metadata = run.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["images_setting"].value, metadata["sample_seed"].value) == (count, 4)
    assert (metadata["images_selected"].value, metadata["visual_genome_images"].value) == (count, every)
    # The same seed in another warehouse predicts the same images.
    again = _with_warehouse(base, tmp / "sample_again")
    assert materialize(again, [PREDICTIONS], tags=FULL_RANGE, run_config=config).success
    assert sorted(again["warehouse"].get().read_table(PREDICTIONS)["image_id"]) == sorted(predictions["image_id"])

    result = materialize(resources, ["dataset_b", "dataset_b_objects", "dataset_b_relationships"])
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    table = store.read_table("dataset_b")
    assert sorted(table["image_id"]) == sorted(predictions["image_id"])
    objects = store.read_table("vg_objects")
    assert store.table_row_count("dataset_b_objects") == objects["image_id"].isin(predictions["image_id"]).sum()


@pytest.mark.slow
def test_images_without_a_file_keep_their_row(ingested, tmp_path):
    _, base = ingested
    images = pd.DataFrame({"image_id": [1, 2, 3], "image_path": [None, str(tmp_path / "gone.jpg"), None]})
    first_image = base["warehouse"].get().read_table("vg_images")["image_path"].iloc[0]
    images.loc[2, "image_path"] = str(base["data_roots"].vg() / first_image)
    models = emo_home().models
    card = load_card(models, "small_cnn")
    frame = predict_shard(images, card, models, card_version(models, "small_cnn"))
    assert frame["readable"].tolist() == [False, False, True]
    assert frame.loc[:1, list(PROB_COLUMNS)].isna().all().all()
    assert frame.loc[:1, "dominant_emotion"].isna().all()
    assert abs(frame.loc[2, list(PROB_COLUMNS)].sum() - 1) < 1e-6


def test_shards_partition_the_image_ids():
    assert len(shard_keys()) == SHARDS and len(set(shard_keys())) == SHARDS


def _vg_images(n: int = 500) -> pd.DataFrame:
    ids = np.random.default_rng(1).choice(10**6, size=n, replace=False)
    return pd.DataFrame({"image_id": ids, "image_path": [f"VG_100K/{i}.jpg" for i in ids]})


def test_a_sample_of_n_images_gives_n_rows_across_the_shards_and_the_same_seed_the_same_images():
    images = _vg_images()
    sample = select_images(images, 120, seed=0)
    per_shard = [shard_images(sample, key) for key in shard_keys()]
    assert sum(len(shard) for shard in per_shard) == 120 == sample["image_id"].nunique()
    assert set(sample["image_id"]) <= set(images["image_id"])
    # The same seed draws the same images, whatever the order the table comes in; another seed others.
    shuffled = images.sample(frac=1.0, random_state=7)
    assert select_images(shuffled, 120, seed=0)["image_id"].tolist() == sample["image_id"].tolist()
    assert set(select_images(images, 120, seed=1)["image_id"]) != set(sample["image_id"])
    # 0 takes every image; a sample larger than the images with a file takes all of those.
    assert len(select_images(images, 0)) == len(images)
    without_files = images.assign(image_path=images["image_path"].where(images.index % 2 == 0, None))
    with_files = select_images(without_files, 400)
    assert len(with_files) == 250 and with_files["image_path"].notna().all()
    with pytest.raises(ValueError, match="positive count"):
        select_images(images, -5)


def test_image_paths_stay_inside_the_data_root(tmp_path):
    images = pd.DataFrame({"image_id": [1, 2, 3], "image_path": ["VG_100K/1.jpg", "../../etc/passwd", None]})
    resolved = resolve_image_paths(images, tmp_path)
    assert resolved["image_path"].iloc[0] == str(tmp_path.resolve() / "VG_100K" / "1.jpg")
    assert resolved["image_path"].iloc[1:].isna().all()


def test_image_paths_follow_links_inside_the_root_and_refuse_paths_that_leave_it(tmp_path):
    """VG_100K linked to another disk is followed; the decision is on the path as written."""
    disk = tmp_path / "disk" / "VG_100K"
    disk.mkdir(parents=True)
    (disk / "1.jpg").write_bytes(b"jpeg")
    root = tmp_path / "VG"
    root.mkdir()
    (root / "VG_100K").symlink_to(disk, target_is_directory=True)
    images = pd.DataFrame({"image_id": [1, 2, 3, 4, 5],
                           "image_path": ["VG_100K/1.jpg", "VG_100K_2/../VG_100K/1.jpg", "../disk/VG_100K/1.jpg",
                                          "/etc/passwd", "VG_100K/../../disk/VG_100K/1.jpg"]})
    resolved = resolve_image_paths(images, root)
    inside = str(root.resolve() / "VG_100K" / "1.jpg")
    assert list(resolved["image_path"].iloc[:2]) == [inside, inside]
    assert Path(inside).read_bytes() == b"jpeg"
    assert resolved["image_path"].iloc[2:].isna().all()


@pytest.mark.slow
def test_dataset_a_joins_labels_and_detections(ingested, tmp_path):
    _, base = ingested
    resources = _with_warehouse(base, tmp_path / "dataset_a")
    store = resources["warehouse"].get()
    labels = store.read_table("emotion6_labels")
    first, second = labels["image_key"].iloc[0], labels["image_key"].iloc[1]
    # Two detections in the first image, none in the second (the detector's NULL row), the rest absent
    # from the detector's output would break its own check, so they get NULL rows too.
    rows = [(first, "dog", 0.9, 1, 2, 30, 40), (first, "grass", 0.5, 0, 50, 160, 70)]
    rows += [(key, None, None, None, None, None, None) for key in labels["image_key"].iloc[1:]]
    detections = pd.DataFrame(rows, columns=["image_key", "object", "confidence", "x", "y", "w", "h"])
    store.write_table("emotion6_detections", detections.astype({"object": "string"}))
    result = materialize(resources, ["dataset_a", "dataset_a_objects"])
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())

    table = store.read_table("dataset_a").set_index("image_key")
    assert len(table) == len(labels)
    assert table.loc[first, "objects"] == 2 and list(table.loc[first, "object_names"]) == ["dog", "grass"]
    assert table.loc[second, "objects"] == 0 and len(table.loc[second, "object_names"]) == 0
    true_joy = labels.set_index("image_key").loc[first, "prob_joy"]
    assert table.loc[first, "joy"] == pytest.approx(true_joy)
    objects = store.query("SELECT image_key, object, joy FROM dataset_a_objects ORDER BY confidence DESC")
    assert objects["object"].tolist() == ["dog", "grass"] and (objects["image_key"] == first).all()
