"""Group `features`: hand-made per-image features of Emotion6: the paper's GLCM texture and CIECAM02 colour
histograms, and (profile `demo`) this project's colour and texture families.

The asset calls `emo_pipeline.image_emotion.features.feature_table` and writes one Parquet row per image; its
blocking checks stop the image models from training on a table with missing images or NaN values. Which
families the table holds is `families` (the profile's `FeatureConfig`, `emo_pipeline.core.profiles`).
"""

import dataclasses
import time

import dagster as dg
import numpy as np

from emo_pipeline.core.plots import mean_histograms_png
from emo_pipeline.core.profiles import feature_config
from emo_pipeline.core.rejection import rejections_frame
from emo_pipeline.defs.shared.metadata import png_metadata, rejected_metadata
from emo_pipeline.defs.shared.resources import WarehouseResource
from emo_pipeline.defs.shared.settings import apply_overrides, overrides_config
from emo_pipeline.image_emotion.colour_texture import COLOUR_TEXTURE_FAMILIES, histogram_blocks
from emo_pipeline.image_emotion.features import (
    CIECAM02_ATTRIBUTES,
    CIECAM02_RANGES,
    FAMILIES,
    SRGB_VIEWING,
    FeatureConfig,
    bin_edges,
    feature_table,
    histogram_columns,
)

GROUP = "features"
FEATURES_TABLE = "emotion6_features"


class FeatureTableConfig(overrides_config(FeatureConfig, "FeatureSettings")):
    workers: int = 0  # processes; 0 = every core the step may use


@dg.asset(group_name=GROUP, deps=["emotion6_labels"], kinds={"parquet"})
def emotion6_features(context: dg.AssetExecutionContext, config: FeatureTableConfig,
                      warehouse: WarehouseResource) -> dg.MaterializeResult:
    """GLCM texture (6 properties x distances x angles) and normalised CIECAM02 J/Q/C/M/s/h histograms, plus
    the colour and texture families the profile adds, one row per Emotion6 image."""
    features_config = apply_overrides(feature_config(), config)
    store = warehouse.get()
    labels = store.read_table("emotion6_labels", columns=["image_key", "image_path", "dominant_emotion"])
    logged = [0]

    def progress(done: int, total: int) -> None:
        if done == total or done - logged[0] >= max(1, total // 10):
            logged[0] = done
            context.log.info(f"features: {done}/{total} images")

    began = time.perf_counter()
    result = feature_table(zip(labels["image_key"], labels["image_path"]), features_config, progress=progress,
                           workers=config.workers or None)
    seconds = time.perf_counter() - began
    table = result.features
    path = store.write_table(FEATURES_TABLE, table)
    rejected = rejections_frame(result.rejected)
    context.log.info(f"{len(table)} images x {table.shape[1] - 1} features in {seconds:.1f} s, "
                     f"{len(rejected)} rejected")

    profile = table.merge(labels[["image_key", "dominant_emotion"]], on="image_key")
    blocks = {f"CIECAM02 {attr} ({CIECAM02_RANGES[attr][0]:g}-{CIECAM02_RANGES[attr][1]:g})":
              (histogram_columns(features_config, attr), bin_edges(features_config, attr)) for attr in ("J", "h")}
    shown = ["image_key", *[c for c in table.columns if c.endswith("_d1_a0")], "ciecam_J_b00", "ciecam_h_b00",
             "moment_L_mean", "edge_canny_density"]
    preview = table[[c for c in shown if c in table.columns]].head(8)
    colour_plot = ({"colour_by_emotion": png_metadata(
        mean_histograms_png(profile, "dominant_emotion", blocks, "mean CIECAM02 histograms by dominant emotion"),
        "CIECAM02 histograms by emotion")} if "ciecam02" in features_config.families else {})
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(table),
        "column_count": table.shape[1],
        "feature_count": table.shape[1] - 1,
        "families": ", ".join(f for f in FAMILIES if f in features_config.families),
        "path": dg.MetadataValue.path(str(path)),
        "seconds": round(seconds, 2),
        "config": dg.MetadataValue.json({**dataclasses.asdict(features_config), "workers": config.workers, "viewing": {
            "white_xyz": list(SRGB_VIEWING.white_xyz), "L_A": SRGB_VIEWING.adapting_luminance,
            "Y_b": SRGB_VIEWING.background_luminance, "surround": SRGB_VIEWING.surround}}),
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False) if len(preview) else "(empty)"),
        **rejected_metadata(rejected),
        **colour_plot,
    })


def _result(passed: bool, description: str, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=bool(passed), description=description, metadata=metadata)


@dg.asset_check(asset=FEATURES_TABLE, name="one_row_per_labelled_image", blocking=True,
                additional_deps=["emotion6_labels"],
                description="every labelled image has exactly one feature row, and no row names another image")
def features_cover_labels(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    keys = store.read_table(FEATURES_TABLE, columns=["image_key"])["image_key"]
    labelled = set(store.read_table("emotion6_labels", columns=["image_key"])["image_key"])
    missing = sorted(labelled - set(keys))
    extra = sorted(set(keys) - labelled)
    duplicated = int(keys.duplicated().sum())
    return _result(not missing and not extra and duplicated == 0,
                   f"{len(missing)} labelled images without features, {len(extra)} unknown keys, "
                   f"{duplicated} duplicated keys",
                   missing_sample=", ".join(missing[:10]) or "none")


@dg.asset_check(asset=FEATURES_TABLE, name="finite_values", blocking=True,
                description="no feature is NaN or infinite")
def features_finite(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    table = warehouse.get().read_table(FEATURES_TABLE)
    values = table.drop(columns=["image_key"]).to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    columns = table.columns[1:][bad.any(axis=0)].tolist()
    return _result(not bad.any(), f"{int(bad.sum())} non-finite values in {len(columns)} columns",
                   columns=", ".join(columns[:20]) or "none")


@dg.asset_check(asset=FEATURES_TABLE, name="histograms_sum_to_one", blocking=True,
                description="each image's histograms (CIECAM02 J, Q, C, M, s, h and those of the colour and "
                            "texture families the table holds) are non-negative and sum to 1 within 1e-9")
def features_histograms(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    table = warehouse.get().read_table(FEATURES_TABLE)
    # The table's own columns say which families it holds (a family's columns are all there or none).
    blocks = {f"ciecam_{attr}": [c for c in table.columns if c.startswith(f"ciecam_{attr}_b")]
              for attr in CIECAM02_ATTRIBUTES}
    blocks.update(histogram_blocks(COLOUR_TEXTURE_FAMILIES))
    blocks = {name: columns for name, columns in blocks.items() if columns and set(columns) <= set(table.columns)}
    errors = {}
    for name, columns in blocks.items():
        block = table[columns].to_numpy(dtype=float)
        errors[name] = float(np.abs(block.sum(axis=1) - 1).max()) if block.size else float("inf")
        if (block < 0).any():
            errors[name] = float("inf")
    worst = max(errors.values(), default=0.0)  # a table of GLCM features alone has no histogram
    return _result(worst <= 1e-9,
                   "max |sum - 1| per histogram: " + ", ".join(f"{a} {e:.1e}" for a, e in errors.items()),
                   max_sum_error=worst)


defs = dg.Definitions(assets=[emotion6_features],
                      asset_checks=[features_cover_labels, features_finite, features_histograms])
