"""Readers of the source data sets in their real download layouts: Emotion6, EmotionROI, Visual Genome."""
