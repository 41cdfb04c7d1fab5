"""Group `image_models`: models that predict emotion from images' hand-made features.

`svm_dominant_emotion` is the model itself: it lives in MLflow (run, artifacts and the registered
model `svm_dominant_emotion`), never in the IO manager; its materialization records the run id and
model version. `svm_predictions` is its per-image output, a warehouse table that the evaluation
group scores.

`feature_ridge_model` predicts the whole 7-way distribution from the same features (kernel ridge,
see `emo_pipeline.image_emotion.feature_ridge`): registered in MLflow as `feature_ridge_model`, and saved with its
model card under `$EMO_HOME/models/` so that `emo-pipeline predict --model feature_ridge` computes the
features of a new image the same way and applies the same floor. `feature_ridge_predictions` is its
per-image distribution, in the columns of the torch models' predictions. Both read only the paper's
feature families (GLCM, CIECAM02) of `emotion6_features`, whatever else the table holds.

`feature_gbm_model` predicts the distribution with gradient-boosted trees from every feature family the
table holds (this project's colour and texture families beside the paper's, profile `demo`; see
`emo_pipeline.image_emotion.feature_gbm`), registered and saved like `feature_ridge_model`;
`feature_gbm_predictions` is its per-image distribution.
"""

import dataclasses
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from emo_pipeline.core.digests import frame_fingerprint
from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.metrics import REPORTED
from emo_pipeline.core.plots import confusion_png
from emo_pipeline.defs.shared.checks import predictions_check_spec, predictions_cover_split
from emo_pipeline.defs.shared.metadata import png_metadata, table_metadata, test_samples_metadata
from emo_pipeline.defs.shared.publisher import TrainingRun, code_version
from emo_pipeline.defs.shared.resources import MLflowResource, ModelStoreResource, WarehouseResource
from emo_pipeline.defs.shared.settings import apply_overrides, overrides_config
from emo_pipeline.image_emotion import feature_gbm as feature_gbm_module
from emo_pipeline.image_emotion import feature_ridge as feature_ridge_module
from emo_pipeline.image_emotion import svm as svm_module
from emo_pipeline.image_emotion.dominant import PREDICTION_COLUMNS
from emo_pipeline.image_emotion.feature_gbm import FeatureGBMConfig, fit_feature_gbm
from emo_pipeline.image_emotion.feature_ridge import FeatureRidgeConfig, fit_feature_ridge
from emo_pipeline.image_emotion.features import PAPER_FAMILIES, FeatureConfig, columns_of
from emo_pipeline.image_emotion.svm import SPLITS, SVMConfig, train_dominant_svm, training_table
from emo_pipeline.storage.model_store import ModelCard

GROUP = "image_models"
SVM_MODEL = "svm_dominant_emotion"
SVM_PREDICTIONS = "svm_predictions"
_INPUTS = ["emotion6_features", "emotion6_split", "emotion6_labels"]

