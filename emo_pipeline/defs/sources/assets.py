"""Group `raw`: the three source data sets read into warehouse tables, one rejected-records table each.

Each asset calls a library reader, writes Parquet through the warehouse, refreshes the DuckDB views
and attaches row counts, schemas, previews and plots. The blocking checks live in `checks.py`.

Data versions: each table's is `source_data_version` (`defs/shared/source_versions.py`), the reader's
code version and the content fingerprint of the folder it read, known before reading. Reading
unchanged files again (the synthetic world written again byte for byte) gives the same version, so
Dagster keeps everything downstream fresh; `emo-pipeline demo` compares it with the latest
materialization's to decide whether a data set needs reading at all.
"""

import dagster as dg

from emo_pipeline.core.plots import emotion_profile_png, split_png
from emo_pipeline.core.rejection import rejections_frame
from emo_pipeline.core.splits import stratified_split
from emo_pipeline.defs.shared.metadata import png_metadata, rejected_metadata, table_metadata
from emo_pipeline.defs.shared.resources import DataRoots, WarehouseResource
from emo_pipeline.defs.shared.source_versions import READER_CODE_VERSIONS, source_data_version
from emo_pipeline.sources import emotion6 as emotion6_source
from emo_pipeline.sources import emotionroi as emotionroi_source
from emo_pipeline.sources.emotion6 import TIE_RULE, read_emotion6
from emo_pipeline.sources.emotionroi import read_emotionroi
from emo_pipeline.sources.visual_genome import VG_TABLES, ingest_visual_genome

GROUP = "raw"


def _spec(name: str, description: str, data_set: str) -> dg.AssetSpec:
    return dg.AssetSpec(name, group_name=GROUP, description=description, kinds={"parquet"},
                        code_version=READER_CODE_VERSIONS[data_set])


@dg.multi_asset(
    specs=[
        _spec(table, description, "emotion6") for table, description in zip(emotion6_source.TABLES, (
            "Emotion6 images with valence, arousal, the 7 probabilities and the dominant emotion.",
            "Emotion6 records that could not be read: file, line, field, reason."))
    ],
    name="emotion6",
)
def emotion6(context: dg.AssetExecutionContext, data_roots: DataRoots, warehouse: WarehouseResource):
    root = data_roots.emotion6()
    version = source_data_version("emotion6", root)
    context.log.info(f"reading Emotion6 from {root} (decoding every image)")
    data = read_emotion6(root)
    store = warehouse.get()
    rejected = rejections_frame(data.rejected)
    labels_path = store.write_table("emotion6_labels", data.labels, refresh=False)
    rejected_path = store.write_table("emotion6_rejected", rejected)
    labels = data.labels
    context.log.info(f"Emotion6: {len(labels)} images, {len(rejected)} rejected records")
    yield dg.MaterializeResult(
        asset_key="emotion6_labels",
        data_version=version,
        metadata={
            **table_metadata(labels, labels_path),
            "source": dg.MetadataValue.path(str(root)),
            "tie_rule": TIE_RULE,
            "tied_maximum": int(labels["dominant_tied"].sum()),
            "dominant_equals_keyword": int((labels["dominant_emotion"] == labels["keyword"]).sum()),
            "emotion_profile": png_metadata(emotion_profile_png(labels, "Emotion6"), "Emotion6 emotions"),
        },
    )
    yield dg.MaterializeResult(
        asset_key="emotion6_rejected",
        data_version=version,
        metadata={**table_metadata(rejected, rejected_path), **rejected_metadata(rejected)},
    )


class SplitConfig(dg.Config):
    seed: int = 0
    train: float = 0.70
    val: float = 0.15
    test: float = 0.15


