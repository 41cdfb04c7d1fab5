"""The code location: one Definitions object built from the asset groups in `defs/`."""

import dagster as dg

from emo_pipeline.defs import emotion_models, evaluation, features, image_models, raw
from emo_pipeline.defs.evaluation import EVALUATION_CHECKS
from emo_pipeline.defs.features import FEATURE_CHECKS
from emo_pipeline.defs.image_models import IMAGE_MODEL_CHECKS
from emo_pipeline.defs.raw_checks import RAW_CHECKS
from emo_pipeline.defs.resources import DataRoots, MLflowResource, TorchDeviceResource, WarehouseResource

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

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules([raw, features, image_models, evaluation]),
            *emotion_models.EMOTION_MODEL_ASSETS],
    asset_checks=[*RAW_CHECKS, *FEATURE_CHECKS, *IMAGE_MODEL_CHECKS, *EVALUATION_CHECKS],
    jobs=[raw_job],
    resources={
        "data_roots": DataRoots.from_environment(),
        "warehouse": WarehouseResource(),
        "mlflow": MLflowResource(),
        "torch_device": TorchDeviceResource(),
    },
    executor=executor,
)
