"""Two-tower retrieval model: a Transformer user tower over recent items and a feature item tower.

Design choices (the why):

- **Causal training over all positions** (as SASRec): every prefix of a training sequence
  predicts its next item, which gives ~L times more signal per sequence than training only
  the last position, and the last position of the same network serves requests.
- **The user tower reads item-tower vectors** (the same L2-normalised vectors that go to the
  vector index), not a private input embedding. Serving therefore needs only the stored item
  vectors of the recent items, and cold items in a history are understood through content.
- **Whole-ID dropout** in the item tower: with probability ``id_dropout`` an item's ID vector
  is zeroed for a step, so the content / category / graph features alone must place it;
  new SKUs then get usable vectors before they have any interactions.
- **Recency** is the log time gap from each history item to the next event (for the last
  item: to the request time), bucketed: serving knows the request time, so this is no leak.
- **Full softmax by default** (losses.py says why); sampled softmax with log-Q is an option.

Items are 0-based indices ``0..n_items-1`` outside this module; inside, index 0 is padding and
item ``i`` is row ``i + 1`` of the tables.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from recsys.models.two_tower import TwoTowerConfig, gap_buckets
from recsys.train import losses as L
from recsys.train.metrics import DEFAULT_KS, SeenIndex, evaluate_full_ranking

# ----------------------------------------------------------------------------- config & inputs


@dataclass
class ItemFeatures:
    """Per-item side information (row i = item i). Every field but ``n_items`` is optional.

    - ``content``: dense vectors (e.g. 384-d MiniLM of the title/specs);
    - ``tags``: padded multi-valued ids (brand, category-path nodes...), 0 = padding, 1..n_tags;
    - ``categorical``: single-valued ids per field (category id, price band), >= 0;
    - ``numeric``: dense numeric columns (margin...), already scaled;
    - ``neighbors``: padded accessory-graph neighbours as item index + 1 (0 = padding).
    """

    n_items: int
    content: np.ndarray | None = None
    tags: np.ndarray | None = None
    n_tags: int = 0
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    numeric: np.ndarray | None = None
    neighbors: np.ndarray | None = None

    def ids_only(self) -> "ItemFeatures":
        return ItemFeatures(n_items=self.n_items)


def pad_lists(lists: Sequence[Sequence[int]], width: int | None = None, offset: int = 1) -> np.ndarray:
    """Right-pad variable-length id lists into a matrix, adding ``offset`` so 0 means padding."""
    width = width or max((len(x) for x in lists), default=1) or 1
    out = np.zeros((len(lists), width), dtype=np.int64)
    for i, x in enumerate(lists):
        x = np.asarray(x, dtype=np.int64)[:width]
        out[i, : len(x)] = x + offset
    return out


@dataclass
class EvalSet:
    """Users to rank for: their input history, one target each, items excluded from ranking."""

    inputs: list[np.ndarray]
    targets: np.ndarray
    seen: list[np.ndarray] | None = None
    input_ts: list[np.ndarray] | None = None
    target_ts: np.ndarray | None = None
    side: dict[str, np.ndarray] | None = None

    @classmethod
    def validation(cls, split, side=None) -> "EvalSet":
        return cls(split.valid_input, split.valid_target, split.valid_seen, split.valid_input_ts, split.valid_target_ts, side)

    @classmethod
    def test(cls, split, side=None) -> "EvalSet":
        return cls(split.test_input, split.test_target, split.test_seen, split.test_input_ts, split.test_target_ts, side)


# ----------------------------------------------------------------------------- sequences -> arrays


@dataclass
class SequenceArrays:
    """Left-padded (U, L) arrays: inputs as item+1 (0 = pad), targets as item (-1 = none)."""

    inputs: np.ndarray
    gaps: np.ndarray
    targets: np.ndarray | None
    side: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs)


def training_arrays(
    sequences: Sequence[Sequence[int]],
    timestamps: Sequence[Sequence[int]] | None,
    cfg: TwoTowerConfig,
    side: dict[str, np.ndarray] | None = None,
) -> SequenceArrays:
    """Causal next-item pairs from the last ``max_len + 1`` items of each sequence."""
    n, L_ = len(sequences), cfg.max_len
    inp = np.zeros((n, L_), dtype=np.int64)
    tgt = np.full((n, L_), -1, dtype=np.int64)
    gaps = np.zeros((n, L_), dtype=np.int64)
    for u, s in enumerate(sequences):
        s = np.asarray(s, dtype=np.int64)[-(L_ + 1) :]
        if len(s) < 2:
            continue
        m = len(s) - 1
        inp[u, L_ - m :] = s[:-1] + 1
        tgt[u, L_ - m :] = s[1:]
        if timestamps is not None:
            t = np.asarray(timestamps[u], dtype=np.int64)[-(L_ + 1) :]
            gaps[u, L_ - m :] = gap_buckets(np.diff(t), cfg.n_gap_buckets, cfg.gap_unit_seconds)
    keep = (tgt >= 0).any(axis=1)
    side = {k: np.asarray(v)[keep] for k, v in (side or {}).items()}
    return SequenceArrays(inp[keep], gaps[keep], tgt[keep], side)


def inference_arrays(
    histories: Sequence[Sequence[int]],
    cfg: TwoTowerConfig,
    timestamps: Sequence[Sequence[int]] | None = None,
    now: Sequence[int] | np.ndarray | None = None,
    side: dict[str, np.ndarray] | None = None,
) -> SequenceArrays:
    """Left-padded recent histories; the last gap is measured to ``now`` (the request time)."""
    n, L_ = len(histories), cfg.max_len
    inp = np.zeros((n, L_), dtype=np.int64)
    gaps = np.zeros((n, L_), dtype=np.int64)
    for u, s in enumerate(histories):
        s = np.asarray(s, dtype=np.int64)[-L_:]
        m = len(s)
        if m == 0:
            continue
        inp[u, L_ - m :] = s + 1
        if timestamps is not None and now is not None:
            t = np.append(np.asarray(timestamps[u], dtype=np.int64)[-L_:], int(now[u]))
            gaps[u, L_ - m :] = gap_buckets(np.diff(t), cfg.n_gap_buckets, cfg.gap_unit_seconds)
    return SequenceArrays(inp, gaps, None, dict(side or {}))


class _Rows(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _Collate:
    """Gathers rows and trims left padding to the longest sequence of the batch."""

    def __init__(self, arrays: SequenceArrays):
        self.a = arrays

    def __call__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(rows, dtype=np.int64)
        inp = self.a.inputs[idx]
        width = max(int((inp > 0).sum(axis=1).max()), 1)
        out = {"inputs": torch.from_numpy(np.ascontiguousarray(inp[:, -width:])),
               "gaps": torch.from_numpy(np.ascontiguousarray(self.a.gaps[idx][:, -width:]))}
        if self.a.targets is not None:
            out["targets"] = torch.from_numpy(np.ascontiguousarray(self.a.targets[idx][:, -width:]))
        for k, v in self.a.side.items():
            out[k] = torch.from_numpy(np.ascontiguousarray(v[idx]))
        return out


# ----------------------------------------------------------------------------- towers


class ItemTower(nn.Module):
    """ID embedding (+ whole-vector dropout) plus optional feature encoders, summed, then L2-normed.

    ``encode`` takes explicit feature tensors (what ONNX export and cold items use);
    ``forward(ids)`` looks them up in buffers copied from ``ItemFeatures``.
    """

    def __init__(self, feats: ItemFeatures, cfg: TwoTowerConfig):
        super().__init__()
        d, n = cfg.dim, feats.n_items
        self.cfg = cfg
        self.n_items = n
        self.id_emb = nn.Embedding(n + 1, d, padding_idx=0)
        nn.init.normal_(self.id_emb.weight, std=0.02)
        with torch.no_grad():
            self.id_emb.weight[0].zero_()
        f = feats.ids_only() if cfg.id_only else feats

        def table(x, dtype):
            x = torch.tensor(np.asarray(x), dtype=dtype)  # copy: inputs may be read-only (Ray)
            return torch.cat([torch.zeros((1,) + tuple(x.shape[1:]), dtype=dtype), x], dim=0)

        self.content_proj = None
        if f.content is not None:
            self.register_buffer("content", table(f.content, torch.float32), persistent=True)
            self.content_proj = nn.Linear(self.content.shape[1], d)
        self.tag_emb = None
        if f.tags is not None:
            self.register_buffer("tags", table(f.tags, torch.long))
            self.tag_emb = nn.Embedding(max(f.n_tags, int(np.max(f.tags))) + 1, d, padding_idx=0)
            nn.init.normal_(self.tag_emb.weight, std=0.02)
        self.cat_names = sorted(f.categorical)
        self.cat_embs = nn.ModuleList()
        if self.cat_names:
            cats = np.stack([np.asarray(f.categorical[k], dtype=np.int64) for k in self.cat_names], axis=1)
            self.register_buffer("cats", table(cats, torch.long))
            for j in range(cats.shape[1]):
                emb = nn.Embedding(int(cats[:, j].max()) + 1, d)
                nn.init.normal_(emb.weight, std=0.02)
                self.cat_embs.append(emb)
        self.num_proj = None
        if f.numeric is not None:
            num = np.asarray(f.numeric, dtype=np.float32)
            num = num.reshape(len(num), -1)
            self.register_buffer("numeric", table(num, torch.float32))
            self.num_proj = nn.Linear(num.shape[1], d)
        self.nbr_proj = None
        if f.neighbors is not None:
            self.register_buffer("nbrs", table(f.neighbors, torch.long))
            self.nbr_proj = nn.Linear(d, d)
        self.has_features = any(
            m is not None for m in (self.content_proj, self.tag_emb, self.num_proj, self.nbr_proj)
        ) or bool(self.cat_names)
        self.norm = nn.LayerNorm(d) if self.has_features else nn.Identity()

    def feature_names(self) -> list[str]:
        names = ["ids"]
        for name, mod in (("content", self.content_proj), ("tags", self.tag_emb)):
            if mod is not None:
                names.append(name)
        if self.cat_names:
            names.append("cats")
        if self.num_proj is not None:
            names.append("numeric")
        if self.nbr_proj is not None:
            names.append("nbrs")
        return names

    def lookup(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature tensors of internal ids (item + 1)."""
        out = {"ids": ids}
        for name in self.feature_names()[1:]:
            out[name] = getattr(self, name)[ids]
        return out

    def encode(self, ids, content=None, tags=None, cats=None, numeric=None, nbrs=None, normalize=True):
        h = self.id_emb(ids)
        if self.training and self.cfg.id_dropout > 0 and self.has_features:
            keep = torch.rand(h.shape[:-1] + (1,), device=h.device) >= self.cfg.id_dropout
            h = h * keep
        if self.content_proj is not None:
            h = h + self.content_proj(content)
        if self.tag_emb is not None:
            tv = self.tag_emb(tags)
            cnt = (tags > 0).sum(-1, keepdim=True).clamp_min(1)
            h = h + tv.sum(-2) / cnt
        for j, emb in enumerate(self.cat_embs):
            h = h + emb(cats[..., j])
        if self.num_proj is not None:
            h = h + self.num_proj(numeric)
        if self.nbr_proj is not None:
            nv = self.id_emb(nbrs)
            cnt = (nbrs > 0).sum(-1, keepdim=True).clamp_min(1)
            h = h + self.nbr_proj(nv.sum(-2) / cnt)
        h = self.norm(h)
        if normalize and self.cfg.normalize:
            h = F.normalize(h, dim=-1, eps=1e-6)
        return h

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Vectors of internal ids; id 0 (padding) gives the zero vector."""
        return self.encode(**self.lookup(ids)) * (ids > 0).unsqueeze(-1).to(torch.float32)

    def all_vectors(self) -> torch.Tensor:
        """(n_items + 1, d): row 0 is the zero padding vector."""
        ids = torch.arange(self.n_items + 1, device=self.id_emb.weight.device)
        return self(ids)


class _Block(nn.Module):
    """SASRec's block, written with plain ops so it exports to ONNX: the query reads the layer-normed
    stream and the residual continues from it, keys and values read the stream as it is, then a
    layer norm and the FFN with its residual. The usual pre-LN block (a residual around LN'd
    sublayers) learned about half as fast on Beauty (docs/benchmarks-beauty.md, ablations)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        assert d % heads == 0, "dim must be divisible by n_heads"
        self.h, self.dh, self.scale = heads, d // heads, 1.0 / math.sqrt(d // heads)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, l, d = x.shape
        query = self.ln1(x)
        q = self.q(query).view(b, l, self.h, self.dh).transpose(1, 2)
        k, v = self.kv(x).view(b, l, 2, self.h, self.dh).permute(2, 0, 3, 1, 4).unbind(0)
        att = self.drop(torch.softmax((q @ k.transpose(-1, -2)) * self.scale + bias, dim=-1))
        x = self.ln2(query + self.proj((att @ v).transpose(1, 2).reshape(b, l, d)))
        return x + self.drop(self.ff(x))


