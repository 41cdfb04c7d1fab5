"""Group `image_models`: models that predict emotion from images' hand-made features.

`svm_dominant_emotion` is the model itself: it lives in MLflow (run, artifacts and the registered
model `svm_dominant_emotion`), never in the IO manager; its materialization records the run id and
model version. `svm_predictions` is its per-image output, a warehouse table that the evaluation
group scores.

`feature_ridge_model` predicts the whole 7-way distribution from the same features (kernel ridge,
see `emo_pipeline.image_emotion.feature_ridge`): registered in MLflow as `feature_ridge_model`, and saved with its
model card under `$EMO_HOME/models/` so that `emo-pipeline predict --model feature_ridge` computes the
features of a new image the same way and applies the same floor. `feature_ridge_predictions` is its
per-image distribution, in the columns of the torch models' predictions.
"""

import dataclasses
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np

from emo_pipeline.defs.image_emotion.torch_models import REPORTED, frame_fingerprint
from emo_pipeline.defs.shared.metadata import png_metadata, table_metadata
from emo_pipeline.defs.shared.resources import MLflowResource, WarehouseResource
from emo_pipeline.image_emotion.dominant import PREDICTION_COLUMNS
from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.image_emotion.feature_ridge import FeatureRidgeConfig, fit_feature_ridge
from emo_pipeline.image_emotion.features import FeatureConfig
from emo_pipeline.core.home import emo_home
from emo_pipeline.storage.model_store import ModelCard, save_sklearn_model
from emo_pipeline.core.plots import confusion_png, distribution_bars_png
from emo_pipeline.core.profiles import active_profile
from emo_pipeline.image_emotion.svm import SPLITS, SVMConfig, train_dominant_svm, training_table
from emo_pipeline.storage.tracking import log_sklearn_model

GROUP = "image_models"
SVM_MODEL = "svm_dominant_emotion"
SVM_PREDICTIONS = "svm_predictions"
_INPUTS = ["emotion6_features", "emotion6_split", "emotion6_labels"]


