"""A small PyTorch MLP ranker, the alternative to LightGBM: same features, same `score(X)`.

Inputs are sign-log compressed and standardised (heavy-tailed counts and ages), NaN becomes 0 plus a
missing flag per feature. The loss is listwise softmax cross-entropy (ListNet with the target
distribution proportional to 2^rel - 1), lists padded and masked; early stopping on validation NDCG@12.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recsys.rank.evaluate import ndcg_at_k
from recsys.rank.features import NAMES
from recsys.rank.offline import TrainingLists


def _compress(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return np.sign(X) * np.log1p(np.abs(X))


class MLPRanker:
    kind = "mlp"

    def __init__(self, net: nn.Module, mean: np.ndarray, std: np.ndarray, hidden: list[int], dropout: float):
        self.net, self.mean, self.std = net.eval(), mean, std
        self.hidden, self.dropout = list(hidden), float(dropout)

    @staticmethod
    def build(hidden: list[int], dropout: float) -> nn.Module:
        layers, width = [], 2 * len(NAMES)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        return nn.Sequential(*layers)

    def inputs(self, X: np.ndarray) -> torch.Tensor:
        Z = _compress(X)
        missing = np.isnan(Z)
        Z = np.where(missing, 0.0, (Z - self.mean) / self.std)
        return torch.as_tensor(np.hstack([Z, missing]), dtype=torch.float32)

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64).reshape(-1, len(NAMES))
        with torch.no_grad():
            return self.net(self.inputs(X)).squeeze(-1).double().numpy()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": self.net.state_dict(), "mean": self.mean, "std": self.std, "hidden": self.hidden,
                    "dropout": self.dropout, "features": list(NAMES)}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MLPRanker":
        blob = torch.load(path, weights_only=False)
        if blob["features"] != list(NAMES):
            raise ValueError("model features are not the 28 ranking features")
        net = cls.build(blob["hidden"], blob["dropout"])
        net.load_state_dict(blob["state"])
        return cls(net, blob["mean"], blob["std"], blob["hidden"], blob["dropout"])


def _padded(ranker: MLPRanker, lists: TrainingLists) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lists, max_len, features) inputs, (lists, max_len) target distributions and masks."""
    off, n = lists.offsets, int(lists.group.max())
    inputs = ranker.inputs(lists.X)
    xs = torch.zeros(len(lists.group), n, inputs.shape[1])
    target = torch.zeros(len(lists.group), n)
    mask = torch.zeros(len(lists.group), n, dtype=torch.bool)
    gain = torch.as_tensor(2.0 ** lists.y - 1.0, dtype=torch.float32)
    for i in range(len(lists.group)):
        m = off[i + 1] - off[i]
        xs[i, :m], target[i, :m], mask[i, :m] = inputs[off[i]:off[i + 1]], gain[off[i]:off[i + 1]], True
    target = target / target.sum(dim=1, keepdim=True).clamp_min(1e-9)
    return xs, target, mask


def train_mlp(train: TrainingLists, valid: TrainingLists, mlp_cfg, seed: int = 0, threads: int = 1
              ) -> tuple[MLPRanker, dict]:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    Z = _compress(train.X)
    with warnings.catch_warnings():              # an all-missing column (no ALS model) is fine
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(Z, axis=0), np.nanstd(Z, axis=0)
    mean, std = np.nan_to_num(mean), np.where(np.isfinite(std) & (std > 1e-9), std, 1.0)
    hidden, dropout = list(mlp_cfg.hidden), float(mlp_cfg.dropout)
    ranker = MLPRanker(MLPRanker.build(hidden, dropout), mean, std, hidden, dropout)
    keep = train.subset(np.flatnonzero([train.y[a:b].any() for a, b in zip(train.offsets[:-1], train.offsets[1:])]))
    xs, target, mask = _padded(ranker, keep)
    net = ranker.net
    opt = torch.optim.AdamW(net.parameters(), lr=float(mlp_cfg.lr), weight_decay=float(mlp_cfg.weight_decay))
    best, best_state, bad, history = -1.0, None, 0, []
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(int(mlp_cfg.epochs)):
        net.train()
        for batch in torch.randperm(len(xs), generator=gen).split(int(mlp_cfg.batch_lists)):
            logits = net(xs[batch]).squeeze(-1).masked_fill(~mask[batch], float("-inf"))
            logp = torch.log_softmax(logits, dim=1).masked_fill(~mask[batch], 0.0)
            loss = -(target[batch] * logp).sum(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        score = ndcg_at_k(ranker.score(valid.X), valid, 12) if len(valid.group) else -float(loss)
        history.append(score)
        if score > best:
            best, best_state, bad = score, {k: v.clone() for k, v in net.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= int(mlp_cfg.patience):
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return ranker, {"epochs": len(history), "valid_ndcg@12": best}
