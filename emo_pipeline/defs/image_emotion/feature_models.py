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

`feature_mlp_model` predicts it with a small network on the same table (five members trained on the
distribution itself, their logits averaged; see `emo_pipeline.image_emotion.feature_mlp`), served and
registered as a scikit-learn pipeline like the other two; `feature_mlp_predictions` is its output.
"""

import dataclasses
import tempfile
import time
import types
from collections.abc import Callable
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
from emo_pipeline.image_emotion import feature_mlp as feature_mlp_module
from emo_pipeline.image_emotion import feature_ridge as feature_ridge_module
from emo_pipeline.image_emotion import svm as svm_module
from emo_pipeline.image_emotion.dominant import PREDICTION_COLUMNS
from emo_pipeline.image_emotion.feature_gbm import FeatureGBMConfig, fit_feature_gbm
from emo_pipeline.image_emotion.feature_mlp import AUXILIARY_COLUMNS, FeatureMLPConfig, fit_feature_mlp
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


@dataclasses.dataclass(frozen=True)
class FeatureModel:
    """What sets one hand-made-feature distribution model apart; `feature_model_asset` does the rest."""

    name: str
    module: types.ModuleType                      # its library module: the code version
    config: type[dg.Config]                       # overrides of `settings`
    settings: object                              # the library dataclass's defaults
    fit: Callable                                 # (features, labels, split, settings) -> result
    estimator: Callable[[object], object]         # result -> the scikit-learn estimator to publish
    architecture: Callable[[object], str]         # settings -> the card's architecture
    details: Callable[[object, object], dict]     # (result, settings) -> its own params and metadata
    artifacts: Callable[[object], dict[str, str]] # result -> MLflow text artifacts (file name -> CSV)
    description: str
    paper_families_only: bool = False             # read only the paper's two feature families
    label_columns: tuple[str, ...] = PROB_COLUMNS # the labels' columns the fit reads (beside image_key)


def text_scores(scores: dict) -> str:
    """Validation and test KL and Chebyshev beside the train mean's, as one log line."""
    return ", ".join(
        f"{s} KL {scores[s]['kl']:.4f} Chebyshev {scores[s]['chebyshev']:.4f} "
        f"(train mean {scores[s + '_train_mean']['kl']:.4f} / {scores[s + '_train_mean']['chebyshev']:.4f})"
        for s in ("val", "test") if s in scores)


def feature_model_asset(spec: FeatureModel) -> dg.AssetsDefinition:
    """`<name>_model` (registered in MLflow, carded for `predict`) and `<name>_predictions` from the
    features table, fitted on train and chosen on validation by the library's fit."""
    model_key, predictions_key = f"{spec.name}_model", f"{spec.name}_predictions"

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(model_key, group_name=GROUP, deps=_INPUTS, kinds={"sklearn", "mlflow"},
                         code_version=code_version(spec.module),
                         description=f"{spec.description} Registered in MLflow as {model_key} and saved with its "
                                     "card for `emo-pipeline predict`."),
            dg.AssetSpec(predictions_key, group_name=GROUP, deps=[model_key], kinds={"parquet"},
                         code_version=code_version(spec.module),
                         description=f"{spec.name}'s predicted 7-way distribution for every Emotion6 image."),
        ],
        check_specs=[predictions_check_spec(predictions_key)],
        name=spec.name,
    )
    def _asset(context: dg.AssetExecutionContext, config: spec.config, warehouse: WarehouseResource,
               models: ModelStoreResource, mlflow: MLflowResource):
        import mlflow as mlflow_api

        store = warehouse.get()
        table = store.read_table("emotion6_features")
        labels = store.read_table("emotion6_labels")
        split = store.read_table("emotion6_split")
        feature_config = _feature_config(context, [c for c in table.columns if c != "image_key"])
        features = (table[["image_key", *columns_of(list(table.columns), PAPER_FAMILIES)]]
                    if spec.paper_families_only else table)
        settings = apply_overrides(spec.settings, config)
        # The split decides what is fitted and what makes the choices: it is part of the data.
        fingerprint = frame_fingerprint(features.merge(labels[["image_key", *spec.label_columns]], on="image_key")
                                        .merge(split[["image_key", "split"]], on="image_key"))
        with TrainingRun(context, model_key, settings, fingerprint, models=models, mlflow=mlflow,
                         run_name=spec.name) as run:
            result = spec.fit(features, labels, split, settings)
            details = spec.details(result, settings)
            scores = result.scores
            chosen = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in details.items())
            context.log.info(f"{spec.name} on {len(result.feature_columns)} features ({chosen}; floor "
                             f"{result.clip:g}) in {result.seconds:.1f} s: "
                             + text_scores(scores))
            families = PAPER_FAMILIES if spec.paper_families_only else feature_config.families
            run.log_params({**details, "clip": result.clip, "features": len(result.feature_columns),
                            "families": ",".join(families),
                            "train_images": int((result.predictions["split"] == "train").sum())})
            run.log_metrics({f"{s}_{k}": v for s, values in scores.items() for k, v in values.items()})
            mlflow_api.log_text(result.selection.to_csv(index=False), "model_selection.csv")
            for file_name, text in spec.artifacts(result).items():
                mlflow_api.log_text(text, file_name)
            # The card keeps every family of the table (they decide each image's decoded size); `predict`
            # hands the model the columns it was fitted on.
            card = ModelCard(
                name=spec.name, kind="features", architecture=spec.architecture(settings),
                size=feature_config.decode_size(), options=_card_options(feature_config),
                clip=result.clip, profile=run.profile, weights_source="trained on the hand-made features")
            mlflow_api.log_dict(card.to_json(), "model_card.json")
            model_path = run.publish_sklearn(card, spec.estimator(result), features[result.feature_columns].head(2))
        predictions_path = store.write_table(predictions_key, result.predictions)

        yield dg.MaterializeResult(asset_key=model_key, data_version=run.data_version, metadata=run.metadata(
            [f"{s}_{m}" for s in scores for m in REPORTED], digits=4, extra={
                **details,
                "floor": result.clip,
                "features": len(result.feature_columns),
                "train_seconds": round(result.seconds, 2),
                "model": dg.MetadataValue.path(str(model_path)),
                "model_selection": dg.MetadataValue.md(result.selection.to_markdown(index=False, floatfmt=".5g")),
                **test_samples_metadata(spec.name, result.predictions, labels),
            }))
        yield dg.MaterializeResult(asset_key=predictions_key, data_version=run.data_version, metadata={
            **table_metadata(result.predictions, predictions_path),
            "mlflow_run_id": run.run_id,
        })
        yield predictions_cover_split(predictions_key, result.predictions, split)

    return _asset


