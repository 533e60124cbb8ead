"""ALS and popularity wrappers on a toy matrix: fit, recommend, similar items, fold-in."""

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.train.als import ALSConfig, ALSRecommender
from recsys.train.popularity import PopularityRecommender, event_matrix, interaction_matrix


def two_block_matrix():
    """Users 0-9 use items 0-4, users 10-19 use items 5-9 (each user misses one item of its block)."""
    seqs = []
    for u in range(20):
        block = range(0, 5) if u < 10 else range(5, 10)
        seqs.append([i for i in block if i != (u % 5) + (0 if u < 10 else 5)])
    return interaction_matrix(seqs, 10)


CFG = ALSConfig(factors=2, regularization=0.1, alpha=5.0, iterations=20, num_threads=1, seed=0)


def test_als_recommends_the_missing_item_of_the_users_block():
    m = two_block_matrix()
    als = ALSRecommender(CFG).fit(m)
    ids, scores = als.recommend(np.arange(20), k=1)
    expected = [(u % 5) + (0 if u < 10 else 5) for u in range(20)]
    assert ids[:, 0].tolist() == expected
    assert als.score(np.array([0, 15])).shape == (2, 10)
    sim, _ = als.similar_items([0, 7], k=3)
    assert set(sim[0]) <= {1, 2, 3, 4} and set(sim[1]) <= {5, 6, 8, 9}
    assert 0 not in sim[0]


def test_fold_in_new_user_and_item():
    m = two_block_matrix()
    als = ALSRecommender(CFG).fit(m)
    new_user = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 0], [5, 6, 7])), shape=(1, 10))
    ids, _ = als.recommend([20], k=2, user_items=new_user)  # folded in, model unchanged
    assert set(ids[0]) == {8, 9}
    assert als.user_factors.shape[0] == 20
    als.partial_fit_users([20], new_user)
    assert als.user_factors.shape[0] == 21
    ids, _ = als.recommend([20], k=2)
    assert set(ids[0]) == {8, 9}
    # a new item 10 used by the first block's users lands near that block
    users = np.arange(10)
    item_users = sp.csr_matrix((np.ones(10), (np.zeros(10), users)), shape=(1, 21))
    als.partial_fit_items([10], item_users)
    assert als.item_factors.shape[0] == 11
    sim, _ = als.similar_items([10], k=3)
    assert set(sim[0]) <= {0, 1, 2, 3, 4}
    assert als.user_items.shape == (21, 11)


def test_event_weights_and_popularity():
    ev = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c"], "sku": ["x", "y", "x", "z", "z"],
                       "event_type": ["view", "purchase", "cart", "view", "view"]})
    m, users, items = event_matrix(ev)
    assert list(users) == ["a", "b", "c"] and list(items) == ["x", "y", "z"]
    assert m.toarray().tolist() == [[1.0, 10.0, 0.0], [4.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    pop = PopularityRecommender().fit(m)
    ids, _ = pop.recommend([2], k=2)
    assert ids[0].tolist() == [1, 0]  # y (10) then x (5); z already seen
    ids, _ = pop.recommend([2], k=3, exclude_seen=False)
    assert ids[0].tolist() == [1, 0, 2]
    sim, _ = pop.similar_items([1], k=2)
    assert sim[0].tolist() == [0, 2]
    als = ALSRecommender(CFG).fit_events(ev)
    assert list(als.item_ids) == ["x", "y", "z"]
