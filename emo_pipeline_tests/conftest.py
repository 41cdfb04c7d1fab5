"""Shared fixtures: the real data sets beside the checkout, a fresh EMO_HOME per test session, the
synthetic worlds (each written once a session) and the `objects` run on them."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emo_pipeline.core.home import PROJECT_ROOT


def shared_datasets() -> Path:
    return Path(os.environ.get("EMO_SHARED_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))


def _real_data_set(folder: str, marker: str, name: str) -> Path:
    """The real data set in `folder` of the shared datasets, or a skip that says where it was looked for."""
    path = shared_datasets() / folder
    if not (path / marker).is_file():
        pytest.skip(f"the real {name} is not at {path} (set EMO_SHARED_DATASETS to the datasets folder)")
    return path


@pytest.fixture(scope="session")
def real_emotion6() -> Path:
    return _real_data_set("Emotion6", "ground_truth.txt", "Emotion6")


@pytest.fixture(scope="session")
def real_vg_sample() -> Path:
    return _real_data_set("visual_genome_sample", "objects.json", "Visual Genome sample")


REAL_DATA_FIXTURES = {"real_emotion6", "real_vg_sample"}

# `make test` runs the tests in pytest-xdist worker processes side by side. One math-library thread
# each: two workers with two threads each fight for two cores (`make test-fast`: 181 s in one process,
# 145 s in two workers of two threads, 113 s in two of one).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reads the real data sets, through one of their fixtures, is marked `real_data`."""
    for item in items:
        if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_data)


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Environment variables set for a block of this process, restored afterwards."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pipeline_env(home: Path, world: Path, **extra: str) -> dict[str, str]:
    """The environment of a `dagster` or `emo-pipeline` process on a synthetic world, with its own home."""
    return {
        **os.environ,
        "EMO_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "EMO_EMOTION6_DIR": str(world / "Emotion6"),
        "EMO_EMOTIONROI_DIR": str(world / "EmotionROI"),
        "EMO_VG_DIR": str(world / "VG"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **extra,
    }


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory):
    """Tests never touch the user's EMO_HOME."""
    home = tmp_path_factory.mktemp("emo_home")
    previous = os.environ.get("EMO_HOME")
    os.environ["EMO_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("EMO_HOME", None)
    else:
        os.environ["EMO_HOME"] = previous


WORLD_SEED = 11

WorldFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def world_factory(tmp_path_factory: pytest.TempPathFactory) -> WorldFactory:
    """`world_factory(seed=11, scale="demo", images=True)`: the synthetic world of that seed, scale and
    picture setting, written the first time a test asks for it and shared by the whole session.

    The worlds are read-only: a test that changes one works on a copy (`world_copy`).
    """
    from emo_pipeline.synthetic import write_world

    worlds: dict[tuple[int, str, bool], Path] = {}

    def world_of(seed: int = WORLD_SEED, scale: str = "demo", images: bool = True) -> Path:
        key = (seed, scale, images)
        if key not in worlds:
            root = tmp_path_factory.mktemp(f"world_{seed}_{scale}" + ("" if images else "_annotations"))
            write_world(root, seed=seed, scale=scale, images=images)
            worlds[key] = root
        return worlds[key]

    return world_of


@pytest.fixture(scope="session")
def world(world_factory: WorldFactory) -> Path:
    """The demo world of seed 11 with all its pictures, shared by the session (read-only)."""
    return world_factory()


@pytest.fixture
def world_copy(world: Path, tmp_path: Path) -> Path:
    """A copy of the session's world that the test may change."""
    return Path(shutil.copytree(world, tmp_path / "world"))


@pytest.fixture(scope="session")
def objects_run(tmp_path_factory: pytest.TempPathFactory, world_factory: WorldFactory) -> dict:
    """The `objects` and `scenes` groups materialized on the planted datasets A and B of a demo world.

    Returns the warehouse (`store`), the world folder, the asset check results by name, the word
    vectors, the MLflow folder and each asset's materialization metadata by name; models and scenes
    go to the session's EMO_HOME.
    """
    from emo_pipeline.defs.shared.resources import WordVectorsResource
    from emo_pipeline.objects.word_vectors import load_glove
    from emo_pipeline_tests.materialize import group_keys, materialize, project_resources
    from emo_pipeline_tests.planted_datasets import write_planted_datasets

    tmp = tmp_path_factory.mktemp("objects")
    world = world_factory(images=False)
    store = write_planted_datasets(world, tmp / "warehouse")
    resources = project_resources(world, tmp, word_vectors=WordVectorsResource(cache_dir=str(tmp / "word_vectors")))
    keys = group_keys("objects", "scenes")
    config = {"ops": {
        **{k.to_user_string(): {"config": {"epochs": 20}} for k in keys
           if k.to_user_string().startswith("objects_emotion_")},
        **{f"emotion_objects_mlp_{d}": {"config": {"epochs": 4,
                                                    "normalisations": ["inverse_total_count", "inverse_log_count"]}}
           for d in "ab"}}}
    result = materialize(resources, keys, run_config=config)
    assert result.success
    checks = {e.event_specific_data.check_name: e.event_specific_data.passed for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    metadata = {e.materialization.asset_key.to_user_string(): e.materialization.metadata
                for e in result.get_asset_materialization_events()}
    return {"store": store, "world": world, "checks": checks, "vectors": load_glove(tmp / "word_vectors"),
            "mlflow": tmp / "mlflow", "metadata": metadata}


def feature_tables(values, logits, seed: int):
    """A features table (image_key, f0, f1, ...), labels (softmax of `logits`) and a stratified split, for
    tests of the feature models."""
    import numpy as np
    import pandas as pd

    from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
    from emo_pipeline.core.splits import stratified_split

    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    keys = [f"k{i:03d}" for i in range(len(values))]
    table = pd.DataFrame(values, columns=[f"f{j}" for j in range(values.shape[1])])
    table.insert(0, "image_key", keys)
    labels = pd.DataFrame(probs, columns=list(PROB_COLUMNS))
    labels.insert(0, "image_key", keys)
    return table, labels, stratified_split(keys, [EMOTIONS[i] for i in probs.argmax(axis=1)], seed=seed)


def assert_beats_the_train_mean_and_predicts_every_image(fitted, table, split) -> None:
    """What a fitted feature model (`.scores`, `.predictions`) must show on a feature world: validation
    KL and Chebyshev well below the train mean's, and one distribution (rows summing to 1) for every
    image of `table`, in its split."""
    import numpy as np

    from emo_pipeline.core.emotions import PROB_COLUMNS

    val, floor = fitted.scores["val"], fitted.scores["val_train_mean"]
    assert val["kl"] < 0.8 * floor["kl"] and val["chebyshev"] < 0.9 * floor["chebyshev"]
    predictions = fitted.predictions
    assert list(predictions.columns) == ["image_key", "split", *PROB_COLUMNS] and len(predictions) == len(table)
    assert predictions.groupby("split").size().to_dict() == split["split"].value_counts().to_dict()
    np.testing.assert_allclose(predictions[list(PROB_COLUMNS)].to_numpy().sum(axis=1), 1.0, atol=1e-9)


def saved_and_reloaded_predictions(fitted, table, name: str, directory: Path):
    """A fitted feature model (`fitted.model`, `.clip`, `.feature_columns`, `.predictions`) saved to the
    model store with its card, loaded back, and applied to `table`'s rows of its predictions, in order:
    the distributions `emo-pipeline predict` would give."""
    from emo_pipeline.image_emotion.feature_splits import predict_distribution
    from emo_pipeline.storage.model_store import ModelCard, load_sklearn_model, save_sklearn_model

    save_sklearn_model(directory, ModelCard(name=name, kind="features", architecture=name, size=0, clip=fitted.clip),
                       fitted.model)
    loaded, card = load_sklearn_model(directory, name)
    ordered = table.set_index("image_key").loc[fitted.predictions["image_key"]]
    return predict_distribution(loaded, ordered[fitted.feature_columns], card.clip)


def with_random_labels(labels, split, part: str, seed: int, *, columns: str = "all"):
    """`labels` with the labels of `split`'s images in `part` (train, val or test) replaced by random
    ones: a model that must not look at `part` is fitted on both and compared. `columns`: "all" (the
    distributions, and valence, arousal and keyword where present), "distributions" or "auxiliary"."""
    import numpy as np

    from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS

    rows = labels["image_key"].isin(set(split.loc[split["split"] == part, "image_key"])).to_numpy()
    rng = np.random.default_rng(seed)
    changed = labels.copy()
    if columns in ("all", "distributions"):
        changed.loc[rows, list(PROB_COLUMNS)] = rng.dirichlet(np.ones(7), size=int(rows.sum()))
    if columns in ("all", "auxiliary"):
        for column in ("valence", "arousal"):
            if column in changed:
                changed.loc[rows, column] = rng.uniform(1, 9, int(rows.sum()))
        if "keyword" in changed:
            changed.loc[rows, "keyword"] = rng.choice(EMOTIONS[:6], int(rows.sum()))
    return changed
