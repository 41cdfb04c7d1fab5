"""Group `datasets`: the synthesized datasets A and B as Parquet tables, queryable with `emo-pipeline sql`.

`dataset_a` joins the Emotion6 labels with the detector's objects (`emotion6_detections`).

`vg_emotion_predictions` is partitioned into shards of Visual Genome image ids. A backfill of every
shard runs as one run (single-run backfill policy, so `dagster asset materialize --partition-range
shard_00...shard_15` works from a shell too); shards already predicted by the same model version are
kept, so a run that crashed resumes where it stopped, and two runs over different ranges share the
work. Its `images` setting makes dataset B all of Visual Genome (0) or a seeded sample of that many
images (the paper profile's 2,000, after the paper's "2000-image subset"); unset, the profile decides.
`dataset_b` joins the predictions with the annotated objects and relationships, one row per predicted
image.
"""

import time

import dagster as dg
import numpy as np

from emo_pipeline.core.digests import frame_fingerprint
from emo_pipeline.core.emotions import EMOTIONS, PROB_COLUMNS
from emo_pipeline.core.plots import emotion_profile_png
from emo_pipeline.core.profiles import dataset_b_images
from emo_pipeline.datasets.build import (
    ALL_IMAGES,
    DATASET_A_TABLES,
    DATASET_B_TABLES,
    SHARDS,
    build_dataset_a,
    build_dataset_b,
    predict_shard,
    resolve_image_paths,
    select_images,
    shard_images,
    shard_is_current,
    shard_keys,
)
from emo_pipeline.defs.shared.gpu import GPU_POOL, GPU_TAGS
from emo_pipeline.defs.shared.metadata import png_metadata, table_metadata
from emo_pipeline.defs.shared.resources import DataRoots, ModelStoreResource, TorchDeviceResource, WarehouseResource
from emo_pipeline.image_emotion.predict import RunOptions, default_model, validation_scores
from emo_pipeline.storage.model_store import card_version, load_card

GROUP = "datasets"
VG_PREDICTIONS = "vg_emotion_predictions"
VG_SHARDS = dg.StaticPartitionsDefinition(shard_keys(SHARDS))


class VGPredictionConfig(dg.Config):
    model: str | None = None  # default: the best materialized model by validation Chebyshev
    # How many images dataset B holds: 0 for every Visual Genome image, N for a seeded sample of N
    # images with a file path; unset, the profile's (paper 2000, demo 0).
    images: int | None = None
    sample_seed: int = 0      # which sample; the same seed and data give the same images
    batch_size: int = 64
    workers: int = 2          # decoding processes beside the model


@dg.asset(group_name=GROUP, partitions_def=VG_SHARDS, backfill_policy=dg.BackfillPolicy.single_run(),
          deps=["vg_images", "emotion_distribution_metrics"], op_tags=GPU_TAGS, pool=GPU_POOL,
          kinds={"pytorch", "parquet"},
          description="The emotion distribution predicted for every Visual Genome image, one partition per shard "
                      "of image ids.")
