"""The code location: the Definitions of each stage in `defs/` merged, with the resources and the executor."""

import os
import warnings

import dagster as dg

from emo_pipeline.defs import (
    automation,
    datasets,
    detection,
    image_emotion,
    objects,
    recovery,
    reproduction,
    scenes,
    sources,
)
from emo_pipeline.defs.shared.resources import (
    DataRoots,
    MLflowResource,
    ModelStoreResource,
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
    their `dagster-k8s/config` tag, see `defs.shared.gpu`)."""
    if name == "multiprocess":
        return dg.multiprocess_executor.configured({
            "max_concurrent": 2,  # the reference machine has 2 cores
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


def _stages() -> dg.Definitions:
    """Every stage's assets and checks, and the jobs, schedule and sensors. Every asset with an
    upstream follows it (automation.FOLLOW_UPSTREAM); the source tables do not."""
    merged = dg.Definitions.merge(sources.defs, image_emotion.defs, detection.defs, datasets.defs, objects.defs,
                                  scenes.defs, reproduction.defs, recovery.defs, automation.defs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # map_asset_specs is marked preview in 1.13
        return merged.map_asset_specs(func=automation.follow_upstream)


defs = dg.Definitions.merge(
    _stages(),
    dg.Definitions(
        resources={
            "data_roots": DataRoots.from_environment(),
            "warehouse": WarehouseResource.from_environment(),
            "models": ModelStoreResource.from_environment(),
            "mlflow": MLflowResource.from_environment(),
            "torch_device": TorchDeviceResource(),
            "word_vectors": WordVectorsResource(),
        },
        executor=executor,
    ),
)
