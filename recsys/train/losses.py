"""Retrieval losses for the two-tower model.

Full softmax scores every catalog item for every training position: on a ~12k-item catalog
it is affordable and it is what separates the strong published Beauty numbers from the
one-negative SASRec row. Sampled softmax (in-batch negatives with the log-Q correction of
Yi et al., RecSys 2019) is the fallback for catalogs too large to score at every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def full_softmax_loss(
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    targets: torch.Tensor,
    temperature: torch.Tensor | float,
    chunk: int = 4096,
) -> torch.Tensor:
    """Cross-entropy of each target against the whole catalog.

    user_vecs (M, d), item_vecs (N, d), targets (M,) in 0..N-1. Rows are processed in chunks
    so M x N logits never exceed ``chunk`` x N at once.
    """
    m = user_vecs.shape[0]
    user_vecs = user_vecs / temperature  # scale the (M, d) side, not the (M, N) logits
    if m <= chunk:
        return F.cross_entropy(user_vecs @ item_vecs.T, targets)
    total = user_vecs.new_zeros(())
    for s in range(0, m, chunk):
        logits = user_vecs[s : s + chunk] @ item_vecs.T
        total = total + F.cross_entropy(logits, targets[s : s + chunk], reduction="sum")
    return total / m


def sampled_softmax_loss(
    user_vecs: torch.Tensor,
    pos_vecs: torch.Tensor,
    targets: torch.Tensor,
    log_q: torch.Tensor,
    temperature: torch.Tensor | float,
) -> torch.Tensor:
    """In-batch softmax: the other rows' targets are the negatives.

    ``log_q`` (N,) is the log sampling probability of each item (its share of training
    positions); subtracting it from the logits removes the popularity bias of in-batch
    sampling. Accidental hits (another row with the same target) are masked out.
    """
    logits = (user_vecs / temperature) @ pos_vecs.T
    logits = logits - log_q[targets].view(1, -1)
    same = targets.view(-1, 1) == targets.view(1, -1)
    eye = torch.eye(len(targets), dtype=torch.bool, device=targets.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    labels = torch.arange(len(targets), device=targets.device)
    return F.cross_entropy(logits, labels)


def log_q_from_counts(counts: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    """log P(item is a target in a batch), from training-target counts (add-``smoothing``)."""
    c = counts.double() + smoothing
    return torch.log(c / c.sum()).float()