class UserTower(nn.Module):
    """Transformer over the last ``max_len`` item vectors + position-from-end + recency, + side features.

    The item vectors enter scaled by sqrt(dim) (unit scale per coordinate for the L2-normed vectors),
    with no projection, and the last position's output is the user vector with no output layer: with
    a projection in and out the item's own identity was a small part of the stream and learning was
    slow (docs/benchmarks-beauty.md, ablations)."""

    def __init__(self, cfg: TwoTowerConfig):
        super().__init__()
        d = cfg.dim
        self.cfg = cfg
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.gap_emb = nn.Embedding(cfg.n_gap_buckets, d) if cfg.use_recency else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(d)
        self.device_emb = nn.Embedding(cfg.n_devices, d) if cfg.n_devices else None
        self.geo_emb = nn.Embedding(cfg.n_geos, d) if cfg.n_geos else None
        self.aff_proj = nn.Linear(cfg.affinity_dim, d) if cfg.affinity_dim else None
        for emb in (self.pos_emb, self.gap_emb, self.device_emb, self.geo_emb):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)

    def side_names(self) -> list[str]:
        return [n for n, m in (("device", self.device_emb), ("geo", self.geo_emb), ("affinity", self.aff_proj)) if m is not None]

    def forward(self, hist_vecs, valid, gaps=None, device=None, geo=None, affinity=None, all_positions=False):
        """hist_vecs (B, L, d) left-padded, valid (B, L) bool -> (B, d) or (B, L, d) when all_positions."""
        b, l, _ = hist_vecs.shape
        pos = (l - 1) - torch.arange(l, device=hist_vecs.device)
        x = hist_vecs * math.sqrt(self.cfg.dim) + self.pos_emb(pos.clamp(max=self.cfg.max_len - 1)).unsqueeze(0)
        if self.gap_emb is not None and gaps is not None:
            x = x + self.gap_emb(gaps)
        x = self.drop(x) * valid.unsqueeze(-1).to(x.dtype)
        ar = torch.arange(l, device=x.device)
        causal = ar.view(1, l) <= ar.view(l, 1)
        diag = ar.view(1, l) == ar.view(l, 1)  # every position sees itself: no all-masked rows
        allowed = causal.unsqueeze(0) & (valid.unsqueeze(1) | diag.unsqueeze(0))
        bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, -1e9).unsqueeze(1)
        for blk in self.blocks:
            x = blk(x, bias)
        x = self.ln(x)
        if not all_positions:
            x = x[:, -1]
        side = 0
        if self.device_emb is not None and device is not None:
            side = side + self.device_emb(device)
        if self.geo_emb is not None and geo is not None:
            side = side + self.geo_emb(geo)
        if self.aff_proj is not None and affinity is not None:
            side = side + self.aff_proj(affinity.float())
        if not isinstance(side, int) and all_positions:
            side = side.unsqueeze(1)
        u = x + side
        return F.normalize(u, dim=-1, eps=1e-6) if self.cfg.normalize else u


