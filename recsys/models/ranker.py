"""A trained LightGBM ranker as a file: saving, loading and scoring it. recsys.rank.ltr trains it (Ray
Train); serving only loads and scores, so it needs lightgbm and the feature names, nothing of training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.rank.features import NAMES

MODEL_FILE = "model.txt"   # LightGBM's text model


class LTRRanker:
    """`score(X) -> scores` over a (n, 28) feature matrix; higher is better."""

    kind = "lightgbm"

    def __init__(self, booster):
        if list(booster.feature_name()) != list(NAMES):
            raise ValueError(f"model features {booster.feature_name()} are not the 28 ranking features")
        self.booster = booster

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64).reshape(-1, len(NAMES))
        return self.booster.predict(X, num_threads=1) if len(X) else np.zeros(0)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature SHAP contributions (n, 28 + 1 bias): what explanations show."""
        return self.booster.predict(np.asarray(X, dtype=np.float64), pred_contrib=True, num_threads=1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LTRRanker":
        import lightgbm as lgb

        return cls(lgb.Booster(model_file=str(path)))


class PopularityRanker:
    """Orders candidates by the item's decayed 7-day views, whoever asks: the baseline a ranker must
    beat. `least_first`: the long tail first (a long-tail push gone too far), the deliberately worse
    candidate of the canary tests (docs/release.md)."""

    kind = "popularity"
    feature = "views_7d"

    def __init__(self, least_first: bool = False):
        self.sign = -1.0 if least_first else 1.0

    def score(self, X: np.ndarray) -> np.ndarray:
        from recsys.rank.features import INDEX

        X = np.asarray(X, dtype=np.float64).reshape(-1, len(NAMES))
        return self.sign * np.nan_to_num(X[:, INDEX[self.feature]], nan=0.0)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        from recsys.rank.features import INDEX

        out = np.zeros((len(X), len(NAMES) + 1))
        out[:, INDEX[self.feature]] = self.score(X)
        return out


def load_ranker(artifact_uri: str, config: dict) -> LTRRanker | PopularityRanker:
    """The ranker a registry record describes: `config.type: popularity` (with `least_first`), or a
    LightGBM model file."""
    if config.get("type") == "popularity":
        return PopularityRanker(bool(config.get("least_first", False)))
    return LTRRanker.load(Path(artifact_uri) / MODEL_FILE)