SVMTrainConfig = overrides_config(SVMConfig, "SVMTrainConfig")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(SVM_MODEL, group_name=GROUP, deps=_INPUTS, kinds={"sklearn", "mlflow"},
                     code_version=code_version(svm_module),
                     description="RBF SVM on standardised GLCM + CIECAM02 features predicting the dominant emotion; "
                                 "C and gamma chosen on validation. Stored in MLflow as a registered model."),
        dg.AssetSpec(SVM_PREDICTIONS, group_name=GROUP, deps=_INPUTS, kinds={"parquet"},
                     code_version=code_version(svm_module),
                     description="The SVM's dominant emotion for every Emotion6 image: image_key, split, true, "
                                 "predicted."),
    ],
    check_specs=[predictions_check_spec(SVM_PREDICTIONS)],
    name="svm",
)
def svm(context: dg.AssetExecutionContext, config: SVMTrainConfig, warehouse: WarehouseResource,
        models: ModelStoreResource, mlflow: MLflowResource):
    store = warehouse.get()
    features = store.read_table("emotion6_features")
    # The paper's SVM reads its own texture and colour features: the GLCM and CIECAM02 columns only.
    feature_columns = columns_of(list(features.columns), PAPER_FAMILIES)
    split = store.read_table("emotion6_split")
    table = training_table(features[["image_key", *feature_columns]],
                           store.read_table("emotion6_labels", columns=["image_key", "dominant_emotion"]), split)
    settings = apply_overrides(SVMConfig(), config)
    with TrainingRun(context, SVM_MODEL, settings, frame_fingerprint(table), models=models, mlflow=mlflow) as run:
        began = time.perf_counter()
        result = train_dominant_svm(table, feature_columns, settings)
        seconds = time.perf_counter() - began
        context.log.info(f"SVM C={result.best['C']:g} gamma={result.best['gamma']:.3g}: "
                         + ", ".join(f"{s} {result.accuracy[s]:.3f} (majority {result.majority_accuracy[s]:.3f})"
                                     for s in SPLITS))
        run.log_params({"C": result.best["C"], "gamma": result.best["gamma"],
                        "gamma_factor": result.best["gamma_factor"], "features": len(feature_columns),
                        "train_images": int((table["split"] == "train").sum()),
                        "majority_class": result.majority_class})
        run.log_metrics({**{f"{s}_accuracy": v for s, v in result.accuracy.items()},
                         **{f"majority_{s}_accuracy": v for s, v in result.majority_accuracy.items()},
                         **{f"{s}_balanced_accuracy": v for s, v in result.balanced_accuracy.items()}})
        import mlflow as mlflow_api

        mlflow_api.log_text(result.selection.to_csv(index=False), "model_selection.csv")
        test = result.predictions[result.predictions["split"] == "test"]
        present = set(test["true"]) | set(test["predicted"])
        confusion = confusion_png(test["true"].to_numpy(), test["predicted"].to_numpy(),
                                  [e for e in EMOTIONS if e in present], "SVM, test split")
        with tempfile.TemporaryDirectory() as folder:
            png = Path(folder) / "confusion_test.png"
            png.write_bytes(confusion)
            mlflow_api.log_artifact(str(png))
        run.publish_sklearn(None, result.pipeline, table[feature_columns].head(2))
    predictions_path = store.write_table(SVM_PREDICTIONS, result.predictions)

    shown = [*(f"{s}_accuracy" for s in SPLITS), *(f"majority_{s}_accuracy" for s in SPLITS),
             *(f"{s}_balanced_accuracy" for s in ("val", "test"))]
    yield dg.MaterializeResult(asset_key=SVM_MODEL, data_version=run.data_version, metadata=run.metadata(
        shown, digits=4, extra={
            "majority_class": result.majority_class,
            "C": result.best["C"],
            "gamma": result.best["gamma"],
            "class_weight": str(settings.class_weight),
            "features": len(feature_columns),
            "train_seconds": round(seconds, 2),
            "mlflow_model_uri": run.model_info.model_uri,
            "model_selection": dg.MetadataValue.md(result.selection.to_markdown(index=False, floatfmt=".4g")),
            "confusion_test": png_metadata(confusion, "SVM confusion matrix on the test split"),
        }))
    yield dg.MaterializeResult(asset_key=SVM_PREDICTIONS, data_version=run.data_version, metadata={
        **table_metadata(result.predictions, predictions_path),
        "mlflow_run_id": run.run_id,
    })
    yield predictions_cover_split(SVM_PREDICTIONS, result.predictions, split, columns=PREDICTION_COLUMNS)


FEATURE_RIDGE = "feature_ridge"
FEATURE_RIDGE_MODEL = "feature_ridge_model"
FEATURE_RIDGE_PREDICTIONS = "feature_ridge_predictions"

FeatureRidgeTrainConfig = overrides_config(FeatureRidgeConfig, "FeatureRidgeTrainConfig")