class TwoTowerModel(nn.Module):
    """Both towers and the temperature; ``forward(batch)`` returns the training loss."""

    def __init__(self, cfg: TwoTowerConfig, feats: ItemFeatures, target_counts: np.ndarray | None = None):
        super().__init__()
        self.cfg = cfg
        self.item_tower = ItemTower(feats, cfg)
        self.user_tower = UserTower(cfg)
        self.log_temp = nn.Parameter(
            torch.tensor(math.log(cfg.temperature)), requires_grad=cfg.learn_temperature and cfg.normalize
        )
        counts = torch.zeros(feats.n_items) if target_counts is None else torch.as_tensor(target_counts, dtype=torch.float32)
        self.register_buffer("log_q", L.log_q_from_counts(counts), persistent=False)

    @property
    def n_items(self) -> int:
        return self.item_tower.n_items

    def temperature(self) -> torch.Tensor:
        return self.log_temp.exp().clamp(min=1e-3) if self.cfg.normalize else torch.ones((), device=self.log_temp.device)

    def _side(self, batch: dict) -> dict:
        return {k: batch[k] for k in self.user_tower.side_names() if k in batch}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch["inputs"], batch["targets"]
        valid_in = inputs > 0
        has_t = targets >= 0
        if self.cfg.loss == "full":
            table = self.item_tower.all_vectors()
            hist = table[inputs]
            u = self.user_tower(hist, valid_in, batch.get("gaps"), all_positions=True, **self._side(batch))
            return L.full_softmax_loss(u[has_t], table[1:], targets[has_t], self.temperature())
        if self.cfg.loss == "sampled":
            tgt_ids = (targets + 1).clamp_min(0)
            uniq, inv = torch.unique(torch.cat([inputs.reshape(-1), tgt_ids.reshape(-1)]), return_inverse=True)
            vecs = self.item_tower(uniq)
            n = inputs.numel()
            hist = vecs[inv[:n]].view(*inputs.shape, -1)
            pos = vecs[inv[n:]].view(*targets.shape, -1)
            u = self.user_tower(hist, valid_in, batch.get("gaps"), all_positions=True, **self._side(batch))
            log_q = self.log_q if self.cfg.logq_correction else torch.zeros_like(self.log_q)
            return L.sampled_softmax_loss(u[has_t], pos[has_t], targets[has_t], log_q, self.temperature())
        raise ValueError(f"unknown loss {self.cfg.loss!r}")

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """(n_items, d) in eval mode."""
        was = self.training
        self.eval()
        v = self.item_tower.all_vectors()[1:]
        self.train(was)
        return v

    @torch.no_grad()
    def user_vectors(self, arrays: SequenceArrays, rows: np.ndarray, item_table: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors of ``rows`` of inference arrays (eval mode; pass a cached item table)."""
        dev = self.log_temp.device
        if item_table is None:
            item_table = torch.cat([torch.zeros(1, self.cfg.dim, device=dev), self.item_vectors()])
        batch = {k: v.to(dev) for k, v in _Collate(arrays)(list(rows)).items()}
        inputs = batch["inputs"]
        was = self.training
        self.eval()
        u = self.user_tower(item_table[inputs], inputs > 0, batch.get("gaps"), **self._side(batch))
        self.train(was)
        return u


# ----------------------------------------------------------------------------- epoch / eval / fit


def set_seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class LengthBucketBatches(torch.utils.data.Sampler):
    """Shuffled batches of similar-length sequences: shuffle, sort within windows of
    ``window`` batches by length, shuffle the batch order. Most histories are short, so this
    removes most padding (and most of the CPU time) without a fixed length order."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, window: int = 50):
        self.lengths, self.bs, self.seed, self.window = np.asarray(lengths), batch_size, seed, window

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(len(self.lengths))
        out = []
        span = self.bs * self.window
        for s in range(0, len(perm), span):
            chunk = perm[s : s + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            out.extend(chunk[i : i + self.bs] for i in range(0, len(chunk), self.bs))
        return [out[i] for i in rng.permutation(len(out))]

    def __iter__(self):
        return iter([b.tolist() for b in self._batches()])

    def __len__(self) -> int:
        return (len(self.lengths) + self.bs - 1) // self.bs


def make_loader(
    arrays: SequenceArrays, cfg: TwoTowerConfig, epoch_seed: int, bucketed: bool = True
) -> torch.utils.data.DataLoader:
    """Deterministic loader for one epoch; ``bucketed=False`` gives a plain shuffled loader
    (what ``ray.train.torch.prepare_data_loader`` can shard across workers)."""
    if bucketed:
        lengths = (arrays.inputs > 0).sum(axis=1)
        sampler = LengthBucketBatches(lengths, cfg.batch_size, epoch_seed)
        return torch.utils.data.DataLoader(_Rows(len(arrays)), batch_sampler=sampler, collate_fn=_Collate(arrays), num_workers=0)
    g = torch.Generator()
    g.manual_seed(epoch_seed)
    return torch.utils.data.DataLoader(
        _Rows(len(arrays)), batch_size=cfg.batch_size, shuffle=True, generator=g, collate_fn=_Collate(arrays), num_workers=0
    )


def train_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, cfg: TwoTowerConfig, device) -> float:
    """One pass over the loader; returns the mean loss. Works on a plain or DDP-wrapped model."""
    model.train()
    total, n = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        loss = model(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        total += float(loss.detach())
        n += 1
    return total / max(n, 1)


def evaluate_two_tower(
    model: TwoTowerModel,
    data: EvalSet,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int | None = None,
    users: np.ndarray | None = None,
    **kw,
) -> dict[str, float]:
    """Full-ranking HR/NDCG of ``model`` on an ``EvalSet`` (seen items excluded)."""
    cfg = model.cfg
    arrays = inference_arrays(data.inputs, cfg, data.input_ts, data.target_ts, data.side)
    dev = model.log_temp.device
    items = model.item_vectors()
    table = torch.cat([torch.zeros(1, cfg.dim, device=dev), items])
    seen = SeenIndex(data.seen if data.seen is not None else data.inputs)

    def score(rows: np.ndarray) -> torch.Tensor:
        return model.user_vectors(arrays, rows, table) @ items.T

    if users is None:  # similar lengths per batch -> little padding; the means do not depend on order
        users = np.argsort((arrays.inputs > 0).sum(axis=1), kind="stable")
    return evaluate_full_ranking(score, data.targets, seen, ks, batch_size or cfg.eval_batch_size, users=users, **kw)


def target_counts(sequences: Sequence[Sequence[int]], n_items: int) -> np.ndarray:
    s = [np.asarray(x, dtype=np.int64)[1:] for x in sequences if len(x) > 1]
    return np.bincount(np.concatenate(s), minlength=n_items) if s else np.zeros(n_items)


def make_optimizer(model: nn.Module, cfg: TwoTowerConfig) -> torch.optim.Optimizer:
    """Adam with SASRec's betas (0.9, 0.98): part of what closed the gap to it (docs/benchmarks-beauty.md)."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.98),
                            weight_decay=cfg.weight_decay)


def build_model(cfg: TwoTowerConfig, feats: ItemFeatures, train_sequences=None) -> TwoTowerModel:
    counts = target_counts(train_sequences, feats.n_items) if train_sequences is not None else None
    return TwoTowerModel(cfg, feats, counts)


def fit_two_tower(
    train_sequences: Sequence[Sequence[int]],
    item_features: ItemFeatures | int,
    config: TwoTowerConfig | dict | None = None,
    valid: EvalSet | None = None,
    train_timestamps: Sequence[Sequence[int]] | None = None,
    train_side: dict[str, np.ndarray] | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[TwoTowerModel, list[dict]]:
    """Train with early stopping on validation NDCG@k; returns the best model and per-epoch history.

    Deterministic on CPU for a fixed ``config.seed`` (single worker, no data-loader workers).
    """
    cfg = config if isinstance(config, TwoTowerConfig) else TwoTowerConfig.from_dict(config or {})
    feats = item_features if isinstance(item_features, ItemFeatures) else ItemFeatures(int(item_features))
    set_seed(cfg.seed)
    device = torch.device(cfg.device)
    arrays = training_arrays(train_sequences, train_timestamps if cfg.use_recency else None, cfg, train_side)
    model = build_model(cfg, feats, train_sequences).to(device)
    opt = make_optimizer(model, cfg)
    history: list[dict] = []
    best, best_state, bad = -1.0, None, 0
    key = f"NDCG@{cfg.eval_k}"
    t_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        loss = train_epoch(model, make_loader(arrays, cfg, cfg.seed * 100003 + epoch), opt, cfg, device)
        rec = {"epoch": epoch, "loss": loss, "temperature": float(model.temperature().detach())}
        if valid is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            m = evaluate_two_tower(model, valid, ks=(cfg.eval_k,))
            rec[f"valid_{key}"] = m[key]
            rec[f"valid_HR@{cfg.eval_k}"] = m[f"HR@{cfg.eval_k}"]
            if m[key] > best:
                best, bad = m[key], 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        rec["seconds"] = time.perf_counter() - t0
        history.append(rec)
        if log:
            v = f" valid {key} {rec[f'valid_{key}']:.4f}" if f"valid_{key}" in rec else ""
            log(f"epoch {epoch:3d} loss {loss:.4f}{v} temp {rec['temperature']:.3f} {rec['seconds']:.1f}s")
        if valid is not None and bad >= cfg.patience:
            break
        if cfg.max_seconds and time.perf_counter() - t_start > cfg.max_seconds:
            if log:
                log(f"stopping: time budget of {cfg.max_seconds:.0f}s spent")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


# ----------------------------------------------------------------------------- recommender facade


class TwoTowerRecommender:
    """fit / recommend / similar_items over a trained ``TwoTowerModel``."""

    def __init__(self, config: TwoTowerConfig | dict | None = None):
        self.config = config if isinstance(config, TwoTowerConfig) else TwoTowerConfig.from_dict(config or {})
        self.model: TwoTowerModel | None = None
        self.history: list[dict] = []

    def fit(self, train_sequences, item_features, valid=None, **kw) -> "TwoTowerRecommender":
        self.model, self.history = fit_two_tower(train_sequences, item_features, self.config, valid=valid, **kw)
        return self

    def recommend(self, histories, k: int = 10, exclude_seen: bool = True, timestamps=None, now=None, side=None):
        """Top-k (items, scores) for each history (item lists, most recent last)."""
        m = self.model
        arrays = inference_arrays(histories, m.cfg, timestamps, now, side)
        items = m.item_vectors()
        scores = m.user_vectors(arrays, np.arange(len(histories))) @ items.T
        if exclude_seen:
            from recsys.train.metrics import mask_seen_

            mask_seen_(scores, SeenIndex(histories), np.arange(len(histories)))
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        return top.indices.cpu().numpy(), top.values.cpu().numpy()

    def similar_items(self, items, k: int = 10):
        v = self.model.item_vectors()
        q = v[torch.as_tensor(np.asarray(items, dtype=np.int64), device=v.device)]
        s = q @ v.T
        s[torch.arange(len(q)), torch.as_tensor(np.asarray(items, dtype=np.int64))] = float("-inf")
        top = s.topk(min(k, v.shape[0] - 1), dim=1)
        return top.indices.cpu().numpy(), top.values.cpu().numpy()


# ----------------------------------------------------------------------------- export


def _onnx_export(module, args, path, inputs, outputs, dynamic_axes, opset) -> None:
    import warnings

    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, args, path, input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)


class _ItemTowerExport(nn.Module):
    def __init__(self, tower: ItemTower):
        super().__init__()
        self.tower = tower
        self.names = tower.feature_names()

    def forward(self, *args):
        return self.tower.encode(**dict(zip(self.names, args)))


def item_tower_inputs(model: TwoTowerModel, items: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Feature arrays for items (0-based), the way the exported item tower takes them."""
    tower = model.item_tower
    items = np.arange(tower.n_items) if items is None else np.asarray(items, dtype=np.int64)
    ids = torch.as_tensor(items + 1, device=tower.id_emb.weight.device)
    return {k: v.cpu().numpy() for k, v in tower.lookup(ids).items()}


def export_item_tower_onnx(model: TwoTowerModel, path: str, opset: int = 17) -> list[str]:
    """Item tower -> ONNX with a dynamic batch axis; returns the input names.

    To embed a cold item, feed ``ids = 0`` with its features: the ID part is then zero,
    exactly as whole-ID dropout trained it.
    """
    tower = copy.deepcopy(model.item_tower).cpu().eval()
    wrap = _ItemTowerExport(tower).eval()
    sample = item_tower_inputs(model, np.arange(min(4, tower.n_items)))
    args = tuple(torch.as_tensor(sample[n]) for n in wrap.names)
    dyn = {n: {0: "batch"} for n in wrap.names}
    dyn["vectors"] = {0: "batch"}
    _onnx_export(wrap, args, path, wrap.names, ["vectors"], dyn, opset)
    return wrap.names


class _UserTowerExport(nn.Module):
    def __init__(self, tower: UserTower):
        super().__init__()
        self.tower = tower
        self.side = tower.side_names()

    def forward(self, hist_vecs, valid, gaps, *side):
        return self.tower(hist_vecs, valid > 0, gaps, **dict(zip(self.side, side)))


def user_tower_sample(model: TwoTowerModel, batch: int = 2) -> dict[str, np.ndarray]:
    """A sample of the user tower's ONNX inputs: left-padded item vectors, valid flags, gap buckets."""
    cfg = model.cfg
    rng = np.random.default_rng(0)
    v = model.item_vectors().cpu().numpy()
    ids = rng.integers(0, model.n_items, size=(batch, cfg.max_len))
    valid = np.ones((batch, cfg.max_len), dtype=np.int64)
    valid[:, : cfg.max_len // 2] = 0
    valid[0, :] = 1
    out = {
        "hist_vecs": (v[ids] * valid[..., None]).astype(np.float32),
        "valid": valid,
        "gaps": rng.integers(0, cfg.n_gap_buckets, size=(batch, cfg.max_len)) * valid,
    }
    for name in model.user_tower.side_names():
        if name == "affinity":
            out[name] = rng.random((batch, cfg.affinity_dim), dtype=np.float32)
        else:
            out[name] = rng.integers(0, cfg.n_devices if name == "device" else cfg.n_geos, size=batch)
    return out


def export_user_tower_onnx(model: TwoTowerModel, path: str, opset: int = 17) -> list[str]:
    """User tower -> ONNX (dynamic batch, fixed ``max_len`` left-padded). Inputs: hist_vecs
    (B, L, d) item-tower vectors, valid (B, L) int 0/1, gaps (B, L) bucket ids, then side features."""
    tower = copy.deepcopy(model.user_tower).cpu().eval()
    wrap = _UserTowerExport(tower).eval()
    sample = user_tower_sample(model)
    names = ["hist_vecs", "valid", "gaps"] + wrap.side
    args = tuple(torch.as_tensor(sample[n]) for n in names)
    dyn = {n: {0: "batch"} for n in names}
    dyn["user_vector"] = {0: "batch"}
    _onnx_export(wrap, args, path, names, ["user_vector"], dyn, opset)
    return names


def onnx_parity(model_or_module: nn.Module, path: str, inputs: dict[str, np.ndarray]) -> float:
    """Max |onnxruntime - torch| over the given inputs (CPU)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(None, {n: inputs[n] for n in names})[0]
    m = copy.deepcopy(model_or_module).cpu().eval()
    with torch.no_grad():
        if isinstance(m, TwoTowerModel):
            if names[0] == "ids":
                ref = _ItemTowerExport(m.item_tower)(*(torch.as_tensor(inputs[n]) for n in names))
            else:
                ref = _UserTowerExport(m.user_tower)(*(torch.as_tensor(inputs[n]) for n in names))
        else:
            ref = m(*(torch.as_tensor(inputs[n]) for n in names))
    return float(np.abs(got - ref.numpy()).max())


def check_item_tower_parity(model: TwoTowerModel, path: str, items: np.ndarray | None = None) -> float:
    return onnx_parity(model, path, item_tower_inputs(model, items))


def check_user_tower_parity(model: TwoTowerModel, path: str) -> float:
    return onnx_parity(model, path, user_tower_sample(model))
