"""XGBoost `rank:ndcg` trained through Ray Train's XGBoostTrainer (the maintained successor of
xgboost-ray, which does not work with XGBoost 3), compared with LightGBM and the MLP on the same lists
(recsys.rank.train). LightGBM stays the served ranker; this one is measured beside it.

As in recsys.rank.ltr, each worker takes every world_size-th list (Ray's XGBoost backend wraps the loop
in xgboost's collective communicator, so the workers build one model), and the loop reports once at the
end with the model as its checkpoint.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from recsys.rank.ltr import _shard, fit_gbdt_on_ray
from recsys.rank.offline import TrainingLists

MODEL_FILE = "xgboost.json"


class XGBoostRanker:
    """Scores rows of the 28 features with a trained booster (NaN = missing, as XGBoost reads it)."""

    def __init__(self, booster):
        self.booster = booster

    def score(self, X: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        return self.booster.predict(xgb.DMatrix(np.asarray(X, dtype=np.float32)))


def _dmatrix(part: dict):
    import xgboost as xgb

    d = xgb.DMatrix(part["X"], label=part["y"])
    d.set_group(part["group"])
    return d


def _train_loop(config: dict) -> None:
    """Runs on each Ray Train worker."""
    import ray
    import ray.train
    import xgboost as xgb
    from ray.train import Checkpoint

    ctx = ray.train.get_context()
    rank, size = ctx.get_world_rank(), ctx.get_world_size()
    data = ray.get(config["data"])
    dtrain = _dmatrix(_shard(data["train"], rank, size))
    evals, kwargs = [], {}
    if len(data["valid"]["group"]):
        evals = [(_dmatrix(data["valid"]), "valid")]
        kwargs["early_stopping_rounds"] = int(config["early_stopping_rounds"])
    result: dict = {}
    booster = xgb.train(dict(config["params"]), dtrain, num_boost_round=int(config["num_boost_round"]),
                        evals=evals, evals_result=result, verbose_eval=False, **kwargs)
    best = int(getattr(booster, "best_iteration", booster.num_boosted_rounds() - 1))
    metrics = {"best_iteration": best}
    for name, values in (result.get("valid") or {}).items():
        metrics[f"valid_{name}"] = float(values[best])
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            booster[: best + 1].save_model(str(Path(tmp) / MODEL_FILE))
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def train_xgboost(train: TrainingLists, valid: TrainingLists, xgb_cfg, storage_path: str | Path,
                  name: str = "ranker-xgboost") -> tuple[XGBoostRanker, dict]:
    """Fit rank:ndcg on Ray Train (the caller has run `ensure_ray`); returns the ranker and its metrics."""
    import xgboost as xgb
    from ray.train.xgboost import XGBoostTrainer

    def arrays(lists: TrainingLists) -> dict:
        return {"X": lists.X.astype(np.float32), "y": lists.y.astype(np.float32), "group": lists.group}

    result = fit_gbdt_on_ray(XGBoostTrainer, _train_loop, {"train": arrays(train), "valid": arrays(valid)}, xgb_cfg,
                             storage_path, name)
    booster = xgb.Booster()
    with result.checkpoint.as_directory() as path:
        booster.load_model(str(Path(path) / MODEL_FILE))
    return XGBoostRanker(booster), dict(result.metrics or {})
