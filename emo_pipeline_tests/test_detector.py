"""The object detector of dataset A: YOLO dataset, training offline, user weights, Emotion6 detections.

One synthetic world; the detector is trained on its Visual Genome pictures and scored on its Emotion6
pictures, which it never saw, against the boxes the generator planted there (planted_scenes.json).
The recall is computed here from the emotion6_detections table, not by ultralytics.
"""

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from emo_pipeline.defs import detection
from emo_pipeline.defs.shared.resources import TorchDeviceResource
from emo_pipeline.detection import pretrained, ultralytics_offline, yolo_dataset
from emo_pipeline.detection.detect import DETECTION_COLUMNS
from emo_pipeline.synthetic import grammar, recovery
from emo_pipeline_tests.materialize import materialize, project_resources

SEED = 3
EPOCHS = 8
# Recall of planted objects at IoU >= 0.5 and confidence >= 0.2 measured with seed 3 and 8 epochs at
# 160 px (2 CPU cores): 0.24 over all objects (0.76 for the sky/grass/road bands, under 0.05 for the
# other objects, which need more epochs: see README). The floors leave a wide margin.
RECALL_FLOOR = 0.15
# Object kinds the generator draws as full-width bands along the top or bottom of a picture.
BANDS = {kind.name for kind in grammar.OBJECTS if kind.placement in (grammar.SKY_BAND, grammar.GROUND_BAND)}
VG_ASSETS = ("vg_images", "vg_objects", "vg_relationships", "vg_attributes", "vg_rejected")


class NetworkAttempt(OSError):
    pass


