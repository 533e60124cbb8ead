"""The two-tower model on Ray Train: TorchTrainer workers run the same epoch and evaluation code as
`fit_two_tower`, with early stopping on validation NDCG and the best weights as the checkpoint."""

from __future__ import annotations

import copy
import os
import tempfile
import time

import torch

from recsys.models.two_tower import TwoTowerConfig
from recsys.train.two_tower import (EvalSet, ItemFeatures, TwoTowerModel, build_model, evaluate_two_tower,
                                    make_loader, make_optimizer, set_seed, train_epoch, training_arrays)

CHECKPOINT_FILE = "two_tower.pt"


def _stop_everywhere(stop: bool, world: int, device) -> bool:
    """Rank 0 decides; every DDP worker must leave the loop at the same epoch."""
    if world == 1:
        return stop
    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg = TwoTowerConfig.from_dict(config["model"])
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    set_seed(cfg.seed)
    device = ray.train.torch.get_device()
    sequences = config["train_sequences"]
    arrays = training_arrays(sequences, config.get("train_timestamps") if cfg.use_recency else None, cfg)
    model = build_model(cfg, config["item_features"], sequences)
    model = ray.train.torch.prepare_model(model) if world > 1 else model.to(device)
    core: TwoTowerModel = model.module if hasattr(model, "module") else model
    opt = make_optimizer(model, cfg)
    valid: EvalSet | None = config.get("valid")
    key = f"NDCG@{cfg.eval_k}"
    best, best_state, bad, started = -1.0, None, 0, time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        loader = make_loader(arrays, cfg, cfg.seed * 100003 + epoch, bucketed=world == 1)
        if world > 1:
            loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
            if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
        loss = train_epoch(model, loader, opt, cfg, device)
        metrics = {"epoch": epoch, "loss": loss, "seconds": round(time.perf_counter() - t0, 2)}
        stop = False
        if rank == 0:
            if valid is not None:
                score = evaluate_two_tower(core, valid, ks=(cfg.eval_k,))[key]
                metrics[f"valid_{key}"] = score
                if score > best:
                    best, bad, best_state = score, 0, copy.deepcopy(core.state_dict())
                else:
                    bad += 1
                stop = bad >= cfg.patience
            else:
                best_state = copy.deepcopy(core.state_dict())
            over_budget = cfg.max_seconds and time.perf_counter() - started > cfg.max_seconds
            stop = stop or bool(over_budget) or epoch == cfg.epochs
            print(f"two-tower epoch {epoch:2d} loss {loss:.4f}"
                  + (f" valid {key} {metrics[f'valid_{key}']:.4f}" if f"valid_{key}" in metrics else "")
                  + f" {metrics['seconds']:.1f}s" + (" (time budget spent)" if over_budget else ""), flush=True)
        stop = _stop_everywhere(stop, world, device)
        if stop and rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                torch.save({k: v.cpu() for k, v in best_state.items()}, os.path.join(folder, CHECKPOINT_FILE))
                ray.train.report({**metrics, f"best_valid_{key}": best},
                                 checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)
        if stop:
            break


def fit_on_ray(train_sequences, train_timestamps, item_features: ItemFeatures, model_cfg: dict,
               valid: EvalSet | None, pcfg, storage_path: str, name: str) -> tuple[TwoTowerModel, dict]:
    """Train on the connected Ray cluster; returns the best model (on CPU) and the last metrics."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu = bool(pcfg.use_gpu)
    resources = {"CPU": float(pcfg.cpus_per_worker)}
    if use_gpu:
        resources["GPU"] = 1.0
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"model": model_cfg | {"device": "cpu"}, "train_sequences": train_sequences,
                           "train_timestamps": train_timestamps, "item_features": item_features, "valid": valid},
        scaling_config=ScalingConfig(num_workers=int(pcfg.num_workers), use_gpu=use_gpu,
                                     resources_per_worker=resources,
                                     placement_strategy=str(pcfg.get("placement_strategy") or "PACK")),
        run_config=RunConfig(storage_path=storage_path, name=name),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"two-tower training ended without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    model = build_model(TwoTowerConfig.from_dict(model_cfg | {"device": "cpu"}), item_features, train_sequences)
    model.load_state_dict(state)
    model.eval()
    return model, dict(result.metrics or {})
