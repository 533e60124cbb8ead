"""ALS factors as files: what training and the incremental job write, and what serving folds users in
with. recsys.train.als fits the model (the `implicit` package); serving needs only these arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recsys.models import SKUS_FILE

FACTORS_FILE = "als.npz"   # user and item factors, the users' ids, the regularization and alpha they were fit with


def save_factors(folder: Path, user_factors: np.ndarray, item_factors: np.ndarray, users: list[str],
                 skus: list[str], regularization: float, alpha: float) -> Path:
    """Writes the factors and their item order into `folder`; returns the path the registry records."""
    path = folder / FACTORS_FILE
    np.savez(path, user_factors=user_factors, item_factors=item_factors, users=np.asarray(users),
             regularization=float(regularization), alpha=float(alpha))
    (folder / SKUS_FILE).write_text(json.dumps(skus))
    return path


class ALSFactors:
    """Item factors, known users' factors, and the closed-form fold-in for anyone else."""

    def __init__(self, path: Path):
        data = np.load(path)
        self.skus = json.loads((path.parent / SKUS_FILE).read_text())   # the factors' item order
        self.index = {sku: i for i, sku in enumerate(self.skus)}
        self.items = data["item_factors"].astype(np.float32)
        self.users = {str(u): i for i, u in enumerate(data["users"])}
        self.user_factors = data["user_factors"].astype(np.float32)
        self.reg, self.alpha = float(data["regularization"]), float(data["alpha"])
        self.gram = self.items.T @ self.items

    def user_vector(self, user_id: str, item_rows: list[int]) -> np.ndarray | None:
        if not item_rows:
            return self.user_factors[self.users[user_id]] if user_id in self.users else None
        # implicit ALS's user update: (Y'Y + Y'(C-I)Y + reg I) x = Y'C p, over this user's items
        y = self.items[item_rows]
        confidence = 1.0 + self.alpha * np.ones(len(item_rows), dtype=np.float32)
        a = self.gram + (y.T * (confidence - 1.0)) @ y + self.reg * np.eye(y.shape[1], dtype=np.float32)
        return np.linalg.solve(a, y.T @ confidence)