def vg_emotion_predictions(context: dg.AssetExecutionContext, config: VGPredictionConfig,
                           data_roots: DataRoots, warehouse: WarehouseResource, models: ModelStoreResource,
                           torch_device: TorchDeviceResource) -> dg.MaterializeResult:
    store = warehouse.get()
    models_dir = models.directory()
    model = config.model or default_model(models_dir, validation_scores(store))
    card, version = load_card(models_dir, model), card_version(models_dir, model)
    options = RunOptions(batch_size=config.batch_size, workers=config.workers, device=str(torch_device.torch_device()))
    every_image = resolve_image_paths(store.read_table("vg_images", columns=["image_id", "image_path"]),
                                      data_roots.vg())
    count = dataset_b_images(models.active_profile()) if config.images is None else config.images
    try:
        images = select_images(every_image, count, config.sample_seed)
    except ValueError as exc:
        raise dg.Failure(f"{VG_PREDICTIONS} config field `images`: {exc}") from exc
    chosen = "every image" if count == ALL_IMAGES else f"a sample of {count:,} (seed {config.sample_seed})"
    keys = context.partition_keys
    context.log.info(f"dataset B: {chosen}, {len(images):,} of {len(every_image):,} Visual Genome images; "
                     f"predicting {len(keys)} shard(s) with {model} (version {version}, {card.kind}) "
                     f"on {options.device}")
    predicted = kept = readable = 0
    began = time.perf_counter()
    for key in keys:
        shard = shard_images(images, key)
        if (store.has_partition(VG_PREDICTIONS, key)
                and shard_is_current(store.read_partition(VG_PREDICTIONS, key), shard, model, version)):
            context.log.info(f"{key}: {len(shard)} images already predicted by this model version, kept")
            kept += len(shard)
            continue
        frame = predict_shard(shard, card, models_dir, version, options)
        store.write_partition(VG_PREDICTIONS, key, frame, refresh=False)
        predicted += len(shard)
        readable += int(frame["readable"].sum())
        rate = predicted / max(time.perf_counter() - began, 1e-9)
        context.log.info(f"{key}: {len(shard)} images, {int(frame['readable'].sum())} readable "
                         f"({rate:.1f} images/s so far)")
    store.refresh_views()
    seconds = time.perf_counter() - began
    # The same model version over the same images gives the same predictions: a run that keeps every
    # shard leaves dataset B, and what is trained on it, up to date.
    version_of_data = dg.DataVersion(f"{model}-{version}-{frame_fingerprint(images[['image_id']])}")
    return dg.MaterializeResult(data_version=version_of_data, metadata={
        "model": model,
        "model_version": version,
        "images_setting": "all" if count == ALL_IMAGES else count,
        "sample_seed": config.sample_seed,
        "images_selected": len(images),  # over every shard, this run's and the others'
        "visual_genome_images": len(every_image),
        "shards": len(keys),
        "images_predicted": predicted,
        "images_kept_from_earlier_run": kept,
        "readable_images": readable,
        "images_per_second": round(predicted / seconds, 1) if predicted else 0.0,
        "device": options.device,
    })


@dg.asset_check(asset=VG_PREDICTIONS, name="one_model_version", blocking=True,
                description="every shard was predicted by the same model version, so dataset B is one model's view")
