"""The two-tower model outside torch: its config, the files a training run writes, and the exported
ONNX user tower that serving runs. recsys.train.two_tower builds, trains and exports the model."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

CONFIG_FILE = "config.json"                # TwoTowerConfig's fields
USER_TOWER_FILE = "user_tower.onnx"        # recent item vectors, valid flags, gap buckets -> user vector
ITEM_TOWER_FILE = "item_tower.onnx"        # item features -> item vector (new SKUs: recsys.train.cold_items)
WEIGHTS_FILE = "model.pt"                  # the torch state dict
ITEM_FEATURES_FILE = "item_features.npz"   # the item tower's inputs for the catalog it was trained on
CATEGORIES_FILE = "categories.json"        # category name of each category id the item tower takes


@dataclass
class TwoTowerConfig:
    """Hyperparameters. ``id_only=True`` with ``use_recency=False`` is the SASRec-style baseline."""

    dim: int = 64
    max_len: int = 20
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    id_dropout: float = 0.1
    id_only: bool = False
    use_recency: bool = True
    n_gap_buckets: int = 24
    gap_unit_seconds: float = 60.0
    n_devices: int = 0
    n_geos: int = 0
    affinity_dim: int = 0
    normalize: bool = True
    temperature: float = 0.1
    learn_temperature: bool = True
    loss: str = "full"  # "full" | "sampled"
    logq_correction: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 50
    patience: int = 5
    eval_every: int = 1
    eval_batch_size: int = 1024
    eval_k: int = 10
    max_seconds: float | None = None
    grad_clip: float | None = None
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def from_dict(cls, d: dict) -> "TwoTowerConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise KeyError(f"unknown two-tower config keys: {sorted(unknown)}")
        return cls(**d)


def gap_buckets(gaps_seconds: np.ndarray, n_buckets: int, unit: float) -> np.ndarray:
    """Bucket 0 = unknown/padding; 1.. = floor(log2(1 + gap/unit)), capped."""
    g = np.maximum(np.asarray(gaps_seconds, dtype=np.float64), 0.0)
    b = np.floor(np.log2(1.0 + g / unit)).astype(np.int64) + 1
    return np.clip(b, 1, n_buckets - 1)


class OnnxUserTower:
    """The exported user tower over the live item vectors: a user vector from recent views."""

    def __init__(self, folder: Path, live: tuple[str, int], skus: list[str], matrix: np.ndarray):
        import onnxruntime as ort

        self.vector_set, self.dim = live
        self.index = {sku: i for i, sku in enumerate(skus)}
        self.items = matrix
        self.cfg = TwoTowerConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()) | {"device": "cpu"})
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / USER_TOWER_FILE), options,
                                            providers=["CPUExecutionProvider"])

    def user_vector(self, views: list[tuple[str, float]], now: float) -> np.ndarray | None:
        """The user tower over the most recent views (newest first in `views`)."""
        known = [(self.index[s], t) for s, t in reversed(views) if s in self.index][-self.cfg.max_len:]
        if not known:
            return None
        L = self.cfg.max_len
        hist = np.zeros((1, L, self.items.shape[1]), dtype=np.float32)
        valid = np.zeros((1, L), dtype=np.int64)
        gaps = np.zeros((1, L), dtype=np.int64)
        m = len(known)
        hist[0, L - m:] = self.items[[i for i, _ in known]]
        valid[0, L - m:] = 1
        stamps = np.array([t for _, t in known] + [now])
        gaps[0, L - m:] = gap_buckets(np.diff(stamps), self.cfg.n_gap_buckets, self.cfg.gap_unit_seconds)
        return self.session.run(None, {"hist_vecs": hist, "valid": valid, "gaps": gaps})[0][0]