def _feature_config(context: dg.AssetExecutionContext, columns: list[str]) -> FeatureConfig:
    """The FeatureConfig the features table was computed with, for the model card.

    A new image must get its features exactly as the training images did, and the table's columns do
    not tell the image sizes or grey levels: those come from the config recorded in the latest
    materialization of `emotion6_features`. Whatever is found must reproduce the table's columns. The
    card keeps every family of the table even for a model that reads some of them: the families decide
    the size each image is decoded at, and so the values of the others; `predict` hands the model the
    columns it was fitted on.
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


def _card_options(config: FeatureConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(FEATURE_RIDGE_MODEL, group_name=GROUP, deps=_INPUTS, kinds={"sklearn", "mlflow"},
                     code_version=code_version(feature_ridge_module),
                     description="Kernel ridge regression from the power-transformed GLCM + CIECAM02 features to the "
                                 "7-way emotion distribution; alpha, gamma and the prediction floor chosen on "
                                 "validation. Registered in MLflow as feature_ridge_model and saved with its card for "
                                 "`emo-pipeline predict`."),
        dg.AssetSpec(FEATURE_RIDGE_PREDICTIONS, group_name=GROUP, deps=[FEATURE_RIDGE_MODEL], kinds={"parquet"},
                     code_version=code_version(feature_ridge_module),
                     description="feature_ridge's predicted 7-way distribution for every Emotion6 image."),
    ],
    check_specs=[predictions_check_spec(FEATURE_RIDGE_PREDICTIONS)],
    name=FEATURE_RIDGE,
)
def feature_ridge(context: dg.AssetExecutionContext, config: FeatureRidgeTrainConfig, warehouse: WarehouseResource,
                  models: ModelStoreResource, mlflow: MLflowResource):
    store = warehouse.get()
    table = store.read_table("emotion6_features")
    labels = store.read_table("emotion6_labels")
    split = store.read_table("emotion6_split")
    # Like the SVM, the paper's feature families only: the richer ones are feature_gbm's.
    feature_config = _feature_config(context, [c for c in table.columns if c != "image_key"])
    features = table[["image_key", *columns_of(list(table.columns), PAPER_FAMILIES)]]
    settings = apply_overrides(FeatureRidgeConfig(), config)
    fingerprint = frame_fingerprint(features.merge(labels[["image_key", *PROB_COLUMNS]], on="image_key"))
    with TrainingRun(context, FEATURE_RIDGE_MODEL, settings, fingerprint, models=models, mlflow=mlflow,
                     run_name=FEATURE_RIDGE) as run:
        result = fit_feature_ridge(features, labels, split, settings)
        scores = result.scores
        context.log.info(
            f"feature_ridge alpha={result.best['alpha']:g} gamma={result.best['gamma']:.3g} floor={result.clip:g} "
            f"in {result.seconds:.1f} s: " + ", ".join(
                f"{s} KL {scores[s]['kl']:.4f} Chebyshev {scores[s]['chebyshev']:.4f} "
                f"(train mean {scores[s + '_train_mean']['kl']:.4f} / {scores[s + '_train_mean']['chebyshev']:.4f})"
                for s in ("val", "test") if s in scores))
        run.log_params({**{k: v for k, v in result.best.items() if np.isfinite(v)},
                        "features": len(result.feature_columns),
                        "train_images": int((result.predictions["split"] == "train").sum())})
        run.log_metrics({f"{s}_{k}": v for s, values in scores.items() for k, v in values.items()})
        import mlflow as mlflow_api

        mlflow_api.log_text(result.selection.to_csv(index=False), "model_selection.csv")
        card = ModelCard(
            name=FEATURE_RIDGE, kind="features", architecture=f"kernel_ridge_{settings.kernel}",
            # The features are computed from the image resized to several long sides; the card's size is the largest.
            size=feature_config.decode_size(), options=_card_options(feature_config),
            clip=result.clip, profile=run.profile, weights_source="trained on the hand-made features")
        mlflow_api.log_dict(card.to_json(), "model_card.json")
        model_path = run.publish_sklearn(card, result.pipeline, features[result.feature_columns].head(2))
    predictions_path = store.write_table(FEATURE_RIDGE_PREDICTIONS, result.predictions)

    yield dg.MaterializeResult(asset_key=FEATURE_RIDGE_MODEL, data_version=run.data_version, metadata=run.metadata(
        [f"{s}_{m}" for s in scores for m in REPORTED], digits=4, extra={
            "alpha": result.best["alpha"],
            **({"gamma": result.best["gamma"]} if np.isfinite(result.best["gamma"]) else {}),
            "floor": result.clip,
            "kernel": settings.kernel,
            "transform": settings.transform,
            "features": len(result.feature_columns),
            "train_seconds": round(result.seconds, 2),
            "model": dg.MetadataValue.path(str(model_path)),
            "model_selection": dg.MetadataValue.md(result.selection.to_markdown(index=False, floatfmt=".4g")),
            **test_samples_metadata(FEATURE_RIDGE, result.predictions, labels),
        }))
    yield dg.MaterializeResult(asset_key=FEATURE_RIDGE_PREDICTIONS, data_version=run.data_version, metadata={
        **table_metadata(result.predictions, predictions_path),
        "mlflow_run_id": run.run_id,
    })
    yield predictions_cover_split(FEATURE_RIDGE_PREDICTIONS, result.predictions, split)


FEATURE_GBM = "feature_gbm"
FEATURE_GBM_MODEL = "feature_gbm_model"
FEATURE_GBM_PREDICTIONS = "feature_gbm_predictions"

FeatureGBMTrainConfig = overrides_config(FeatureGBMConfig, "FeatureGBMTrainConfig")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(FEATURE_GBM_MODEL, group_name=GROUP, deps=_INPUTS, kinds={"sklearn", "mlflow"},
                     code_version=code_version(feature_gbm_module),
                     description="Gradient-boosted trees (one HistGradientBoostingRegressor per emotion) from every "
                                 "feature family of emotion6_features to the 7-way emotion distribution; each "
                                 "emotion's iterations and the prediction floor chosen on validation. Registered in "
                                 "MLflow as feature_gbm_model and saved with its card for `emo-pipeline predict`."),
        dg.AssetSpec(FEATURE_GBM_PREDICTIONS, group_name=GROUP, deps=[FEATURE_GBM_MODEL], kinds={"parquet"},
                     code_version=code_version(feature_gbm_module),
                     description="feature_gbm's predicted 7-way distribution for every Emotion6 image."),
    ],
    check_specs=[predictions_check_spec(FEATURE_GBM_PREDICTIONS)],
    name=FEATURE_GBM,
)
def feature_gbm(context: dg.AssetExecutionContext, config: FeatureGBMTrainConfig, warehouse: WarehouseResource,
                models: ModelStoreResource, mlflow: MLflowResource):
    store = warehouse.get()
    features = store.read_table("emotion6_features")
    labels = store.read_table("emotion6_labels")
    split = store.read_table("emotion6_split")
    feature_config = _feature_config(context, [c for c in features.columns if c != "image_key"])
    settings = apply_overrides(FeatureGBMConfig(), config)
    # The split decides what is fitted and what chooses the iterations: it is part of the data.
    fingerprint = frame_fingerprint(features.merge(labels[["image_key", *PROB_COLUMNS]], on="image_key")
                                    .merge(split[["image_key", "split"]], on="image_key"))
    with TrainingRun(context, FEATURE_GBM_MODEL, settings, fingerprint, models=models, mlflow=mlflow,
                     run_name=FEATURE_GBM) as run:
        result = fit_feature_gbm(features, labels, split, settings)
        scores = result.scores
        context.log.info(
            f"feature_gbm on {len(result.feature_columns)} features, iterations "
            + ", ".join(f"{e} {k}" for e, k in result.iterations.items())
            + f", floor {result.clip:g}, in {result.seconds:.1f} s: " + ", ".join(
                f"{s} KL {scores[s]['kl']:.4f} Chebyshev {scores[s]['chebyshev']:.4f} "
                f"(train mean {scores[s + '_train_mean']['kl']:.4f} / {scores[s + '_train_mean']['chebyshev']:.4f})"
                for s in ("val", "test") if s in scores))
        run.log_params({**{f"iterations_{e}": k for e, k in result.iterations.items()}, "clip": result.clip,
                        "features": len(result.feature_columns), "families": ",".join(feature_config.families),
                        "train_images": int((result.predictions["split"] == "train").sum())})
        run.log_metrics({f"{s}_{k}": v for s, values in scores.items() for k, v in values.items()})
        import mlflow as mlflow_api

        mlflow_api.log_text(result.selection.to_csv(index=False), "model_selection.csv")
        curves = pd.DataFrame(result.val_curves, columns=list(EMOTIONS))
        curves.insert(0, "iteration", np.arange(1, len(curves) + 1))
        mlflow_api.log_text(curves.to_csv(index=False), "val_mse_per_iteration.csv")
        card = ModelCard(
            name=FEATURE_GBM, kind="features", architecture="hist_gradient_boosting",
            size=feature_config.decode_size(), options=_card_options(feature_config),
            clip=result.clip, profile=run.profile, weights_source="trained on the hand-made features")
        mlflow_api.log_dict(card.to_json(), "model_card.json")
        model_path = run.publish_sklearn(card, result.model, features[result.feature_columns].head(2))
    predictions_path = store.write_table(FEATURE_GBM_PREDICTIONS, result.predictions)

    yield dg.MaterializeResult(asset_key=FEATURE_GBM_MODEL, data_version=run.data_version, metadata=run.metadata(
        [f"{s}_{m}" for s in scores for m in REPORTED], digits=4, extra={
            **{f"iterations_{e}": k for e, k in result.iterations.items()},
            "floor": result.clip,
            "features": len(result.feature_columns),
            "families": ", ".join(feature_config.families),
            "train_seconds": round(result.seconds, 2),
            "model": dg.MetadataValue.path(str(model_path)),
            "model_selection": dg.MetadataValue.md(result.selection.to_markdown(index=False, floatfmt=".5g")),
            **test_samples_metadata(FEATURE_GBM, result.predictions, labels),
        }))
    yield dg.MaterializeResult(asset_key=FEATURE_GBM_PREDICTIONS, data_version=run.data_version, metadata={
        **table_metadata(result.predictions, predictions_path),
        "mlflow_run_id": run.run_id,
    })
    yield predictions_cover_split(FEATURE_GBM_PREDICTIONS, result.predictions, split)


defs = dg.Definitions(assets=[svm, feature_ridge, feature_gbm])
