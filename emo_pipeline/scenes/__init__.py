"""Emotion -> scene: object statistics, the composer and the layout."""
