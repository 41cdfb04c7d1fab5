"""Writing an Emotion6-shaped folder: images/<keyword>/<n>.jpg, ground_truth.txt, readme.txt.

As in the real data set, the folder is the search keyword, not the label: a keyword's scenes are
composed around its emotion most of the time, but the annotators' dominant emotion (argmax of the 7
vote fractions) agrees with the folder only for about half of the pictures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from emo_pipeline.core.atomic import write_text_atomic
from emo_pipeline.core.emotions import EMOTIONS, KEYWORDS
from emo_pipeline.synthetic.annotation import Annotations, annotate, format_number
from emo_pipeline.synthetic.render import render_scene, save_jpeg
from emo_pipeline.synthetic.scenes import SceneBatch, SceneStyle, sample_keyword_folders

# The exact header line of the real ground_truth.txt (TAB-separated).
HEADER = "\t".join(["[image_filename]", "[valence]", "[arousal]"] + [f"[prob. {e}]" for e in EMOTIONS])

# Share of a keyword's scenes composed around the keyword's emotion; the rest drew a random emotion, and
# those that drew another than the keyword's are neutral scenes (NEUTRAL_SHARE), as a search for a
# keyword also finds pictures that evoke nothing in particular. With annotator noise this
# puts the dominant emotion in the keyword's folder about half the time (the real database: 51 %) and
# makes neutral the dominant emotion of about one picture in six (the real database: 325 of 1980).
KEYWORD_MOOD_SHARE = 0.8
NEUTRAL_SHARE = 1.0
STYLE = SceneStyle(foreground_mean=1.5, foreground_max=5, windows_mean=0.8, object_scale=1.7)

README = """Emotion6-shaped synthetic image database

Written by emo_pipeline.synthetic.write_world in the layout and formats of the Cornell Emotion6
database, so that the pipeline runs end to end without the real download.

Placed under the folder "images," the pictures are grouped in six sub-folders named after the
emotion keyword used to compose them (anger, disgust, fear, joy, sadness, surprise).
As in the real database, the folder is the keyword, not the label.

The file "ground_truth.txt" lists the valence, arousal, and emotion distribution of each image.
Each line (except the first line) lists the information associated with one image.
The format is as follows:
[image_filename] [valence] [arousal] [prob. anger] [prob. disgust] [prob. fear] [prob. joy] [prob. sadness] [prob. surprise] [prob. neutral]

The probabilities are vote fractions of 15 simulated annotators; valence and arousal are on a 1-9 scale.
The objects and palettes planted in each picture are listed in ../planted_scenes.json, and the emotion
affinities they were given in ../planted_affinities.json.
"""


def _row_order(rng: np.random.Generator, per_keyword: int) -> np.ndarray:
    """Row order of ground_truth.txt: a random interleaving of the six keywords, each in 1..N order.

    This is how the real file looks (disgust/1, surprise/1, fear/1, joy/1, sadness/1, disgust/2, ...):
    not sorted, yet every keyword's images appear in increasing number.
    """
    sequence = rng.permutation(np.repeat(np.arange(len(KEYWORDS)), per_keyword))
    seen = np.zeros(len(KEYWORDS), dtype=np.int64)
    rows = np.empty(len(sequence), dtype=np.int64)
    for position, keyword in enumerate(sequence):
        rows[position] = keyword * per_keyword + seen[keyword]
        seen[keyword] += 1
    return rows


def ground_truth_text(keys: list[str], annotations: Annotations, order: np.ndarray) -> str:
    """ground_truth.txt: the header, then one TAB-separated line per image, LF line endings."""
    lines = [HEADER]
    for row in order:
        values = [annotations.valence[row], annotations.arousal[row], *annotations.probabilities[row]]
        lines.append("\t".join([keys[row]] + [format_number(float(v)) for v in values]))
    return "\n".join(lines) + "\n"


def write_emotion6(root: Path, rng: np.random.Generator, render_rng: np.random.Generator, per_keyword: int,
                   long_side: int, progress: Callable[[str], None] | None = None,
                   ) -> tuple[SceneBatch, list[str], Annotations]:
    """Write the folder under `root`; return the scenes, their relative paths and their annotations."""
    keys, batch = sample_keyword_folders(rng, per_keyword, KEYWORD_MOOD_SHARE, long_side, STYLE, NEUTRAL_SHARE)
    annotations = annotate(rng, batch)
    order = _row_order(rng, per_keyword)

    for i, key in enumerate(keys):
        save_jpeg(render_scene(batch, i, render_rng), root / "images" / key)
    if progress:
        progress(f"Emotion6: {len(keys)} images written")
    write_text_atomic(ground_truth_text(keys, annotations, order), root / "ground_truth.txt")
    write_text_atomic(README, root / "readme.txt")
    if progress:
        progress(f"Emotion6: ground_truth.txt written ({len(keys)} rows)")
    return batch, keys, annotations
