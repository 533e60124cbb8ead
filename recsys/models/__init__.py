"""Trained models as files: the names training writes them under, and the loaders serving runs them with.

Training and serving both take the file names from here, so the two cannot drift apart, and a serving
replica loads every model with numpy, onnxruntime, lightgbm and redis alone: never torch or
recsys.train (tests/test_serving_imports.py holds serving to that).
"""

SKUS_FILE = "skus.json"
"""The SKU of each item row, in a training run's item order: the towers' item index and the ALS factors."""
