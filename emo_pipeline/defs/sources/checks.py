"""Blocking checks on the `raw` tables: schema, unique keys, distributions, files, row counts.

A failed blocking check stops everything downstream of its asset in the same run, so a broken
download never trains a model.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from emo_pipeline.core.emotions import PROB_COLUMNS
from emo_pipeline.core.rejection import REJECTION_COLUMNS
from emo_pipeline.defs.shared.resources import DataRoots, WarehouseResource
from emo_pipeline.sources.emotion6 import LABEL_COLUMNS, count_data_lines
from emo_pipeline.sources.emotionroi import MAP_COLUMNS, count_source_images
from emo_pipeline.sources.visual_genome import IMAGE_FILE, OBJECT_FILE, RELATIONSHIP_FILE, SCHEMAS, count_source_records

TableCheck = Callable[[pd.DataFrame], dg.AssetCheckResult]


def _result(passed: bool, description: str, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=bool(passed), description=description, metadata=metadata)


def schema_check(asset: str, columns: Sequence[str]) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="schema", blocking=True,
                    description=f"{asset} has exactly the columns {', '.join(columns)}")
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        actual = list(warehouse.get().head(asset, 1).columns)
        missing = [c for c in columns if c not in actual]
        extra = [c for c in actual if c not in columns]
        return _result(actual == list(columns), f"missing {missing or 'none'}, unexpected {extra or 'none'}",
                       columns=", ".join(actual))

    return _check


def unique_key_check(asset: str, key: Sequence[str]) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="unique_keys", blocking=True,
                    description=f"no two rows of {asset} share ({', '.join(key)})")
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        frame = warehouse.get().read_table(asset, columns=list(key))
        duplicated = frame[frame.duplicated(keep=False)]
        return _result(duplicated.empty, f"{len(duplicated)} rows share a key",
                       sample=dg.MetadataValue.md(duplicated.head(10).to_markdown(index=False) or "none"))

    return _check


def files_exist_check(asset: str, path_columns: Sequence[str]) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="files_exist", blocking=True,
                    description=f"every path in {', '.join(path_columns)} of {asset} is a file")
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        frame = warehouse.get().read_table(asset, columns=list(path_columns))
        missing = [p for col in path_columns for p in frame[col] if not Path(p).is_file()]
        return _result(not missing, f"{len(missing)} missing files", sample=", ".join(missing[:10]) or "none")

    return _check


@dg.asset_check(asset="emotion6_labels", name="probabilities_sum_to_one", blocking=True,
                description="each image's 7 probabilities are non-negative and sum to 1 within 1e-6")
def emotion6_probabilities(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    probs = warehouse.get().read_table("emotion6_labels", columns=list(PROB_COLUMNS)).to_numpy(dtype=float)
    error = float(np.abs(probs.sum(axis=1) - 1).max()) if len(probs) else 0.0
    negative = int((probs < 0).sum())
    return _result(error <= 1e-6 and negative == 0, f"max |sum - 1| = {error:.2e}, {negative} negative values",
                   max_sum_error=error)


@dg.asset_check(asset="emotion6_labels", name="row_count_matches_source", blocking=True,
                additional_deps=["emotion6_rejected"],
                description="valid rows + rejected rows = data lines of ground_truth.txt")
def emotion6_row_count(data_roots: DataRoots, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    source = count_data_lines(data_roots.emotion6())
    valid = len(store.read_table("emotion6_labels", columns=["image_key"]))
    rejected = len(store.read_table("emotion6_rejected", columns=["file"]))
    return _result(valid + rejected == source, f"{valid} valid + {rejected} rejected vs {source} source lines",
                   source_lines=source, valid=valid, rejected=rejected)


@dg.asset_check(asset="emotion6_split", name="covers_every_image_once", blocking=True,
                additional_deps=["emotion6_labels"],
                description="every labelled image is in exactly one of train/val/test, and each split is non-empty")
def emotion6_split_coverage(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    split = store.read_table("emotion6_split")
    labels = set(store.read_table("emotion6_labels", columns=["image_key"])["image_key"])
    keys = split["image_key"]
    sizes = split["split"].value_counts().to_dict()
    passed = (keys.is_unique and set(keys) == labels
              and all(sizes.get(s, 0) > 0 for s in ("train", "val", "test")))
    return _result(passed, f"{len(keys)} assigned of {len(labels)} labelled; sizes {sizes}",
                   **{f"{k}_images": int(v) for k, v in sizes.items()})


@dg.asset_check(asset="emotionroi_maps", name="row_count_matches_source", blocking=True,
                additional_deps=["emotionroi_rejected"],
                description="valid image/ESM pairs + rejected images = JPEG files under images/<emotion>/")
def emotionroi_row_count(data_roots: DataRoots, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    source = count_source_images(data_roots.emotionroi())
    valid = len(store.read_table("emotionroi_maps", columns=["image_key"]))
    rejected = store.read_table("emotionroi_rejected")
    image_rejections = int(rejected["field"].isin(["image", "esm"]).sum())
    return _result(valid + image_rejections == source,
                   f"{valid} valid + {image_rejections} rejected vs {source} images in the source",
                   source_images=source, valid=valid, rejected=image_rejections)


VG_SOURCE_FILES = {"images": IMAGE_FILE, "objects": OBJECT_FILE, "relationships": RELATIONSHIP_FILE}


@dg.asset_check(asset="vg_objects", name="row_count_matches_source", blocking=True,
                additional_deps=["vg_images", "vg_relationships", "vg_rejected"],
                description="no record lost silently: images kept + rejected = records of image_data.json; "
                            "objects and relationships kept = entries in the source when their file had no rejection")
def vg_row_count(data_roots: DataRoots, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    source = count_source_records(data_roots.vg())
    rejected_files = store.read_table("vg_rejected", columns=["file"])["file"].value_counts().to_dict()
    passed, lines = True, []
    for table, counted in source.items():
        kept = store.table_row_count(f"vg_{table}")
        rejected = int(rejected_files.get(VG_SOURCE_FILES[table], 0))
        if counted is None:  # damaged file: the reader kept what it could and named the damage
            ok = rejected > 0
        elif table == "images":
            ok = kept + rejected == counted
        else:  # one rejection may stand for a whole record of entries, so only a clean file is exact
            ok = kept == counted if rejected == 0 else kept < counted
        passed &= ok
        lines.append(f"{table}: {kept} kept, {rejected} rejections, {counted} in the source")
    return _result(passed, "; ".join(lines), **{f"source_{t}": n for t, n in source.items() if n is not None})


@dg.asset_check(asset="vg_objects", name="boxes_inside_images", blocking=True,
                additional_deps=["vg_images"],
                description="every object box has a positive size and lies inside its image")
def vg_boxes_inside(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    con = warehouse.get().connect_read_only()
    try:
        outside = con.execute("""
            SELECT count(*) FROM vg_objects o JOIN vg_images i USING (image_id)
            WHERE o.w <= 0 OR o.h <= 0 OR o.x < 0 OR o.y < 0 OR o.x + o.w > i.width OR o.y + o.h > i.height
        """).fetchone()[0]
    finally:
        con.close()
    return _result(outside == 0, f"{outside} boxes outside their image", outside=int(outside))


CHECKS = [
    schema_check("emotion6_labels", LABEL_COLUMNS),
    unique_key_check("emotion6_labels", ["image_key"]),
    files_exist_check("emotion6_labels", ["image_path"]),
    emotion6_probabilities,
    emotion6_row_count,
    schema_check("emotion6_rejected", REJECTION_COLUMNS),
    emotion6_split_coverage,
    schema_check("emotionroi_maps", MAP_COLUMNS),
    unique_key_check("emotionroi_maps", ["image_key"]),
    files_exist_check("emotionroi_maps", ["image_path", "esm_path"]),
    emotionroi_row_count,
    unique_key_check("emotionroi_split", ["image_key"]),
    *(schema_check(f"vg_{table}", [c for c, _ in columns]) for table, columns in SCHEMAS.items()),
    schema_check("vg_rejected", REJECTION_COLUMNS),
    unique_key_check("vg_images", ["image_id"]),
    unique_key_check("vg_objects", ["image_id", "object_id"]),
    vg_row_count,
    vg_boxes_inside,
]