def _guard_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse and record every attempt to resolve a host name or open a non-local socket."""
    attempts: list[str] = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family != socket.AF_UNIX:
            attempts.append(f"connect {address!r}")
            raise NetworkAttempt(f"network access attempted: {address!r}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(f"getaddrinfo {host!r}")
        raise socket.gaierror(f"network access attempted: {host!r}")

    def create_connection(address, *args, **kwargs):
        attempts.append(f"create_connection {address!r}")
        raise NetworkAttempt(f"network access attempted: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return attempts


@pytest.fixture(scope="module")
def runs(world_factory, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("detector")
    world = world_factory(seed=SEED)
    resources = project_resources(world, tmp, torch_device=TorchDeviceResource(device="cpu"))
    torch_before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    cwd = tmp / "cwd"  # anything ultralytics drops in the working directory would show up here
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.delenv("EMO_DETECTOR_WEIGHTS", raising=False)
        attempts = _guard_network(patch)
        trained = materialize(
            resources, (*VG_ASSETS, "emotion6_labels", "emotion6_rejected", detection.DETECTOR, detection.DETECTIONS),
            run_config={"ops": {detection.DETECTOR: {"config": {"epochs": EPOCHS, "imgsz": 160, "seed": SEED,
                                                                  "pretrained": False}}}},
            raise_on_error=True)
        trained_table = resources["warehouse"].get().read_table(detection.DETECTIONS)

        # Second run: the weights saved by the first, given back as a user's file. Training must not run.
        user_weights = tmp / "user" / "my_detector.pt"
        user_weights.parent.mkdir()
        shutil.copyfile(detection.detector_weights_path(resources["models"]), user_weights)

        def no_training(*args, **kwargs):
            raise AssertionError("train_detector was called although weights were given")

        patch.setattr(detection, "train_detector", no_training)
        reused = materialize(
            resources, [detection.DETECTOR, detection.DETECTIONS],
            run_config={"ops": {detection.DETECTOR: {"config": {"weights_path": str(user_weights)}}}},
            raise_on_error=True)
        reused_table = resources["warehouse"].get().read_table(detection.DETECTIONS)

        # Third run: nothing given, so the demo profile's shipped weights.
        shipped = materialize(resources, [detection.DETECTOR, detection.DETECTIONS], raise_on_error=True)
        shipped_table = resources["warehouse"].get().read_table(detection.DETECTIONS)
    return {"trained": trained, "reused": reused, "trained_table": trained_table, "reused_table": reused_table,
            "shipped": shipped, "shipped_table": shipped_table, "resources": resources,
            "world": world, "attempts": attempts, "cwd": cwd, "user_weights": user_weights,
            "torch_before": torch_before,
            "torch_after": (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())}


def _metadata(result, key: str) -> dict:
    events = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    return {k: v.value for k, v in events[key].materialization.metadata.items()}


def planted_recall(detections: pd.DataFrame, world: Path, names: set[str]) -> tuple[int, int]:
    """Planted objects of the detector's classes `names` matched one to one by a detection of the same
    name at IoU >= 0.5 (`planted_truth_recovery`'s measure). Returns (matched, planted)."""
    recall = recovery.planted_object_recall(world, detections)
    chosen = recall[recall["object"].isin(names)]
    return int(chosen["recovered"].sum()), int(chosen["planted"].sum())


@pytest.mark.slow
def test_runs_succeed_offline_without_stray_files(runs):
    assert runs["trained"].success and runs["reused"].success
    assert runs["attempts"] == []
    for key, value in {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}.items():
        assert os.environ[key] == value
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    assert Path(USER_CONFIG_DIR) == Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    assert (Path(USER_CONFIG_DIR) / "Arial.ttf").stat().st_size > 100_000
    assert SETTINGS["sync"] is False and SETTINGS["mlflow"] is False and SETTINGS["tensorboard"] is False
    # ultralytics' own MLflow callback would have left mlflow.db / mlruns, its runs a runs/ folder.
    assert list(runs["cwd"].iterdir()) == []
    # ultralytics sets torch's thread count and deterministic mode for the whole process; both are put back.
    assert runs["torch_after"] == runs["torch_before"]


@pytest.mark.slow
def test_yolo_dataset_has_one_label_file_per_image_and_normalised_boxes(runs):
    metadata = _metadata(runs["trained"], detection.DETECTOR)
    root = Path(metadata["dataset"])
    data = yaml.safe_load((root / "data.yaml").read_text())
    names = [data["names"][i] for i in range(len(data["names"]))]
    assert names == metadata["classes"]
    objects = runs["resources"]["warehouse"].get().read_table("vg_objects")
    # The demo profile's vocabulary (40 names) covers the synthetic world's object kinds, most frequent first.
    assert names == yolo_dataset.vocabulary(objects, 40)
    assert set(names) <= set(objects["name"])
    vg_images = runs["resources"]["warehouse"].get().read_table("vg_images")
    total = 0
    for split in ("train", "val"):
        images = sorted(p.stem for p in (root / "images" / split).iterdir())
        labels = sorted(p.stem for p in (root / "labels" / split).glob("*.txt"))
        assert images == labels and images
        total += len(images)
        for label in (root / "labels" / split).glob("*.txt"):
            rows = np.loadtxt(label, ndmin=2)
            if rows.size:
                assert rows.shape[1] == 5
                assert ((rows[:, 0] >= 0) & (rows[:, 0] < len(names))).all()
                assert ((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)).all()
                assert (rows[:, 3:] > 0).all()
    assert total == len(vg_images) == metadata["dataset_images"]["train"] + metadata["dataset_images"]["val"]
    assert metadata["dataset_boxes"]["train"] + metadata["dataset_boxes"]["val"] == \
        objects["name"].isin(names).sum()


@pytest.mark.slow
def test_trained_detector_finds_planted_objects_on_held_out_images(runs):
    metadata = _metadata(runs["trained"], detection.DETECTOR)
    assert metadata["trained"] is True
    assert metadata["path_taken"] == "trained from yolo11n.yaml, random init"
    assert metadata["epochs_run"] == EPOCHS
    scenes = json.loads((runs["world"] / "planted_scenes.json").read_text())["Emotion6"]
    table = runs["trained_table"]
    classes = set(metadata["classes"])
    bands = classes & BANDS
    # A detector that does not look at the image: every image's detections moved to the next image.
    # It keeps the location prior (sky on top, grass and road at the bottom) and nothing else.
    keys = sorted(scenes)
    shifted = table.assign(image_key=table["image_key"].map(dict(zip(keys, keys[1:] + keys[:1]))))
    recalls = {}
    for group, names in (("all", classes), ("bands", bands), ("foreground", classes - bands)):
        matched, planted = planted_recall(table, runs["world"], names)
        recalls[group] = matched / planted
        recalls[f"{group}_shifted"] = planted_recall(shifted, runs["world"], names)[0] / planted
        print(f"{group}: recall {matched}/{planted} = {recalls[group]:.3f}, "
              f"shifted {recalls[f'{group}_shifted']:.3f}")
    assert planted_recall(table, runs["world"], classes)[1] > 500
    assert recalls["all"] > RECALL_FLOOR
    assert recalls["all"] > recalls["all_shifted"] + 0.05
    assert recalls["bands"] > recalls["bands_shifted"] + 0.15


@pytest.mark.slow
def test_every_emotion6_image_has_a_row(runs):
    table = runs["trained_table"]
    labels = runs["resources"]["warehouse"].get().read_table("emotion6_labels")
    assert set(table["image_key"]) == set(labels["image_key"])
    assert list(table.columns) == list(DETECTION_COLUMNS)
    empty = table[table["object"].isna()]
    assert empty["image_key"].is_unique
    assert not set(empty["image_key"]) & set(table.dropna(subset=["object"])["image_key"])
    assert empty[["confidence", "x", "y", "w", "h"]].isna().all().all()
    found = table.dropna(subset=["object"])
    assert len(found) and (found["confidence"] >= 0.2).all()
    metadata = _metadata(runs["trained"], detection.DETECTIONS)
    assert metadata["images"] == len(labels)
    assert metadata["images_without_detection"] == len(empty)
    assert metadata["detections"] == len(found)
    checks = runs["trained"].get_asset_check_evaluations()
    assert any(c.check_name == "every_emotion6_image_present" and c.passed for c in checks)
    assert all(c.passed for c in checks)


@pytest.mark.slow
def test_user_weights_are_loaded_and_nothing_is_trained(runs):
    metadata = _metadata(runs["reused"], detection.DETECTOR)
    assert metadata["trained"] is False
    assert metadata["path_taken"] == f"user weights {runs['user_weights'].resolve()}"
    assert metadata["classes"] == _metadata(runs["trained"], detection.DETECTOR)["classes"]
    assert "epochs_run" not in metadata
    assert metadata["weights_sha256"] == hashlib.sha256(runs["user_weights"].read_bytes()).hexdigest()
    # Same weights, same images: the same table.
    pd.testing.assert_frame_equal(runs["reused_table"], runs["trained_table"], check_exact=False, atol=1e-3)


@pytest.mark.slow
def test_the_demo_starts_from_the_shipped_weights_which_find_the_planted_objects_of_a_world_they_never_saw(runs):
    metadata = _metadata(runs["shipped"], detection.DETECTOR)
    assert metadata["trained"] is False
    assert metadata["path_taken"].startswith("shipped weights pretrained on a synthetic world (seed 1, ")
    assert metadata["pretraining"]["world"]["seed"] != SEED
    assert metadata["weights_sha256"] == pretrained.SHIPPED_SHA256
    installed = detection.detector_weights_path(runs["resources"]["models"])
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == pretrained.SHIPPED_SHA256
    assert set(metadata["classes"]) == {kind.name for kind in grammar.OBJECTS}
    # planted_truth_recovery's figures, on this world's Emotion6 (seed 3): issue 15's targets.
    recall, kinds = recovery.detector_rows(recovery.planted_object_recall(runs["world"], runs["shipped_table"]))
    print(f"shipped weights on world seed {SEED}: recall {recall['value']:.3f}, {kinds['value']:.0f} kinds")
    assert recovery.DETECTOR_RECALL_TARGET == 0.6 and recovery.DETECTOR_KINDS_TARGET == 30
    assert recall["met"] and kinds["met"]


@pytest.mark.slow
def test_mlflow_records_the_path_taken_metrics_and_weights(runs):
    from mlflow.tracking import MlflowClient

    from emo_pipeline.storage.mlflow_models import local_path
    from emo_pipeline.storage.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(Path(runs["resources"]["mlflow"].root)))
    for result, trained in ((runs["trained"], True), (runs["reused"], False), (runs["shipped"], False)):
        run_id = _metadata(result, detection.DETECTOR)["mlflow_run_id"]
        run = client.get_run(run_id)
        assert run.data.tags["dagster.run_id"] == result.run_id
        assert run.data.params["trained"] == str(trained)
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert {"object_detector.pt", "classes.json"} <= artifacts
        if trained:
            assert run.data.params["path_taken"] == "trained from yolo11n.yaml, random init"
            assert {"val_mAP50", "val_mAP50-95", "val_precision", "val_recall"} <= set(run.data.metrics)
            history = client.get_metric_history(run_id, "train_box_loss")
            assert len(history) == EPOCHS
        else:
            assert run.data.params["path_taken"].startswith(("user weights ", "shipped weights "))
    # The installed weights are the last run's logged artifact itself (one file on disk).
    installed = detection.detector_weights_path(runs["resources"]["models"])
    logged = local_path(f"{client.get_run(run_id).info.artifact_uri}/object_detector.pt")
    assert installed.samefile(logged) and installed.stat().st_nlink == 2


