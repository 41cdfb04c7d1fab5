"""Group `scenes`: from an emotion distribution to a scene (objects, layout, label map).

`scene_statistics` learns from datasets A and B what the composer needs: object co-occurrence (PMI),
the predicates that link objects, and per object its boxes (a sample to draw from, and the
distribution of centre, size and aspect ratio). `emotion_scenes` composes one scene per emotion and a
few mixtures with the GloVe FC as critic and shows them as images. `scene_fidelity` measures how well
scenes carry their emotion, judged by a model trained on the other half of dataset B's images.
"""

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from emo_pipeline.core.emotions import EMOTIONS
from emo_pipeline.core.plots import metrics_bars_png
from emo_pipeline.core.profiles import object_emotion_config
from emo_pipeline.defs.shared.gpu import GPU_POOL, GPU_TAGS
from emo_pipeline.defs.shared.metadata import png_metadata, table_metadata
from emo_pipeline.defs.shared.resources import (
    ModelStoreResource,
    TorchDeviceResource,
    WarehouseResource,
    WordVectorsResource,
)
from emo_pipeline.defs.shared.settings import replace_settings
from emo_pipeline.objects.emotion_to_objects import distribution_vector
from emo_pipeline.objects.objects_to_emotion import object_critic, object_model_name
from emo_pipeline.scenes.composer import ComposerConfig, compose_scene, held_out_fidelity, load_statistics, write_scene
from emo_pipeline.scenes.statistics import box_samples, box_statistics, cooccurrence, relations
from emo_pipeline.storage.model_store import load_torch_model

GROUP = "scenes"
CRITIC = object_model_name("fc", "b")


