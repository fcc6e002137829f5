"""Datasets: label spaces, readers of the official on-disk formats, TFDS builders, pipelines."""
