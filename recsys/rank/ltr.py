"""LightGBM lambdarank trained through Ray Train; the trained ranker (its file, loading, scoring) is
recsys.models.ranker, which serving loads without this module.

The lists travel to the workers through the object store; each worker takes every world_size-th list
so no request is split across workers. Training reports once at the end (one checkpoint holding the
model text): a per-round RayTrainReportCallback costs about 2 s a round here (shared/STACK-NOTES.md).
Early stopping watches NDCG@12 on the time-based validation lists.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from recsys.models.ranker import MODEL_FILE, LTRRanker
from recsys.rank.features import NAMES
from recsys.rank.offline import TrainingLists

def _shard(arrays: dict, rank: int, size: int) -> dict:
    group = arrays["group"]
    off = np.concatenate([[0], np.cumsum(group)])
    lists = np.arange(rank, len(group), size)
    rows = np.concatenate([np.arange(off[i], off[i + 1]) for i in lists]) if len(lists) else np.zeros(0, int)
    return {"X": arrays["X"][rows], "y": arrays["y"][rows], "group": group[lists]}


def _train_loop(config: dict) -> None:
    """Runs on each Ray Train worker."""
    import lightgbm as lgb
    import ray
    import ray.train
    from ray.train import Checkpoint

    ctx = ray.train.get_context()
    rank, size = ctx.get_world_rank(), ctx.get_world_size()
    data = ray.get(config["data"])
    train = _shard(data["train"], rank, size)
    valid = data["valid"]
    params = dict(config["params"])
    if size > 1:
        params.update(ray.train.lightgbm.get_network_params())
    dtrain = lgb.Dataset(train["X"], train["y"], group=train["group"], feature_name=list(NAMES),
                         free_raw_data=False)
    callbacks, valid_sets = [], []
    if len(valid["group"]):
        valid_sets = [lgb.Dataset(valid["X"], valid["y"], group=valid["group"], reference=dtrain)]
        callbacks.append(lgb.early_stopping(int(config["early_stopping_rounds"]), verbose=False))
    booster = lgb.train(params, dtrain, num_boost_round=int(config["num_boost_round"]), valid_sets=valid_sets,
                        valid_names=["valid"][: len(valid_sets)], callbacks=callbacks)
    metrics = {"best_iteration": int(booster.best_iteration or booster.current_iteration())}
    for name, value in (booster.best_score.get("valid") or {}).items():
        metrics[f"valid_{name}"] = float(value)
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            booster.save_model(str(Path(tmp) / MODEL_FILE), num_iteration=metrics["best_iteration"])
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def fit_gbdt_on_ray(trainer_cls, loop, data: dict, gbdt_cfg, storage_path: str | Path, name: str):
    """One boosted-trees fit on Ray Train (LightGBMTrainer or XGBoostTrainer): the lists through the object
    store, the config's rounds, early stopping and workers; returns Ray's Result (metrics, checkpoint)."""
    import ray
    from omegaconf import OmegaConf
    from ray.train import RunConfig, ScalingConfig

    cfg = OmegaConf.to_container(gbdt_cfg, resolve=True) if OmegaConf.is_config(gbdt_cfg) else dict(gbdt_cfg)
    trainer = trainer_cls(
        loop,
        train_loop_config={"data": ray.put(data), "params": cfg["params"], "num_boost_round": cfg["num_boost_round"],
                           "early_stopping_rounds": cfg["early_stopping_rounds"]},
        scaling_config=ScalingConfig(num_workers=int(cfg["num_workers"]),
                                     resources_per_worker={"CPU": float(cfg["cpus_per_worker"])}),
        run_config=RunConfig(name=name, storage_path=str(Path(storage_path).resolve())),
    )
    return trainer.fit()


def train_lightgbm(train: TrainingLists, valid: TrainingLists, lgb_cfg, storage_path: str | Path,
                   name: str = "ranker-lightgbm") -> tuple[LTRRanker, dict]:
    """Fit lambdarank on Ray Train (the caller has run `ensure_ray`); returns the ranker and its metrics."""
    import lightgbm as lgb
    from ray.train.lightgbm import LightGBMTrainer

    def arrays(lists: TrainingLists) -> dict:
        return {"X": lists.X.astype(np.float64), "y": lists.y.astype(np.int32), "group": lists.group}

    result = fit_gbdt_on_ray(LightGBMTrainer, _train_loop, {"train": arrays(train), "valid": arrays(valid)}, lgb_cfg,
                             storage_path, name)
    with result.checkpoint.as_directory() as path:
        booster = lgb.Booster(model_file=str(Path(path) / MODEL_FILE))
    return LTRRanker(booster), dict(result.metrics or {})
