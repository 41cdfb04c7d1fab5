"""Writing an EmotionROI-shaped folder: pictures, emotion stimuli maps and the train/test split.

Layout (as in the public download)::

    EmotionROI/
      images/<emotion>/<n>.jpg          6 emotions, no neutral
      ground_truth/<emotion>/<n>.jpg    the ESM: grayscale JPEG of the picture's size, 0-255
      training_testing_split/training.txt, testing.txt   one `anger/12.jpg` per line
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from emo_pipeline.core.atomic import write_text_atomic
from emo_pipeline.core.emotions import KEYWORDS
from emo_pipeline.synthetic.render import render_esm, render_scene, save_jpeg
from emo_pipeline.synthetic.scenes import SceneBatch, SceneStyle, sample_keyword_folders

# EmotionROI pictures were chosen to show their emotion clearly: most scenes are built around it.
FOLDER_MOOD_SHARE = 0.85
TRAINING_SHARE = 0.7
STYLE = SceneStyle(foreground_mean=1.5, foreground_max=5, windows_mean=0.8, object_scale=1.7)


def split_lines(rng: np.random.Generator, per_emotion: int) -> tuple[list[str], list[str]]:
    """Per emotion, a random 70/30 split of 1..N; lines grouped by emotion, in shuffled order."""
    n_train = int(round(TRAINING_SHARE * per_emotion))
    training, testing = [], []
    for emotion in KEYWORDS:
        numbers = rng.permutation(np.arange(1, per_emotion + 1))
        training += [f"{emotion}/{j}.jpg" for j in numbers[:n_train]]
        testing += [f"{emotion}/{j}.jpg" for j in numbers[n_train:]]
    return training, testing


def write_emotionroi(root: Path, rng: np.random.Generator, render_rng: np.random.Generator, per_emotion: int,
                     long_side: int, progress: Callable[[str], None] | None = None) -> tuple[SceneBatch, list[str]]:
    """Write the folder under `root`; return the scenes and their relative paths (`anger/1.jpg`)."""
    keys, batch = sample_keyword_folders(rng, per_emotion, FOLDER_MOOD_SHARE, long_side, STYLE)
    training, testing = split_lines(rng, per_emotion)

    for i, key in enumerate(keys):
        save_jpeg(render_scene(batch, i, render_rng), root / "images" / key)
        save_jpeg(render_esm(batch, i), root / "ground_truth" / key)
    split = root / "training_testing_split"
    write_text_atomic("".join(f"{line}\n" for line in training), split / "training.txt")
    write_text_atomic("".join(f"{line}\n" for line in testing), split / "testing.txt")
    if progress:
        progress(f"EmotionROI: {len(keys)} images and emotion stimuli maps written "
                 f"({len(training)} training, {len(testing)} testing)")
    return batch, keys
