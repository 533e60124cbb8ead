"""Metrics and splits against hand-computed cases."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.train.metrics import (
    SeenIndex,
    catalog_coverage,
    evaluate_full_ranking,
    hr_ndcg_from_ranks,
    hr_ndcg_from_topk,
    long_tail_mask,
    long_tail_share,
    target_ranks,
)
from recsys.train.splits import leave_one_out, time_holdout


def test_rank_one_gives_ndcg_one_and_rank_three_gives_inverse_log():
    scores = torch.tensor([[0.9, 0.1, 0.2, 0.3], [0.9, 0.8, 0.7, 0.1]])
    ranks = target_ranks(scores, torch.tensor([0, 2]))
    assert ranks.tolist() == [0, 2]
    m = hr_ndcg_from_ranks(ranks, ks=(1, 3, 5))
    assert m["HR@1"] == pytest.approx(0.5)
    assert m["NDCG@1"] == pytest.approx(0.5)
    assert m["HR@3"] == pytest.approx(1.0)
    assert m["NDCG@3"] == pytest.approx((1.0 + 1.0 / math.log2(4)) / 2)


def test_seen_items_are_excluded_and_change_the_rank():
    scores = np.array([[0.9, 0.8, 0.7, 0.1]], dtype=np.float32)
    target = np.array([2])
    no_excl = evaluate_full_ranking(lambda r: scores[r], target, None, ks=(1, 3))
    assert no_excl["NDCG@3"] == pytest.approx(1 / math.log2(4))
    assert no_excl["HR@1"] == 0.0
    excl = evaluate_full_ranking(lambda r: scores[r], target, [[0, 1]], ks=(1, 3))
    assert excl["HR@1"] == 1.0 and excl["NDCG@3"] == 1.0
    # the caller's matrix is not modified by the masking
    assert np.isfinite(scores).all()


def test_target_in_seen_list_is_never_masked():
    scores = np.array([[0.1, 0.9]], dtype=np.float32)
    m = evaluate_full_ranking(lambda r: scores[r], np.array([1]), [[1]], ks=(1,))
    assert m["HR@1"] == 1.0


def test_ties_count_against_the_target():
    scores = torch.zeros(1, 5)
    assert target_ranks(scores, torch.tensor([3])).item() == 4


def test_batched_equals_unbatched():
    rng = np.random.default_rng(0)
    scores = rng.random((37, 50)).astype(np.float32)
    targets = rng.integers(0, 50, 37)
    seen = [rng.choice(50, rng.integers(0, 6), replace=False) for _ in range(37)]
    a = evaluate_full_ranking(lambda r: scores[r], targets, seen, batch_size=5)
    b = evaluate_full_ranking(lambda r: scores[r], targets, seen, batch_size=1000)
    assert a == b
    # order of users does not matter
    c = evaluate_full_ranking(lambda r: scores[r], targets, seen, users=np.arange(37)[::-1], batch_size=7)
    assert all(a[k] == pytest.approx(c[k]) for k in a)


def test_topk_variant_matches_ranks():
    topk = np.array([[3, 1, 2], [0, 1, 2], [5, 6, 7]])
    m = hr_ndcg_from_topk(topk, np.array([3, 2, 9]), ks=(1, 3))
    assert m["HR@1"] == pytest.approx(1 / 3)
    assert m["HR@3"] == pytest.approx(2 / 3)
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)


def test_coverage_and_long_tail():
    counts = np.array([100, 50, 10, 5, 1, 0, 0, 0, 0, 0])
    tail = long_tail_mask(counts, head_share=0.2)
    assert tail.tolist() == [False, False] + [True] * 8
    topk = np.array([[0, 1], [0, 4]])
    assert catalog_coverage(topk, 10) == pytest.approx(0.3)
    assert long_tail_share(topk, tail) == pytest.approx(0.25)
    scores = np.tile(np.array([[9, 8, 1, 1, 7, 0, 0, 0, 0, 0]], dtype=np.float32), (2, 1))
    m = evaluate_full_ranking(lambda r: scores[r], np.array([0, 4]), [[], [0]], ks=(2,), coverage_k=2, long_tail=tail)
    assert m["coverage@2"] == pytest.approx(0.3)
    assert m["long_tail_share@2"] == pytest.approx(0.25)


def test_seen_index_batch():
    s = SeenIndex([[1, 2], [], [3]])
    pos, items = s.batch(np.array([2, 0]))
    assert pos.tolist() == [0, 1, 1] and items.tolist() == [3, 1, 2]


def test_leave_one_out_on_a_toy_sequence():
    seqs = [[10, 11, 12, 13, 14, 15], [1, 2, 3]]
    ts = [[1, 2, 3, 4, 5, 6], [7, 8, 9]]
    sp = leave_one_out(seqs, ts, max_len=3)
    assert sp.train[0].tolist() == [10, 11, 12, 13]
    assert sp.valid_input[0].tolist() == [11, 12, 13]  # truncated to max_len
    assert sp.valid_target.tolist() == [14, 2]
    assert sp.test_input[0].tolist() == [12, 13, 14]
    assert sp.test_seen[0].tolist() == [10, 11, 12, 13, 14]  # exclusion uses the whole history
    assert sp.test_target.tolist() == [15, 3]
    assert sp.train[1].tolist() == [1]
    assert sp.test_target_ts.tolist() == [6, 9] and sp.valid_target_ts.tolist() == [5, 8]
    assert sp.test_input_ts[0].tolist() == [3, 4, 5]
    with pytest.raises(ValueError):
        leave_one_out([[1, 2]])


def test_time_holdout():
    ev = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c"],
            "sku": ["x", "y", "z", "x", "w", "q"],
            "ts": [1, 5, 9, 2, 7, 8],
        }
    )
    h = time_holdout(ev, cutoff=5)
    assert sorted(h.train[["user_id", "sku"]].itertuples(index=False, name=None)) == [("a", "x"), ("b", "x")]
    assert sorted(h.targets[["user_id", "sku"]].itertuples(index=False, name=None)) == [("a", "y"), ("b", "w")]
    assert h.train["ts"].max() < h.targets["ts"].min()
    h2 = time_holdout(ev, cutoff=5, require_history=False)
    assert set(h2.targets["user_id"]) == {"a", "b", "c"}