def test_write_yolo_dataset_clips_boxes_skips_missing_files_and_rewrites_in_place(tmp_path: Path):
    from PIL import Image

    source = tmp_path / "vg"
    (source / "VG_100K").mkdir(parents=True)
    for image_id in (1, 2, 3):
        Image.new("RGB", (100, 50)).save(source / "VG_100K" / f"{image_id}.jpg")
    images = pd.DataFrame({"image_id": [1, 2, 3, 4], "width": [100] * 4, "height": [50] * 4,
                           "image_path": [f"VG_100K/{i}.jpg" for i in (1, 2, 3, 4)]})  # 4 has no file
    objects = pd.DataFrame({
        "image_id": [1, 1, 2, 4],
        "name": ["Dog", "tree", "dog", "dog"],
        "x": [90, 0, 10, 0], "y": [40, 0, 10, 0], "w": [30, 50, 20, 10], "h": [20, 25, 10, 10],
    })
    assert yolo_dataset.vocabulary(objects, 1) == ["dog"]
    out = tmp_path / "yolo"
    first = yolo_dataset.write_yolo_dataset(images, objects, ["dog"], source, out, val_share=0.34, seed=0)
    assert first.missing_images == 1 and sum(first.images.values()) == 3 and first.background_images == 1
    labels = {p.stem: p.read_text() for p in out.glob("labels/*/*.txt")}
    assert set(labels) == {"1", "2", "3"} and labels["3"] == ""
    # The box of image 1 ran past the right and bottom edges: clipped to [90, 100) x [40, 50).
    assert labels["1"] == "0 0.950000 0.900000 0.100000 0.200000\n"
    assert labels["2"] == "0 0.200000 0.300000 0.200000 0.200000\n"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    yolo_dataset.write_yolo_dataset(images, objects, ["dog"], source, out, val_share=0.34, seed=0)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert yaml.safe_load((out / "data.yaml").read_text())["path"] == str(out.resolve())


def test_damaged_images_stay_rejected_after_ultralytics_is_loaded(tmp_path: Path):
    """ultralytics patches PIL's open process-wide; the readers must still see PIL's own error."""
    from PIL import Image, UnidentifiedImageError

    ultralytics_offline.prepare_ultralytics()
    import ultralytics  # noqa: F401  - the import applies the patch

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UnidentifiedImageError):
        Image.open(broken)