class SVMTrainConfig(dg.Config):
    """The model-selection grid (see `emo_pipeline.image_emotion.svm`)."""

    c_grid: list[float] = list(SVMConfig().c_grid)
    gamma_factors: list[float] = list(SVMConfig().gamma_factors)  # gamma = factor / number of features
    class_weight: str | None = None  # None (accuracy, as the paper scores it) or "balanced"

    def svm_config(self) -> SVMConfig:
        return SVMConfig(c_grid=tuple(self.c_grid), gamma_factors=tuple(self.gamma_factors),
                         class_weight=self.class_weight)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(SVM_MODEL, group_name=GROUP, deps=_INPUTS, kinds={"sklearn", "mlflow"},
                     description="RBF SVM on standardised GLCM + CIECAM02 features predicting the dominant emotion; "
                                 "C and gamma chosen on validation. Stored in MLflow as a registered model."),
        dg.AssetSpec(SVM_PREDICTIONS, group_name=GROUP, deps=_INPUTS, kinds={"parquet"},
                     description="The SVM's dominant emotion for every Emotion6 image: image_key, split, true, predicted."),
    ],
    name="svm",
)
def svm(context: dg.AssetExecutionContext, config: SVMTrainConfig, warehouse: WarehouseResource,
        mlflow: MLflowResource):
    import mlflow as mlflow_api

    store = warehouse.get()
    features = store.read_table("emotion6_features")
    feature_columns = [c for c in features.columns if c != "image_key"]
    table = training_table(features, store.read_table("emotion6_labels", columns=["image_key", "dominant_emotion"]),
                           store.read_table("emotion6_split"))
    began = time.perf_counter()
    result = train_dominant_svm(table, feature_columns, config.svm_config())
    seconds = time.perf_counter() - began
    context.log.info(f"SVM C={result.best['C']:g} gamma={result.best['gamma']:.3g}: "
                     + ", ".join(f"{s} {result.accuracy[s]:.3f} (majority {result.majority_accuracy[s]:.3f})"
                                 for s in SPLITS))
    predictions_path = store.write_table(SVM_PREDICTIONS, result.predictions)

    test = result.predictions[result.predictions["split"] == "test"]
    present = set(test["true"]) | set(test["predicted"])
    confusion = confusion_png(test["true"].to_numpy(), test["predicted"].to_numpy(),
                              [e for e in EMOTIONS if e in present], "SVM, test split")
    with mlflow.start_run(context, run_name=SVM_MODEL) as run:
        mlflow_api.log_params({
            "C": result.best["C"], "gamma": result.best["gamma"], "gamma_factor": result.best["gamma_factor"],
            "class_weight": str(config.class_weight), "c_grid": config.c_grid, "gamma_factors": config.gamma_factors,
            "features": len(feature_columns), "train_images": int((table["split"] == "train").sum()),
            "majority_class": result.majority_class,
        })
        mlflow_api.log_metrics({
            **{f"{s}_accuracy": v for s, v in result.accuracy.items() if np.isfinite(v)},
            **{f"{s}_balanced_accuracy": v for s, v in result.balanced_accuracy.items() if np.isfinite(v)},
            **{f"majority_{s}_accuracy": v for s, v in result.majority_accuracy.items() if np.isfinite(v)},
        })
        mlflow_api.log_text(result.selection.to_csv(index=False), "model_selection.csv")
        with tempfile.TemporaryDirectory() as folder:
            png = Path(folder) / "confusion_test.png"
            png.write_bytes(confusion)
            mlflow_api.log_artifact(str(png))
        info = log_sklearn_model(result.pipeline, "model", table[feature_columns].head(2), SVM_MODEL,
                                 mlflow.version_tags(context, SVM_MODEL, frame_fingerprint(table)))
    run_id = run.info.run_id

    yield dg.MaterializeResult(asset_key=SVM_MODEL, metadata={
        **{f"{s}_accuracy": round(result.accuracy[s], 4) for s in SPLITS},
        **{f"majority_{s}_accuracy": round(result.majority_accuracy[s], 4) for s in SPLITS},
        **{f"{s}_balanced_accuracy": round(result.balanced_accuracy[s], 4) for s in ("val", "test")},
        "majority_class": result.majority_class,
        "C": result.best["C"],
        "gamma": result.best["gamma"],
        "class_weight": str(config.class_weight),
        "features": len(feature_columns),
        "train_seconds": round(seconds, 2),
        "mlflow_run_id": run_id,
        "mlflow_model_uri": info.model_uri,
        "registered_model": f"{SVM_MODEL} version {info.registered_model_version}",
        "model_selection": dg.MetadataValue.md(result.selection.to_markdown(index=False, floatfmt=".4g")),
        "confusion_test": png_metadata(confusion, "SVM confusion matrix on the test split"),
    })
    yield dg.MaterializeResult(asset_key=SVM_PREDICTIONS, metadata={
        **table_metadata(result.predictions, predictions_path),
        "mlflow_run_id": run_id,
    })


@dg.asset_check(asset=SVM_PREDICTIONS, name="one_row_per_split_image", blocking=True,
                additional_deps=["emotion6_split"],
                description="every image of emotion6_split has exactly one prediction, in its own split, "
                            "and every prediction is an emotion")
