"""Steps that train or run torch models.

They share the `gpu` concurrency pool: `dagster.yaml` lets one run with such steps in progress at a
time (docs/operations.md says why per run, not per step). On Kubernetes (dagster-k8s executor) their
tag gives the step's pod one GPU.
"""

import json

GPU_POOL = "gpu"
GPU_TAGS = {
    "dagster-k8s/config": json.dumps({"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}),
}
