"""Full-ranking evaluation: HR@k, NDCG@k, catalog coverage and long-tail share.

Items are column indices ``0..n_items-1``. One held-out target per user (leave-one-out),
so HR@k equals recall@k. Everything is batched over users so a 22k x 12k score matrix
never has to exist at once: callers hand in a ``score_fn(user_rows) -> (B, n_items)``.

Ties count against the target (a constant scorer gets HR 0, not a lucky rank 1), and
seen items are excluded from the ranking but never the target itself.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

DEFAULT_KS = (5, 10, 20)


# ----------------------------------------------------------------------------- seen lists


class SeenIndex:
    """Seen-item lists as CSR (indptr, indices), so masking a batch is one scatter."""

    def __init__(self, seen: Sequence[Sequence[int]] | "SeenIndex" | None, n_users: int | None = None):
        if isinstance(seen, SeenIndex):
            self.indptr, self.indices = seen.indptr, seen.indices
            return
        if seen is None:
            n = n_users or 0
            self.indptr = np.zeros(n + 1, dtype=np.int64)
            self.indices = np.zeros(0, dtype=np.int64)
            return
        lens = np.fromiter((len(s) for s in seen), dtype=np.int64, count=len(seen))
        self.indptr = np.zeros(len(seen) + 1, dtype=np.int64)
        np.cumsum(lens, out=self.indptr[1:])
        self.indices = (
            np.concatenate([np.asarray(s, dtype=np.int64) for s in seen])
            if len(seen) and self.indptr[-1] > 0
            else np.zeros(0, dtype=np.int64)
        )

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def batch(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row position within batch, item) pairs for the given user rows."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lens = ends - starts
        total = int(lens.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        batch_pos = np.repeat(np.arange(len(rows), dtype=np.int64), lens)
        offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
        items = self.indices[np.repeat(starts, lens) + offs]
        return batch_pos, items


def mask_seen_(scores: torch.Tensor, seen: SeenIndex, rows: np.ndarray, keep: np.ndarray | None = None) -> torch.Tensor:
    """Set seen items to -inf in place; ``keep`` (one item per row) is never masked."""
    bpos, items = seen.batch(rows)
    if len(items) == 0:
        return scores
    if keep is not None:
        ok = items != np.asarray(keep)[bpos]
        bpos, items = bpos[ok], items[ok]
    dev = scores.device
    scores[torch.as_tensor(bpos, device=dev), torch.as_tensor(items, device=dev)] = float("-inf")
    return scores


# ----------------------------------------------------------------------------- ranks -> metrics


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's target; ties with other items count against it."""
    t = scores.gather(1, targets.view(-1, 1))
    ge = (scores >= t).sum(dim=1)
    return (ge - 1).clamp_min(0)


