"""Shared building blocks: the emotion vocabulary, metrics, splits, atomic writes, the home folder,
profiles, plots and the torch training loop."""