@dg.multi_asset(
    name="scene_statistics",
    specs=[
        dg.AssetSpec("object_cooccurrence", group_name=GROUP, kinds={"duckdb", "parquet"},
                     deps=["dataset_a_objects", "dataset_b_objects"],
                     description="Per data set and pair of objects: images holding both, and their PMI."),
        dg.AssetSpec("object_relations", group_name=GROUP, kinds={"duckdb", "parquet"},
                     deps=["dataset_b_relationships"],
                     description="Per subject and object: how often each predicate links them in dataset B."),
        dg.AssetSpec("object_boxes", group_name=GROUP, kinds={"duckdb", "parquet"},
                     deps=["dataset_b", "dataset_b_objects"],
                     description="Up to 200 boxes per object, normalised to the image size (the layout draws "
                                 "from them)."),
        dg.AssetSpec("object_box_statistics", group_name=GROUP, kinds={"duckdb", "parquet"},
                     deps=["dataset_b", "dataset_b_objects"],
                     description="Per object: the distribution of box centre, size and aspect ratio in dataset B."),
    ],
)
def scene_statistics(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    store = warehouse.get()
    con = store.connect_scratch()
    try:
        tables = {
            "object_cooccurrence": pd.concat([cooccurrence(con, d).assign(dataset=d) for d in ("a", "b")],
                                             ignore_index=True),
            "object_relations": relations(con),
            "object_boxes": box_samples(con),
            "object_box_statistics": box_statistics(con),
        }
    finally:
        con.close()
    tables["object_cooccurrence"] = tables["object_cooccurrence"][
        ["dataset", *[c for c in tables["object_cooccurrence"].columns if c != "dataset"]]]
    paths = {name: store.write_table(name, frame, refresh=False) for name, frame in tables.items()}
    store.refresh_views()
    pairs = tables["object_cooccurrence"]
    strongest = pairs[(pairs["dataset"] == "b") & (pairs["together"] >= 5)].nlargest(10, "pmi")
    context.log.info(", ".join(f"{name} {len(frame):,} rows" for name, frame in tables.items()))
    extra = {
        "object_cooccurrence": {"strongest_pairs_b": dg.MetadataValue.md(
            strongest[["object_a", "object_b", "together", "pmi"]].round(3).to_markdown(index=False)
            if len(strongest) else "no pair in 5 images or more")},
        "object_relations": {},
        "object_boxes": {},
        "object_box_statistics": {},
    }
    for name, frame in tables.items():
        yield dg.MaterializeResult(asset_key=name, metadata={**table_metadata(frame, paths[name]), **extra[name]})


class ScenesConfig(dg.Config):
    k: int = 8
    candidates: int = 16
    seed: int = 0
    # Mixtures beside the seven single emotions, as {emotion: weight}.
    mixtures: list[dict[str, float]] = [{"joy": 0.5, "surprise": 0.5}, {"fear": 0.5, "sadness": 0.5},
                                        {"anger": 0.5, "disgust": 0.5}]


def _scene_name(weights: dict[str, float]) -> str:
    return "_".join(f"{e}{round(100 * w)}" for e, w in weights.items() if w > 0) if len(weights) > 1 else \
        next(iter(weights))


@dg.asset(group_name=GROUP, kinds={"parquet"}, op_tags=GPU_TAGS, pool=GPU_POOL,
          deps=["emotion_object_scores", "object_cooccurrence", "object_relations", "object_boxes", CRITIC])
def emotion_scenes(context: dg.AssetExecutionContext, config: ScenesConfig, warehouse: WarehouseResource,
                   models: ModelStoreResource, word_vectors: WordVectorsResource) -> dg.MaterializeResult:
    """One composed scene per emotion and per configured mixture (dataset B statistics, the GloVe FC as
    critic): scene graph JSON, label map PNG and legend under EMO_HOME/scenes, shown here as images."""
    store = warehouse.get()
    stats = load_statistics(store, "b")
    model, _ = load_torch_model(models.directory(), CRITIC)
    critic = object_critic(model, "fc", word_vectors.get(context.log.info))
    composer = ComposerConfig(k=config.k, candidates=config.candidates)
    folder = models.work_dir("scenes")
    targets = [{e: 1.0} for e in EMOTIONS] + [dict(m) for m in config.mixtures]
    rows, metadata = [], {}
    for i, weights in enumerate(targets):
        name = _scene_name(weights)
        scene = compose_scene(stats, distribution_vector(weights), composer, config.seed + i, critic)
        paths = write_scene(scene, stats, folder, name, composer.canvas)
        rows.append({"scene": name, "target": json.dumps(scene.to_json(stats)["target"]),
                     "objects": scene.objects, "relations": len(scene.relations), "kl": scene.kl,
                     "candidates": scene.candidates, "scene_graph": str(paths["json"]),
                     "label_map": str(paths["labels"])})
        metadata[f"scene_{name}"] = png_metadata(paths["legend"].read_bytes(), name)
        context.log.info(f"{name}: {', '.join(scene.objects)} (critic KL {scene.kl:.3f})")
    table = pd.DataFrame(rows)
    path = store.write_table("emotion_scenes", table)
    return dg.MaterializeResult(metadata={**table_metadata(table, path, preview_rows=len(table)),
                                          "folder": dg.MetadataValue.path(str(folder)),
                                          "mean_critic_kl": round(float(table["kl"].mean()), 4), **metadata})


class FidelityConfig(dg.Config):
    k: int = 8
    candidates: int = 16
    mixtures: int = 20
    seed: int = 0
    epochs: int | None = None   # the GloVe FC's epochs (default: the profile's)


@dg.asset(group_name=GROUP, kinds={"parquet"}, op_tags=GPU_TAGS, pool=GPU_POOL,
          deps=["dataset_b", "dataset_b_objects", "dataset_b_relationships"])
def scene_fidelity(context: dg.AssetExecutionContext, config: FidelityConfig, warehouse: WarehouseResource,
                   models: ModelStoreResource, word_vectors: WordVectorsResource,
                   torch_device: TorchDeviceResource) -> dg.MaterializeResult:
    """Emotion fidelity of composed scenes: mean KL(d || judge(objects)) over the 7 emotions and random
    mixtures, for the composer with its critic, the plain top k of the score baseline and k random objects
    weighted by frequency; the judge is a GloVe FC trained on the half of dataset B the composer never saw."""
    store = warehouse.get()
    fc = object_emotion_config("fc", models.active_profile())
    if config.epochs is not None:
        fc = replace_settings(fc, {"epochs": config.epochs})
    checkpoints = models.checkpoints("scene_fidelity", fc, str(config.seed))
    con = store.connect_scratch()
    try:
        table = held_out_fidelity(con, word_vectors.get(context.log.info), fc, checkpoints,
                                  ComposerConfig(k=config.k, candidates=config.candidates), config.mixtures,
                                  config.seed, str(torch_device.torch_device()), context.log.info)
    finally:
        con.close()
        shutil.rmtree(checkpoints, ignore_errors=True)
    path = store.write_table("scene_fidelity", table)
    summary = table.groupby("method", sort=False).agg(kl=("kl", "mean"), coherence=("coherence", "mean"),
                                                      targets=("target", "size")).reset_index()
    context.log.info("scene fidelity (judge on held-out images):\n" + summary.round(4).to_string(index=False))
    return dg.MaterializeResult(metadata={
        **table_metadata(table, path),
        "summary": dg.MetadataValue.md(summary.round(4).to_markdown(index=False)),
        **{f"mean_kl_{m}": round(float(v), 4) for m, v in zip(summary["method"], summary["kl"])},
        **{f"mean_pmi_{m}": round(float(v), 4) for m, v in zip(summary["method"], summary["coherence"])},
        "figure": png_metadata(metrics_bars_png(summary.rename(columns={"method": "model"}), ("kl", "coherence")),
                               "fidelity and coherence per method"),
    })


@dg.asset_check(asset="emotion_scenes", name="label_maps_match_scene_graphs", blocking=True,
                description="each scene's label map holds only its objects' class ids (and background), and its "
                            "scene graph lists the objects of the table")
def label_maps_match_scene_graphs(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    from PIL import Image

    table = warehouse.get().read_table("emotion_scenes")
    bad = []
    for name, graph_path, labels_path, objects in zip(table["scene"], table["scene_graph"], table["label_map"],
                                                      table["objects"]):
        graph = json.loads(Path(graph_path).read_text(encoding="utf-8"))
        ids = {o["class_id"] for o in graph["objects"]}
        with Image.open(labels_path) as image:
            found = {int(v) for v in np.unique(np.asarray(image))}
        if not found <= ids | {0} or [o["name"] for o in graph["objects"]] != list(objects):
            bad.append(name)
    return dg.AssetCheckResult(passed=not bad,
                               description=f"{len(table)} scenes; mismatched: {', '.join(bad) or 'none'}")


defs = dg.Definitions(assets=[scene_statistics, emotion_scenes, scene_fidelity],
                      asset_checks=[label_maps_match_scene_graphs])
