"""Materializing the project's assets in-process, with the project's resources pointed at a test's folders."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from emo_pipeline.definitions import defs
from emo_pipeline.defs.shared.resources import DataRoots, MLflowResource, WarehouseResource


def data_roots(world: Path) -> DataRoots:
    """The three data sets of a synthetic world."""
    return DataRoots(emotion6_dir=str(world / "Emotion6"), emotionroi_dir=str(world / "EmotionROI"),
                     vg_dir=str(world / "VG"))


def project_resources(world: Path, root: Path, **overrides: object) -> dict:
    """The project's resources reading `world`, with the warehouse and MLflow under `root`.

    `overrides` replace or add resources by name (a device, word vectors, a warehouse elsewhere).
    """
    return {
        **defs.resources,
        "data_roots": data_roots(world),
        "warehouse": WarehouseResource(root=str(root / "warehouse")),
        "mlflow": MLflowResource(root=str(root / "mlflow")),
        **overrides,
    }


def group_keys(*groups: str) -> list[dg.AssetKey]:
    """The keys of every asset in the named groups."""
    graph = defs.resolve_asset_graph()
    return [key for key in graph.get_all_asset_keys() if graph.get(key).group_name in groups]


def materialize(resources: dict, select: Iterable[str | dg.AssetKey], run_config: dict | None = None,
                tags: dict | None = None, instance: dg.DagsterInstance | None = None,
                raise_on_error: bool = False) -> dg.ExecuteInProcessResult:
    """One in-process run of the selected assets (names or keys) with their checks, on `resources`.

    Each run gets a fresh ephemeral instance unless `instance` is given (runs that must see each other).
    """
    job = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, resources=resources) \
        .resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        asset_selection=[key if isinstance(key, dg.AssetKey) else dg.AssetKey(key) for key in select],
        run_config=run_config or {}, tags=tags or {},
        instance=instance if instance is not None else dg.DagsterInstance.ephemeral(), raise_on_error=raise_on_error)