def hr_ndcg_from_ranks(ranks: np.ndarray | torch.Tensor, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR@k and NDCG@k over users, given 0-based target ranks (one target per user)."""
    r = torch.as_tensor(ranks).double().cpu()
    out: dict[str, float] = {}
    n = max(len(r), 1)
    for k in ks:
        hit = r < k
        out[f"HR@{k}"] = float(hit.sum()) / n
        out[f"NDCG@{k}"] = float((hit.double() / torch.log2(r + 2.0)).sum()) / n
    return out


def hr_ndcg_from_topk(topk: np.ndarray, targets: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Same metrics when the caller already has top-k lists (seen items already removed)."""
    topk = np.asarray(topk)
    targets = np.asarray(targets).reshape(-1, 1)
    match = topk == targets
    found = match.any(axis=1)
    ranks = np.where(found, match.argmax(axis=1), np.iinfo(np.int64).max // 2)
    return hr_ndcg_from_ranks(torch.as_tensor(ranks, dtype=torch.float64), ks)


def ndcg_at_rank(rank: int, k: int) -> float:
    """NDCG@k of a single target at 0-based rank (one relevant item, so IDCG = 1)."""
    return 1.0 / math.log2(rank + 2) if rank < k else 0.0


# ----------------------------------------------------------------------------- beyond-accuracy


def catalog_coverage(topk: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one user's top-k."""
    topk = np.asarray(topk)
    valid = topk[topk >= 0]
    return float(np.unique(valid).size) / float(n_items)


def long_tail_share(topk: np.ndarray, long_tail: np.ndarray) -> float:
    """Share of recommended slots filled by long-tail items."""
    topk = np.asarray(topk)
    valid = topk[topk >= 0]
    if valid.size == 0:
        return 0.0
    return float(np.asarray(long_tail, dtype=bool)[valid].mean())


def long_tail_mask(item_counts: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Long tail = every item outside the ``head_share`` most popular items."""
    counts = np.asarray(item_counts)
    n_head = int(round(head_share * len(counts)))
    order = np.argsort(-counts, kind="stable")
    mask = np.ones(len(counts), dtype=bool)
    mask[order[:n_head]] = False
    return mask


# ----------------------------------------------------------------------------- batched driver


def topk_excluding_seen(scores: torch.Tensor, seen: SeenIndex, rows: np.ndarray, k: int) -> torch.Tensor:
    """Top-k item indices per row with seen items removed (masks ``scores`` in place)."""
    mask_seen_(scores, seen, rows)
    return scores.topk(min(k, scores.shape[1]), dim=1).indices


def evaluate_full_ranking(
    score_fn: Callable[[np.ndarray], torch.Tensor | np.ndarray],
    targets: np.ndarray,
    seen: SeenIndex | Sequence[Sequence[int]] | None,
    ks: Iterable[int] = DEFAULT_KS,
    batch_size: int = 1024,
    users: np.ndarray | None = None,
    long_tail: np.ndarray | None = None,
    coverage_k: int | None = None,
) -> dict[str, float]:
    """HR@k / NDCG@k over ``users`` (default all rows of ``targets``), batched.

    ``score_fn(rows)`` returns a (len(rows), n_items) score matrix, numpy or torch on any
    device. With ``coverage_k`` it also reports catalog coverage@k and (given ``long_tail``)
    long-tail share@k of the top-k lists.
    """
    ks = tuple(ks)
    targets = np.asarray(targets, dtype=np.int64)
    seen = SeenIndex(seen, n_users=len(targets))
    rows_all = np.arange(len(targets)) if users is None else np.asarray(users, dtype=np.int64)
    ranks: list[torch.Tensor] = []
    covered: np.ndarray | None = None
    tail_hits, slots = 0, 0
    n_items = None
    for start in range(0, len(rows_all), batch_size):
        rows = rows_all[start : start + batch_size]
        s = score_fn(rows)
        s = torch.as_tensor(s)
        # masking is in place: never write into a matrix the caller may still hold
        s = s.clone() if s.dtype == torch.float32 else s.float()
        n_items = s.shape[1]
        tgt = torch.as_tensor(targets[rows], device=s.device)
        mask_seen_(s, seen, rows, keep=targets[rows])
        ranks.append(target_ranks(s, tgt).cpu())
        if coverage_k:
            top = s.topk(min(coverage_k, n_items), dim=1).indices.cpu().numpy()
            if covered is None:
                covered = np.zeros(n_items, dtype=bool)
            covered[top.ravel()] = True
            if long_tail is not None:
                tail_hits += int(np.asarray(long_tail, dtype=bool)[top].sum())
                slots += top.size
    out = hr_ndcg_from_ranks(torch.cat(ranks) if ranks else torch.zeros(0), ks)
    if coverage_k and covered is not None:
        out[f"coverage@{coverage_k}"] = float(covered.mean())
        if long_tail is not None:
            out[f"long_tail_share@{coverage_k}"] = tail_hits / max(slots, 1)
    out["users"] = float(len(rows_all))
    return out
