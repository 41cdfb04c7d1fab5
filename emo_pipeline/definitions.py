"""The code location: one Definitions object built from the asset groups in `defs/`, with the jobs,
the weekly schedule, the sensors and the automation conditions of `defs/automation.py`."""

import os

import dagster as dg

from emo_pipeline.defs import (
    automation,
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
    scenes,
)
from emo_pipeline.defs.datasets import DATASET_CHECKS
from emo_pipeline.defs.detection import DETECTION_CHECKS
from emo_pipeline.defs.esm import ESM_CHECKS
from emo_pipeline.defs.evaluation import EVALUATION_CHECKS
from emo_pipeline.defs.features import FEATURE_CHECKS
from emo_pipeline.defs.image_models import IMAGE_MODEL_CHECKS
from emo_pipeline.defs.objects import OBJECT_CHECKS
from emo_pipeline.defs.raw_checks import RAW_CHECKS
from emo_pipeline.defs.scenes import SCENE_CHECKS
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

EXECUTORS = ("multiprocess", "k8s")


def choose_executor(name: str) -> dg.ExecutorDefinition:
    """The executor named by `EMO_EXECUTOR`: `multiprocess` (default, one machine) or `k8s` (one pod per
    step with dagster-k8s, installed in the cluster's image; GPU-tagged steps ask for a GPU through
    their `dagster-k8s/config` tag, see `defs.emotion_models.GPU_TAGS`)."""
    if name == "multiprocess":
        return dg.multiprocess_executor.configured({
            "max_concurrent": 2,  # the reference machine has 2 cores
            "tag_concurrency_limits": [{"key": "emo/device", "value": "gpu", "limit": 1}],
            "start_method": {"forkserver": {"preload_modules": PRELOAD_MODULES}},
        })
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ImportError("EMO_EXECUTOR=k8s needs the dagster-k8s package (0.29.27 for dagster 1.13.27) "
                              "installed beside the code location") from exc
        return k8s_job_executor
    raise ValueError(f"EMO_EXECUTOR={name!r}: choose one of {', '.join(EXECUTORS)}")


executor = choose_executor(os.environ.get("EMO_EXECUTOR", "multiprocess"))

ASSETS = [*dg.load_assets_from_modules([raw, features, image_models, esm, ensemble, evaluation, datasets,
                                         detection, objects, scenes]),
          *emotion_models.EMOTION_MODEL_ASSETS]

defs = dg.Definitions(
    # Every asset with an upstream follows it (automation.FOLLOW_UPSTREAM); the source tables do not.
    assets=automation.follow_upstream(ASSETS),
    asset_checks=[*RAW_CHECKS, *FEATURE_CHECKS, *IMAGE_MODEL_CHECKS, *EVALUATION_CHECKS, *DATASET_CHECKS,
                  *DETECTION_CHECKS, *ESM_CHECKS, *OBJECT_CHECKS,
                  *SCENE_CHECKS],
    jobs=automation.JOBS,
    schedules=automation.SCHEDULES,
    sensors=automation.SENSORS,
    resources={
        "data_roots": DataRoots.from_environment(),
        "warehouse": WarehouseResource.from_environment(),
        "mlflow": MLflowResource.from_environment(),
        "torch_device": TorchDeviceResource(),
        "word_vectors": WordVectorsResource(),
    },
    executor=executor,
)
