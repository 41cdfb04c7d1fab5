"""`write_world`: the whole synthetic world in one call, in the real data sets' formats.

    out/Emotion6/                  images/<keyword>/<n>.jpg, ground_truth.txt, readme.txt
    out/EmotionROI/                images/, ground_truth/ (ESMs), training_testing_split/
    out/VG/                        image_data.json, objects.json, relationships.json, attributes.json,
                                   object_alias.txt, relationship_alias.txt, VG_100K/, VG_100K_2/
    out/planted_affinities.json    what the generator planted: object and palette affinities
    out/planted_scenes.json        the objects, palette and mood of every Emotion6 / EmotionROI picture;
                                   the mood and noise-free distribution of every Visual Genome image

Everything is first written into a staging folder inside `out` and moved into place at the end, one
entry at a time, so a reader never sees a half-written data set. The same seed gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emo_pipeline.core.atomic import write_text_atomic
from emo_pipeline.core.emotions import EMOTIONS
from emo_pipeline.synthetic import grammar as g

if TYPE_CHECKING:
    import pandas as pd
from emo_pipeline.synthetic.annotation import ANNOTATORS, latent_distribution
from emo_pipeline.synthetic.emotion6_writer import write_emotion6
from emo_pipeline.synthetic.emotionroi_writer import write_emotionroi
from emo_pipeline.synthetic.scenes import SceneBatch, SceneStyle
from emo_pipeline.synthetic.visual_genome_writer import VisualGenomeSpec, write_visual_genome

EMOTION6_DIR, EMOTIONROI_DIR, VG_DIR = "Emotion6", "EmotionROI", "VG"
PLANTED_AFFINITIES, PLANTED_SCENES = "planted_affinities.json", "planted_scenes.json"

# Random streams, one per data set, so that changing one data set's size leaves the others unchanged.
_EMOTION6_STREAM, _EMOTIONROI_STREAM = 0, 1


@dataclass(frozen=True)
class _Scale:
    emotion6_per_keyword: int
    emotionroi_per_emotion: int
    long_side: int                 # Emotion6 / EmotionROI pictures
    visual_genome: VisualGenomeSpec


_DEMO_PICTURES = ((160, 1.0),)
_DEMO_VG = VisualGenomeSpec(images=300, long_sides=_DEMO_PICTURES,
                            style=SceneStyle(foreground_mean=2.5, foreground_max=7, windows_mean=0.8, object_scale=1.5),
                            relations_per_object=0.6)
_SCALES: dict[str, _Scale] = {
    # Small enough for the whole graph to train on a laptop CPU in minutes.
    "demo": _Scale(40, 20, 160, _DEMO_VG),
    # Visual Genome at its real size (108,077 images, about 3.8M objects and 2.3M relationships) for
    # ingestion benchmarks: about 30 s and 300 MB of memory on two cores for 1.7 GB of JSON. Pictures
    # at real sizes only when asked for (about half an hour and 7 GB more). Emotion6 / EmotionROI stay small.
    "vg-full": _Scale(40, 20, 160, VisualGenomeSpec(
        images=108_077, long_sides=((800, 0.88), (640, 0.06), (500, 0.06)),
        style=SceneStyle(foreground_mean=25.0, foreground_max=80, windows_mean=2.0, object_scale=0.8),
        relations_per_object=0.38, chunk_images=2000)),
    # The demo's pictures, with ten times its Visual Genome: what the detector weights shipped with the
    # package were trained on (emo_pipeline.detection.pretrained, seed 1).
    "detector-pretraining": _Scale(40, 20, 160, dataclasses.replace(_DEMO_VG, images=3000)),
}
SCALES = tuple(_SCALES)


@dataclass
class WorldSummary:
    """What write_world wrote: the folders and files, and how many records each data set holds."""

    root: Path
    seed: int
    scale: str
    emotion6: Path
    emotionroi: Path
    visual_genome: Path
    planted_affinities: Path
    planted_scenes: Path
    emotion6_images: int
    emotionroi_images: int
    vg_images: int
    vg_objects: int
    vg_relationships: int
    vg_attributes: int            # objects listed with a non-empty "attributes" list
    vg_pictures_written: bool
    seconds: float


def planted_affinities(seed: int, scale: str) -> dict:
    """The content of planted_affinities.json: what models should recover."""
    return {
        "emotions": list(EMOTIONS),
        "seed": seed,
        "scale": scale,
        "annotators": ANNOTATORS,
        "objects": {k.name: [round(v, 6) for v in k.affinity] for k in g.OBJECTS},
        "object_salience": {k.name: k.salience for k in g.OBJECTS},
        "object_aliases": {k.name: [k.plural] for k in g.OBJECTS if k.plural},
        "palettes": {p.name: [round(v, 6) for v in p.affinity] for p in g.PALETTES},
        "top_objects": {e: g.top_objects(e) for e in EMOTIONS},
    }


def _scene_records(batch: SceneBatch, keys: list[str], with_latent: bool) -> dict[str, dict]:
    latent = latent_distribution(batch) if with_latent else None
    records = {}
    for i, key in enumerate(keys):
        rows = range(batch.objects(i).start, batch.objects(i).stop)
        record = {
            "width": int(batch.width[i]),
            "height": int(batch.height[i]),
            "mood": EMOTIONS[int(batch.mood[i])],
            "palette": g.PALETTES[int(batch.palette[i])].name,
            "outdoor": bool(batch.outdoor[i]),
            "objects": [{"name": g.OBJECTS[int(batch.kind[r])].name, "x": int(batch.x[r]), "y": int(batch.y[r]),
                         "w": int(batch.w[r]), "h": int(batch.h[r])} for r in rows],
        }
        if latent is not None:
            record["latent"] = [round(float(v), 4) for v in latent[i]]
        records[key] = record
    return records


def _vg_records(moods: list[np.ndarray], latent: list[np.ndarray]) -> dict[str, dict]:
    """Image id (from 1, in order) -> the mood it was drawn for and its noise-free distribution."""
    if not moods:
        return {}
    mood, dist = np.concatenate(moods), np.concatenate(latent)
    return {str(i + 1): {"mood": EMOTIONS[int(m)], "latent": [round(float(v), 4) for v in row]}
            for i, (m, row) in enumerate(zip(mood, dist))}


def read_planted_vg(world: Path) -> pd.DataFrame:
    """The planted Visual Genome distributions of a world: image_id, mood and prob_<emotion> columns."""
    import pandas as pd

    from emo_pipeline.core.emotions import PROB_COLUMNS

    records = json.loads((Path(world) / PLANTED_SCENES).read_text(encoding="utf-8"))["VisualGenome"]
    ids = np.array([int(k) for k in records], dtype=np.int64)
    frame = pd.DataFrame([r["latent"] for r in records.values()], columns=list(PROB_COLUMNS))
    frame.insert(0, "mood", [r["mood"] for r in records.values()])
    frame.insert(0, "image_id", ids)
    return frame


def _publish(staging: Path, out: Path, names: tuple[str, ...]) -> None:
    """Move each finished entry from the staging folder onto its final name, replacing an older one."""
    for name in names:
        final = out / name
        if final.exists():
            os.replace(final, staging / f".replaced-{name}")
        os.replace(staging / name, final)


def write_world(out: Path, seed: int = 0, scale: str = "demo", images: bool = True,
                progress: Callable[[str], None] | None = None) -> WorldSummary:
    """Write the synthetic Emotion6, EmotionROI and Visual Genome data sets under `out`.

    `scale` is "demo" (a few hundred small pictures per data set), "vg-full" (Visual Genome
    annotations at full size) or "detector-pretraining" (the demo with 3,000 Visual Genome pictures).
    `images` says whether to draw the Visual Genome pictures; Emotion6 and EmotionROI are small and
    always get theirs. `progress` receives short lines about long work.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, not {scale!r}")
    spec = _SCALES[scale]
    began = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".world-", dir=out))
    try:
        e6_batch, e6_keys, _ = write_emotion6(
            staging / EMOTION6_DIR,
            np.random.default_rng(np.random.SeedSequence([seed, _EMOTION6_STREAM])),
            np.random.default_rng(np.random.SeedSequence([seed, _EMOTION6_STREAM, 1])),
            spec.emotion6_per_keyword, spec.long_side, progress)
        roi_batch, roi_keys = write_emotionroi(
            staging / EMOTIONROI_DIR,
            np.random.default_rng(np.random.SeedSequence([seed, _EMOTIONROI_STREAM])),
            np.random.default_rng(np.random.SeedSequence([seed, _EMOTIONROI_STREAM, 1])),
            spec.emotionroi_per_emotion, spec.long_side, progress)
        vg = write_visual_genome(staging / VG_DIR, seed, spec.visual_genome, images, progress)
        write_text_atomic(json.dumps(planted_affinities(seed, scale), indent=2) + "\n", staging / PLANTED_AFFINITIES)
        scenes = {"Emotion6": _scene_records(e6_batch, e6_keys, with_latent=True),
                  "EmotionROI": _scene_records(roi_batch, roi_keys, with_latent=False),
                  "VisualGenome": _vg_records(vg.moods, vg.latent)}
        write_text_atomic(json.dumps(scenes) + "\n", staging / PLANTED_SCENES)
        _publish(staging, out, (EMOTION6_DIR, EMOTIONROI_DIR, VG_DIR, PLANTED_AFFINITIES, PLANTED_SCENES))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - began
    if progress:
        progress(f"synthetic world ({scale}, seed {seed}) written to {out} in {seconds:.1f} s")
    return WorldSummary(
        root=out, seed=seed, scale=scale,
        emotion6=out / EMOTION6_DIR, emotionroi=out / EMOTIONROI_DIR, visual_genome=out / VG_DIR,
        planted_affinities=out / PLANTED_AFFINITIES, planted_scenes=out / PLANTED_SCENES,
        emotion6_images=len(e6_keys), emotionroi_images=len(roi_keys), vg_images=vg.images,
        vg_objects=vg.objects, vg_relationships=vg.relationships, vg_attributes=vg.attributes,
        vg_pictures_written=images, seconds=round(seconds, 3))