def one_model_version(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    table = warehouse.get().read_table(VG_PREDICTIONS, columns=["model", "model_version"])
    versions = sorted({f"{m} {v}" for m, v in zip(table["model"], table["model_version"])})
    return dg.AssetCheckResult(passed=len(versions) == 1, description=f"model versions: {', '.join(versions)}")


@dg.multi_asset(
    name="dataset_a",
    specs=[
        dg.AssetSpec("dataset_a", group_name=GROUP, kinds={"parquet", "duckdb"},
                     deps=["emotion6_labels", "emotion6_detections"],
                     description="Per Emotion6 image: the annotated distribution (emotions as columns) and the "
                                 "objects the detector found."),
        dg.AssetSpec("dataset_a_objects", group_name=GROUP, kinds={"parquet", "duckdb"}, deps=["dataset_a"],
                     description="One row per Emotion6 image and detected object, with the image's emotions."),
    ],
)
def dataset_a(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    store = warehouse.get()
    counts = build_dataset_a(store)
    context.log.info("dataset A: " + ", ".join(f"{name} {count:,} rows" for name, count in counts.items()))
    top = store.query(
        "SELECT object, count(*) AS detections FROM dataset_a_objects GROUP BY 1 ORDER BY 2 DESC LIMIT 10")
    without = store.query("SELECT count(*) AS n FROM dataset_a WHERE objects = 0")["n"].iloc[0]
    yield dg.MaterializeResult(asset_key="dataset_a", metadata={
        **table_metadata(store.head("dataset_a"), store.table_uri("dataset_a")),
        "dagster/row_count": counts["dataset_a"],
        "images_without_detection": int(without),
        "top_objects": dg.MetadataValue.md(top.to_markdown(index=False) if len(top) else "no detections"),
    })
    for name in DATASET_A_TABLES[1:]:
        yield dg.MaterializeResult(asset_key=name, metadata={
            **table_metadata(store.head(name), store.table_uri(name)), "dagster/row_count": counts[name]})


@dg.asset_check(asset="dataset_a", name="every_image_once", blocking=True, additional_deps=["emotion6_labels"],
                description="every Emotion6 image has exactly one dataset A row, its distribution summing to 1")
def dataset_a_covers_emotion6(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    table = store.read_table("dataset_a", columns=["image_key", *EMOTIONS])
    labels = store.read_table("emotion6_labels", columns=["image_key"])["image_key"]
    missing = len(set(labels) - set(table["image_key"]))
    duplicated = int(table["image_key"].duplicated().sum())
    bad = int((~np.isclose(table[list(EMOTIONS)].to_numpy(dtype=float).sum(axis=1), 1.0, atol=1e-3)).sum())
    return dg.AssetCheckResult(passed=missing == duplicated == bad == 0 and len(table) == len(labels),
                               description=f"{len(table)} rows for {len(labels)} images; {missing} missing, "
                                           f"{duplicated} duplicated, {bad} distributions not summing to 1")


@dg.multi_asset(
    name="dataset_b",
    specs=[
        dg.AssetSpec("dataset_b", group_name=GROUP, kinds={"parquet", "duckdb"},
                     deps=[VG_PREDICTIONS, "vg_images", "vg_objects", "vg_relationships"],
                     description="Per predicted Visual Genome image (all, or the sample of vg_emotion_predictions): "
                                 "the predicted distribution (emotions as columns), its objects and relationship "
                                 "count."),
        dg.AssetSpec("dataset_b_objects", group_name=GROUP, kinds={"parquet", "duckdb"}, deps=["dataset_b"],
                     description="One row per Visual Genome image and annotated object, with the image's emotions."),
        dg.AssetSpec("dataset_b_relationships", group_name=GROUP, kinds={"parquet", "duckdb"}, deps=["dataset_b"],
                     description="One row per annotated relationship (subject, predicate, object), with the image's "
                                 "emotions."),
    ],
)
def dataset_b(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    store = warehouse.get()
    counts = build_dataset_b(store, VG_PREDICTIONS)
    context.log.info("dataset B: " + ", ".join(f"{name} {count:,} rows" for name, count in counts.items()))
    per_image = store.read_table("dataset_b", columns=["readable", "dominant_emotion", *EMOTIONS])
    readable = per_image[per_image["readable"]].rename(columns=dict(zip(EMOTIONS, PROB_COLUMNS)))
    mean = readable[list(PROB_COLUMNS)].mean().to_numpy() if len(readable) else np.full(len(EMOTIONS), np.nan)
    yield dg.MaterializeResult(asset_key="dataset_b", metadata={
        **table_metadata(store.head("dataset_b"), store.table_uri("dataset_b")),
        "dagster/row_count": counts["dataset_b"],
        "visual_genome_images": store.table_row_count("vg_images"),
        "readable_images": len(readable),
        **{f"mean_{emotion}": round(float(value), 4) for emotion, value in zip(EMOTIONS, mean)},
        # The paper's Fig. 3: what the model sees in Visual Genome on average.
        "emotion_profile": png_metadata(emotion_profile_png(readable, "Dataset B: predicted emotions"),
                                        "dataset B emotions"),
    })
    for name in DATASET_B_TABLES[1:]:
        yield dg.MaterializeResult(asset_key=name, metadata={
            **table_metadata(store.head(name), store.table_uri(name)), "dagster/row_count": counts[name]})


@dg.asset_check(asset="dataset_b", name="every_image_once", blocking=True,
                additional_deps=["vg_images", VG_PREDICTIONS],
                description="every predicted Visual Genome image (all of them, or the sample `images` chose) "
                            "has exactly one dataset B row")
def dataset_b_covers_vg(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = warehouse.get()
    ids = store.read_table("dataset_b", columns=["image_id"])["image_id"]
    predicted = store.read_table(VG_PREDICTIONS, columns=["image_id"])["image_id"]
    every = store.table_row_count("vg_images")
    missing = len(set(predicted) - set(ids))
    duplicated = int(ids.duplicated().sum())
    return dg.AssetCheckResult(passed=missing == duplicated == 0 and len(ids) == predicted.nunique(),
                               description=f"{len(ids)} rows for {predicted.nunique()} predicted images "
                                           f"({every} in Visual Genome); {missing} missing, {duplicated} duplicated")


@dg.asset_check(asset="dataset_b", name="distributions_sum_to_one", blocking=True,
                description="each readable image's predicted distribution is within [0, 1] and sums to 1")
def dataset_b_distributions(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    table = warehouse.get().read_table("dataset_b", columns=["readable", *EMOTIONS])
    values = table.loc[table["readable"], list(EMOTIONS)].to_numpy(dtype=float)
    bad = int((~np.isclose(values.sum(axis=1), 1.0, atol=1e-4) | (values < 0).any(axis=1)
               | ~np.isfinite(values).all(axis=1)).sum())
    return dg.AssetCheckResult(passed=bad == 0, description=f"{len(values)} readable images, {bad} bad distributions")


defs = dg.Definitions(
    assets=[vg_emotion_predictions, dataset_a, dataset_b],
    asset_checks=[one_model_version, dataset_a_covers_emotion6, dataset_b_covers_vg, dataset_b_distributions],
)
