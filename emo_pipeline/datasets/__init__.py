"""Datasets A and B: images with an emotion distribution and the objects they contain."""
