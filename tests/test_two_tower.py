"""Two-tower: learns a toy sequence task, is deterministic, exports to ONNX with parity."""

import numpy as np
import pytest
import torch

from recsys.train.metrics import evaluate_full_ranking
from recsys.train.popularity import PopularityRecommender, interaction_matrix
from recsys.train.splits import leave_one_out
from recsys.models.two_tower import TwoTowerConfig
from recsys.train.two_tower import (
    EvalSet,
    ItemFeatures,
    TwoTowerRecommender,
    check_item_tower_parity,
    check_user_tower_parity,
    evaluate_two_tower,
    export_item_tower_onnx,
    export_user_tower_onnx,
    fit_two_tower,
    item_tower_inputs,
    pad_lists,
)

N_ITEMS = 40


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def toy_sequences(n_users=300, seed=0):
    """Next item is prev + 1 (80%) or prev + 7 (20%): learnable from order, invisible to popularity."""
    rng = np.random.default_rng(seed)
    seqs, ts = [], []
    for _ in range(n_users):
        s = [int(rng.integers(N_ITEMS))]
        for _ in range(int(rng.integers(5, 12)) - 1):
            s.append((s[-1] + (1 if rng.random() < 0.8 else 7)) % N_ITEMS)
        seqs.append(s)
        ts.append(np.cumsum(rng.integers(60, 86400, len(s))).tolist())
    return seqs, ts


def toy_features():
    rng = np.random.default_rng(1)
    return ItemFeatures(
        n_items=N_ITEMS,
        content=rng.normal(size=(N_ITEMS, 12)).astype(np.float32),
        tags=pad_lists([[i % 5, 5 + i % 3] for i in range(N_ITEMS)], width=3),
        n_tags=8,
        categorical={"category": np.arange(N_ITEMS) % 4, "price_band": np.arange(N_ITEMS) % 3},
        numeric=rng.random((N_ITEMS, 2)).astype(np.float32),
        neighbors=pad_lists([[(i + 1) % N_ITEMS, (i + 2) % N_ITEMS] for i in range(N_ITEMS)]),
    )


SMALL = dict(dim=32, max_len=10, n_layers=1, n_heads=2, dropout=0.1, batch_size=64, epochs=12, patience=4)


def test_sasrec_style_learns_and_beats_popularity():
    seqs, _ = toy_sequences()
    sp = leave_one_out(seqs, max_len=10)
    cfg = TwoTowerConfig(**SMALL, id_only=True, use_recency=False)
    model, hist = fit_two_tower(sp.train, N_ITEMS, cfg, valid=EvalSet.validation(sp), log=None)
    m = evaluate_two_tower(model, EvalSet.test(sp), ks=(10,))
    pop = PopularityRecommender().fit(interaction_matrix(sp.train_plus_valid(), N_ITEMS))
    pm = evaluate_full_ranking(pop.score, sp.test_target, sp.test_seen, ks=(10,))
    assert m["NDCG@10"] > 0.5, m
    assert m["NDCG@10"] > 3 * pm["NDCG@10"]
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert {"epoch", "loss", "valid_NDCG@10", "seconds"} <= set(hist[0])


def test_full_featured_two_tower_with_sampled_softmax_and_side_features():
    seqs, ts = toy_sequences()
    sp = leave_one_out(seqs, ts, max_len=10)
    rng = np.random.default_rng(2)
    side = {"device": rng.integers(0, 3, len(seqs)), "geo": rng.integers(0, 4, len(seqs)),
            "affinity": rng.random((len(seqs), 5)).astype(np.float32)}
    cfg = TwoTowerConfig(**SMALL, loss="sampled", n_devices=3, n_geos=4, affinity_dim=5, gap_unit_seconds=3600)
    model, _ = fit_two_tower(sp.train, toy_features(), cfg, valid=EvalSet.validation(sp, side),
                             train_timestamps=sp.train_ts, train_side=side, log=None)
    m = evaluate_two_tower(model, EvalSet.test(sp, side), ks=(10,))
    assert m["NDCG@10"] > 0.3, m
    v = model.item_vectors()
    assert v.shape == (N_ITEMS, 32)
    assert torch.allclose(v.norm(dim=1), torch.ones(N_ITEMS), atol=1e-4)


def test_fixed_seed_gives_identical_history():
    seqs, ts = toy_sequences(120)
    sp = leave_one_out(seqs, ts, max_len=10)
    cfg = TwoTowerConfig(**{**SMALL, "epochs": 3})
    runs = [fit_two_tower(sp.train, toy_features(), cfg, valid=EvalSet.validation(sp), train_timestamps=sp.train_ts, log=None)[1]
            for _ in range(2)]
    assert [h["loss"] for h in runs[0]] == [h["loss"] for h in runs[1]]
    assert [h["valid_NDCG@10"] for h in runs[0]] == [h["valid_NDCG@10"] for h in runs[1]]


def test_onnx_exports_match_torch(tmp_path):
    seqs, ts = toy_sequences(80)
    sp = leave_one_out(seqs, ts, max_len=10)
    cfg = TwoTowerConfig(**{**SMALL, "epochs": 1}, n_devices=2, affinity_dim=3)
    model, _ = fit_two_tower(sp.train, toy_features(), cfg, train_timestamps=sp.train_ts, log=None)
    item_path = str(tmp_path / "item.onnx")
    names = export_item_tower_onnx(model, item_path)
    assert names == ["ids", "content", "tags", "cats", "numeric", "nbrs"]
    assert check_item_tower_parity(model, item_path) < 1e-4
    user_path = str(tmp_path / "user.onnx")
    export_user_tower_onnx(model, user_path)
    assert check_user_tower_parity(model, user_path) < 1e-4

    # a cold item (id 0) still gets a unit vector from its content alone
    import onnxruntime as ort

    feats = item_tower_inputs(model, np.array([3]))
    feats["ids"] = np.zeros(1, dtype=np.int64)
    out = ort.InferenceSession(item_path, providers=["CPUExecutionProvider"]).run(None, feats)[0]
    assert abs(np.linalg.norm(out[0]) - 1) < 1e-4


def test_recommender_facade():
    seqs, _ = toy_sequences(200)
    sp = leave_one_out(seqs, max_len=10)
    rec = TwoTowerRecommender(dict(SMALL, id_only=True, use_recency=False)).fit(sp.train, N_ITEMS, valid=EvalSet.validation(sp), log=None)
    ids, scores = rec.recommend([[5, 6, 7]], k=5)
    assert ids.shape == (1, 5) and not set(ids[0]) & {5, 6, 7}
    assert ids[0, 0] == 8
    assert (np.diff(scores[0]) <= 0).all()
    sim, _ = rec.similar_items([3], k=4)
    assert 3 not in sim[0] and sim.shape == (1, 4)