@dg.asset(group_name=GROUP, deps=["emotion6_labels"], kinds={"parquet"})
def emotion6_split(context: dg.AssetExecutionContext, config: SplitConfig,
                   warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Seeded train/val/test split of Emotion6, stratified by dominant emotion (1386/297/297 on the real file)."""
    store = warehouse.get()
    labels = store.read_table("emotion6_labels", columns=["image_key", "dominant_emotion"])
    split = stratified_split(labels["image_key"], labels["dominant_emotion"], seed=config.seed,
                             fractions=(config.train, config.val, config.test))
    path = store.write_table("emotion6_split", split)
    sizes = split["split"].value_counts().to_dict()
    context.log.info(f"split sizes: {sizes}")
    return dg.MaterializeResult(metadata={
        **table_metadata(split, path),
        **{f"{name}_images": int(sizes.get(name, 0)) for name in ("train", "val", "test")},
        "by_emotion": png_metadata(split_png(split, labels, "Emotion6 split"), "split by emotion"),
    })


@dg.multi_asset(
    specs=[
        _spec(table, description, "emotionroi") for table, description in zip(emotionroi_source.TABLES, (
            "EmotionROI images paired with their emotion stimuli maps (ESM).",
            "EmotionROI's own train/test split, from training_testing_split/.",
            "EmotionROI records that could not be read: file, line, field, reason."))
    ],
    name="emotionroi",
)
def emotionroi(context: dg.AssetExecutionContext, data_roots: DataRoots, warehouse: WarehouseResource):
    root = data_roots.emotionroi()
    version = source_data_version("emotionroi", root)
    context.log.info(f"reading EmotionROI from {root}")
    data = read_emotionroi(root)
    store = warehouse.get()
    rejected = rejections_frame(data.rejected)
    tables = {"emotionroi_maps": data.maps, "emotionroi_split": data.split, "emotionroi_rejected": rejected}
    paths = {name: store.write_table(name, frame, refresh=False) for name, frame in tables.items()}
    store.refresh_views()
    context.log.info(f"EmotionROI: {len(data.maps)} image/ESM pairs, {len(rejected)} rejected records")
    for name, frame in tables.items():
        extra = rejected_metadata(rejected) if name == "emotionroi_rejected" else {}
        yield dg.MaterializeResult(asset_key=name, data_version=version,
                                   metadata={**table_metadata(frame, paths[name]), **extra})


VG_ASSETS = {table: f"vg_{table}" for table in VG_TABLES}
VG_DESCRIPTIONS = {
    "images": "Visual Genome images: size, url and the VG_100K / VG_100K_2 folder taken from the url.",
    "objects": "Visual Genome objects: canonical name (alias-mapped), all names, synsets, clipped box.",
    "relationships": "Visual Genome relationships: predicate (lower-case, alias-mapped), subject and object "
                     "with inline names and boxes.",
    "attributes": "Visual Genome object attributes, one row per object and attribute (empty when "
                  "attributes.json is absent).",
    "rejected": "Visual Genome records that could not be read: file, record, field, reason.",
}


@dg.multi_asset(
    specs=[_spec(asset, VG_DESCRIPTIONS[table], "visual_genome") for table, asset in VG_ASSETS.items()],
    name="visual_genome",
)
def visual_genome(context: dg.AssetExecutionContext, data_roots: DataRoots, warehouse: WarehouseResource):
    root = data_roots.vg()
    version = source_data_version("visual_genome", root)
    store = warehouse.get()
    context.log.info(f"ingesting Visual Genome from {root} with DuckDB's JSON reader")
    with store.table_outputs(VG_ASSETS.values()) as outputs:
        result = ingest_visual_genome(root, {table: outputs[asset] for table, asset in VG_ASSETS.items()})
    store.refresh_views()
    context.log.info(f"Visual Genome {result.version}: " + ", ".join(f"{t} {n}" for t, n in result.counts.items()))
    for table, asset in VG_ASSETS.items():
        head = store.head(asset)
        metadata = {
            "dagster/row_count": result.counts[table],
            "path": dg.MetadataValue.path(store.table_uri(asset)),
            "vg_version": result.version,
            "preview": dg.MetadataValue.md(head.to_markdown(index=False) if len(head) else "(empty)"),
        }
        if table == "attributes":
            metadata["attributes_file_present"] = result.has_attributes
        if table == "rejected":
            metadata.update(rejected_metadata(rejections_frame(result.rejected)))
        yield dg.MaterializeResult(asset_key=asset, data_version=version, metadata=metadata)