def _ridge_details(result, settings) -> dict:
    finite = {k: v for k, v in result.best.items() if k != "clip" and np.isfinite(v)}
    return {**finite, "kernel": settings.kernel, "transform": settings.transform}


def _gbm_curves(result) -> dict[str, str]:
    curves = pd.DataFrame(result.val_curves, columns=list(EMOTIONS))
    curves.insert(0, "iteration", np.arange(1, len(curves) + 1))
    return {"val_mse_per_iteration.csv": curves.to_csv(index=False)}


def mlp_curves(result) -> dict[str, str]:
    """The feature network's validation KL per epoch and member, as an MLflow text artifact (file -> CSV)."""
    curves = pd.DataFrame(result.val_curves, columns=[f"val_kl_member_{i}" for i in range(result.val_curves.shape[1])])
    curves.insert(0, "epoch", np.arange(1, len(curves) + 1))
    return {"val_kl_per_epoch.csv": curves.to_csv(index=False)}


FEATURE_RIDGE = FeatureModel(
    name="feature_ridge", module=feature_ridge_module, settings=FeatureRidgeConfig(),
    config=overrides_config(FeatureRidgeConfig, "FeatureRidgeTrainConfig"), fit=fit_feature_ridge,
    estimator=lambda result: result.pipeline, architecture=lambda settings: f"kernel_ridge_{settings.kernel}",
    details=_ridge_details, artifacts=lambda result: {}, paper_families_only=True,
    description="Kernel ridge regression from the power-transformed GLCM + CIECAM02 features (the SVM's, the "
                "paper's) to the 7-way emotion distribution; alpha, gamma and the prediction floor chosen on "
                "validation.")
FEATURE_GBM = FeatureModel(
    name="feature_gbm", module=feature_gbm_module, settings=FeatureGBMConfig(),
    config=overrides_config(FeatureGBMConfig, "FeatureGBMTrainConfig"), fit=fit_feature_gbm,
    estimator=lambda result: result.model, architecture=lambda settings: "hist_gradient_boosting",
    details=lambda result, settings: {f"iterations_{e}": k for e, k in result.iterations.items()},
    artifacts=_gbm_curves,
    description="Gradient-boosted trees (one HistGradientBoostingRegressor per emotion) from every feature "
                "family of emotion6_features to the 7-way emotion distribution; each emotion's iterations and "
                "the prediction floor chosen on validation.")
FEATURE_MLP = FeatureModel(
    name="feature_mlp", module=feature_mlp_module, settings=FeatureMLPConfig(),
    config=overrides_config(FeatureMLPConfig, "FeatureMLPTrainConfig"), fit=fit_feature_mlp,
    estimator=lambda result: result.model,
    architecture=lambda settings: f"mlp_{settings.members}x{settings.hidden}_relu_softmax",
    details=lambda result, settings: {f"epoch_kept_member_{i}": e for i, e in enumerate(result.epochs_kept)},
    artifacts=mlp_curves, label_columns=(*PROB_COLUMNS, *AUXILIARY_COLUMNS),
    description="One-hidden-layer networks (five by default, logits averaged) from every feature family of "
                "emotion6_features, histograms square-rooted, to the 7-way emotion distribution, trained with "
                "the KL loss (and valence, arousal and keyword as auxiliary targets); each member's epoch and "
                "the prediction floor chosen on validation.")
feature_ridge = feature_model_asset(FEATURE_RIDGE)
feature_gbm = feature_model_asset(FEATURE_GBM)
feature_mlp = feature_model_asset(FEATURE_MLP)


defs = dg.Definitions(assets=[svm, feature_ridge, feature_gbm, feature_mlp])
