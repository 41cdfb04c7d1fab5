"""The emotion vocabulary shared by every data set and model."""

from __future__ import annotations

# Column order of Emotion6's ground_truth.txt; also the tie-break order for the dominant emotion.
EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")

# Emotion6 / EmotionROI folder names: the six search keywords (no neutral).
KEYWORDS: tuple[str, ...] = EMOTIONS[:6]

PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{e}" for e in EMOTIONS)