def svm_predictions_cover_split(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    predictions = store.read_table(SVM_PREDICTIONS)
    split = store.read_table("emotion6_split")
    merged = split.merge(predictions, on="image_key", how="outer", suffixes=("", "_predicted"), indicator=True)
    unmatched = int((merged["_merge"] != "both").sum())
    wrong_split = int((merged["_merge"].eq("both") & (merged["split"] != merged["split_predicted"])).sum())
    duplicated = int(predictions["image_key"].duplicated().sum())
    unknown = int((~predictions["predicted"].isin(EMOTIONS)).sum())
    columns_ok = list(predictions.columns) == list(PREDICTION_COLUMNS)
    passed = columns_ok and unmatched == wrong_split == duplicated == unknown == 0
    return dg.AssetCheckResult(passed=passed, metadata={"images": len(predictions)}, description=(
        f"columns {'as expected' if columns_ok else list(predictions.columns)}; {unmatched} images in one table only, "
        f"{wrong_split} in another split, {duplicated} duplicated, {unknown} predictions that are not emotions"))


FEATURE_RIDGE = "feature_ridge"
FEATURE_RIDGE_MODEL = "feature_ridge_model"
FEATURE_RIDGE_PREDICTIONS = "feature_ridge_predictions"


class FeatureRidgeTrainConfig(dg.Config):
    """The model-selection grid (see `emo_pipeline.image_emotion.feature_ridge`)."""

    kernel: str = FeatureRidgeConfig().kernel                       # rbf | linear
    alpha_grid: list[float] = list(FeatureRidgeConfig().alpha_grid)
    gamma_factors: list[float] = list(FeatureRidgeConfig().gamma_factors)  # gamma = factor / number of features
    transform: str = FeatureRidgeConfig().transform                 # power | standard
    clip_grid: list[float] = list(FeatureRidgeConfig().clip_grid)   # floors tried on validation

    def ridge_config(self) -> FeatureRidgeConfig:
        return FeatureRidgeConfig(kernel=self.kernel, alpha_grid=tuple(self.alpha_grid),
                                  gamma_factors=tuple(self.gamma_factors), transform=self.transform,
                                  clip_grid=tuple(self.clip_grid))


def _feature_config(context: dg.AssetExecutionContext, columns: list[str]) -> FeatureConfig:
    """The FeatureConfig the features table was computed with, for the model card.

    A new image must get its features exactly as the training images did, and the table's columns do
    not tell the image sizes or grey levels: those come from the config recorded in the latest
    materialization of `emotion6_features`. Whatever is found must reproduce the table's columns.
    """
    fields = {f.name for f in dataclasses.fields(FeatureConfig)}
    event = context.instance.get_latest_materialization_event(dg.AssetKey("emotion6_features"))
    recorded = event.asset_materialization.metadata.get("config") if event and event.asset_materialization else None
    options = {k: tuple(v) if isinstance(v, list) else v
               for k, v in (recorded.value if recorded is not None else {}).items() if k in fields}
    config = FeatureConfig(**options)
    if config.columns() != columns:
        raise dg.Failure(
            f"cannot tell how emotion6_features was computed: its columns do not match the "
            f"{'recorded' if options else 'default'} feature config {dataclasses.asdict(config)}; "
            "rematerialize emotion6_features")
    return config


@dg.multi_asset(
    specs=[
        dg.AssetSpec(FEATURE_RIDGE_MODEL, group_name=GROUP, deps=_INPUTS, kinds={"sklearn", "mlflow"},
                     description="Kernel ridge regression from the power-transformed GLCM + CIECAM02 features to the "
                                 "7-way emotion distribution; alpha, gamma and the prediction floor chosen on "
                                 "validation. Registered in MLflow as feature_ridge_model and saved with its card for "
                                 "`emo-pipeline predict`."),
        dg.AssetSpec(FEATURE_RIDGE_PREDICTIONS, group_name=GROUP, deps=[FEATURE_RIDGE_MODEL], kinds={"parquet"},
                     description="feature_ridge's predicted 7-way distribution for every Emotion6 image."),
    ],
    name=FEATURE_RIDGE,
)
def feature_ridge(context: dg.AssetExecutionContext, config: FeatureRidgeTrainConfig, warehouse: WarehouseResource,
                  mlflow: MLflowResource):
    import mlflow as mlflow_api

    store = warehouse.get()
    features = store.read_table("emotion6_features")
    labels = store.read_table("emotion6_labels")
    feature_columns = [c for c in features.columns if c != "image_key"]
    feature_config = _feature_config(context, feature_columns)
    result = fit_feature_ridge(features, labels, store.read_table("emotion6_split"), config.ridge_config())
    scores = result.scores
    context.log.info(
        f"feature_ridge alpha={result.best['alpha']:g} gamma={result.best['gamma']:.3g} floor={result.clip:g} "
        f"in {result.seconds:.1f} s: " + ", ".join(
            f"{s} KL {scores[s]['kl']:.4f} Chebyshev {scores[s]['chebyshev']:.4f} "
            f"(train mean {scores[s + '_train_mean']['kl']:.4f} / {scores[s + '_train_mean']['chebyshev']:.4f})"
            for s in ("val", "test") if s in scores))
    predictions_path = store.write_table(FEATURE_RIDGE_PREDICTIONS, result.predictions)

    card = ModelCard(
        name=FEATURE_RIDGE, kind="features", architecture=f"kernel_ridge_{config.kernel}",
        # The features are computed from the image resized to these long sides; the card's size is the larger.
        size=max(feature_config.glcm_size, feature_config.colour_size),
        options={k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(feature_config).items()},
        clip=result.clip, profile=active_profile(), weights_source="trained on the hand-made features")
    model_path = save_sklearn_model(emo_home().models, card, result.pipeline)

    with mlflow.start_run(context, run_name=FEATURE_RIDGE) as run:
        mlflow_api.log_params({
            **{k: v for k, v in result.best.items() if np.isfinite(v)},
            "kernel": config.kernel, "transform": config.transform, "alpha_grid": config.alpha_grid,
            "gamma_factors": config.gamma_factors, "clip_grid": config.clip_grid,
            "features": len(result.feature_columns),
            "train_images": int((result.predictions["split"] == "train").sum()),
        })
        mlflow_api.log_metrics({f"{s}_{k}": v for s, values in scores.items() for k, v in values.items()})
        mlflow_api.log_text(result.selection.to_csv(index=False), "model_selection.csv")
        mlflow_api.log_dict(card.to_json(), "model_card.json")
        fingerprint = frame_fingerprint(features.merge(labels[["image_key", *PROB_COLUMNS]], on="image_key"))
        info = log_sklearn_model(result.pipeline, "model", features[result.feature_columns].head(2),
                                 registered_model_name=FEATURE_RIDGE_MODEL,
                                 version_tags=mlflow.version_tags(context, FEATURE_RIDGE_MODEL, fingerprint))
    run_id = run.info.run_id

    test_part = result.predictions[result.predictions["split"] == "test"].head(4)
    figure_metadata = {}
    if len(test_part):
        true_rows = labels.set_index("image_key").loc[test_part["image_key"], list(PROB_COLUMNS)].to_numpy()
        figure_metadata["test_samples"] = png_metadata(
            distribution_bars_png(list(test_part["image_key"]), true_rows, test_part[list(PROB_COLUMNS)].to_numpy(),
                                  "feature_ridge: test images"), "true vs predicted")
    yield dg.MaterializeResult(asset_key=FEATURE_RIDGE_MODEL, metadata={
        **{f"{s}_{m}": round(float(scores[s][m]), 4) for s in scores for m in REPORTED},
        "alpha": result.best["alpha"],
        **({"gamma": result.best["gamma"]} if np.isfinite(result.best["gamma"]) else {}),
        "floor": result.clip,
        "kernel": config.kernel,
        "transform": config.transform,
        "features": len(result.feature_columns),
        "train_seconds": round(result.seconds, 2),
        "model": dg.MetadataValue.path(str(model_path)),
        "mlflow_run_id": run_id,
        "mlflow_model": f"{FEATURE_RIDGE_MODEL} version {info.registered_model_version}",
        "model_selection": dg.MetadataValue.md(result.selection.to_markdown(index=False, floatfmt=".4g")),
        **figure_metadata,
    })
    yield dg.MaterializeResult(asset_key=FEATURE_RIDGE_PREDICTIONS, metadata={
        **table_metadata(result.predictions, predictions_path),
        "mlflow_run_id": run_id,
    })


@dg.asset_check(asset=FEATURE_RIDGE_PREDICTIONS, name="distributions_cover_split", blocking=True,
                additional_deps=["emotion6_split"],
                description="every image of emotion6_split has one prediction in its own split, and every "
                            "prediction is a distribution (non-negative, sums to 1 within 1e-6)")
def feature_ridge_predictions_valid(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    predictions = store.read_table(FEATURE_RIDGE_PREDICTIONS)
    split = store.read_table("emotion6_split")
    merged = split.merge(predictions, on="image_key", how="outer", suffixes=("", "_predicted"), indicator=True)
    unmatched = int((merged["_merge"] != "both").sum())
    wrong_split = int((merged["_merge"].eq("both") & (merged["split"] != merged["split_predicted"])).sum())
    duplicated = int(predictions["image_key"].duplicated().sum())
    values = predictions[list(PROB_COLUMNS)].to_numpy(dtype=float)
    not_distributions = int(((values < 0).any(axis=1) | (np.abs(values.sum(axis=1) - 1) > 1e-6)).sum())
    passed = unmatched == wrong_split == duplicated == not_distributions == 0
    return dg.AssetCheckResult(passed=passed, metadata={"images": len(predictions)}, description=(
        f"{unmatched} images in one table only, {wrong_split} in another split, {duplicated} duplicated, "
        f"{not_distributions} rows that are not distributions"))


defs = dg.Definitions(assets=[svm, feature_ridge],
                      asset_checks=[svm_predictions_cover_split, feature_ridge_predictions_valid])
