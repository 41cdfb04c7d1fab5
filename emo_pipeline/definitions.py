"""The code location: one Definitions object built from the asset groups in `defs/`."""

import dagster as dg

from emo_pipeline.defs import (
    datasets,
    detection,
    emotion_models,
    ensemble,
    esm,
    evaluation,
    features,
    image_models,
    objects,
    raw,
)
from emo_pipeline.defs.datasets import DATASET_CHECKS
from emo_pipeline.defs.detection import DETECTION_CHECKS
from emo_pipeline.defs.esm import ESM_CHECKS
from emo_pipeline.defs.evaluation import EVALUATION_CHECKS
from emo_pipeline.defs.features import FEATURE_CHECKS
from emo_pipeline.defs.image_models import IMAGE_MODEL_CHECKS
from emo_pipeline.defs.objects import OBJECT_CHECKS
from emo_pipeline.defs.raw_checks import RAW_CHECKS
from emo_pipeline.defs.resources import (
    DataRoots,
    MLflowResource,
    TorchDeviceResource,
    WarehouseResource,
    WordVectorsResource,
)

# Imported once in the forkserver (dagster, pandas, duckdb and the library with it), not again in
# every step process.
PRELOAD_MODULES = ["emo_pipeline.definitions"]

executor = dg.multiprocess_executor.configured({
    "max_concurrent": 2,  # the reference machine has 2 cores
    "tag_concurrency_limits": [{"key": "emo/device", "value": "gpu", "limit": 1}],
    "start_method": {"forkserver": {"preload_modules": PRELOAD_MODULES}},
})

raw_job = dg.define_asset_job("raw_job", selection=dg.AssetSelection.groups(raw.GROUP),
                              description="Read the three source data sets into the warehouse.")
# A job cannot mix the sharded Visual Genome predictions with unpartitioned assets, so the graph runs
# as this job, then a backfill of the shards, then dataset_b_job (see `make demo`).
_SHARDED = dg.AssetSelection.assets(datasets.VG_PREDICTIONS)
unsharded_job = dg.define_asset_job(
    "unsharded_job", selection=dg.AssetSelection.all() - _SHARDED.downstream(),
    description="Every asset except the sharded Visual Genome predictions and what is built on them.")
dataset_b_job = dg.define_asset_job(
    "dataset_b_job", selection=_SHARDED.downstream() - _SHARDED,
    description="Dataset B and everything built on it, from the predicted shards (run after their backfill).")

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules([raw, features, image_models, esm, ensemble, evaluation, datasets,
                                                 detection, objects]),
            *emotion_models.EMOTION_MODEL_ASSETS],
    asset_checks=[*RAW_CHECKS, *FEATURE_CHECKS, *IMAGE_MODEL_CHECKS, *EVALUATION_CHECKS, *DATASET_CHECKS,
                  *DETECTION_CHECKS, *ESM_CHECKS, *OBJECT_CHECKS],
    jobs=[raw_job, unsharded_job, dataset_b_job],
    resources={
        "data_roots": DataRoots.from_environment(),
        "warehouse": WarehouseResource(),
        "mlflow": MLflowResource(),
        "torch_device": TorchDeviceResource(),
        "word_vectors": WordVectorsResource(),
    },
    executor=executor,
)
