"""Group `image_models`: models that predict emotion from images. So far the SVM on hand-made features.

`svm_dominant_emotion` is the model itself: it lives in MLflow (run, artifacts and the registered
model `svm_dominant_emotion`), never in the IO manager; its materialization records the run id and
model version. `svm_predictions` is its per-image output, a warehouse table that the evaluation
group scores.
"""

import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np

from emo_pipeline.defs.metadata import png_metadata, table_metadata
from emo_pipeline.defs.resources import MLflowResource, WarehouseResource
from emo_pipeline.dominant import PREDICTION_COLUMNS
from emo_pipeline.emotions import EMOTIONS
from emo_pipeline.plots import confusion_png
from emo_pipeline.svm import SPLITS, SVMConfig, train_dominant_svm, training_table
from emo_pipeline.tracking import log_sklearn_model

GROUP = "image_models"
SVM_MODEL = "svm_dominant_emotion"
SVM_PREDICTIONS = "svm_predictions"
_INPUTS = ["emotion6_features", "emotion6_split", "emotion6_labels"]


class SVMTrainConfig(dg.Config):
    """The model-selection grid (see `emo_pipeline.svm`)."""

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
        info = log_sklearn_model(result.pipeline, "model", table[feature_columns].head(2), SVM_MODEL)
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


IMAGE_MODEL_CHECKS = [svm_predictions_cover_split]
