"""The rollback test's error rates, by simulation: a candidate exactly at 0.97 x the control's CTR is
rolled back at most alpha of the time even when the controller looks after every 100 impressions,
and a clearly worse one is caught."""

import numpy as np

from recsys.release.sequential import msprt


def _run(p_control: float, p_canary: float, share: float, n: int, seed: int, every: int = 100) -> int | None:
    """Impressions until rollback (None: never) of one simulated canary."""
    rng = np.random.default_rng(seed)
    arm = rng.random(n) < share
    click = rng.random(n) < np.where(arm, p_canary, p_control)
    c1, n1 = np.cumsum(click & arm), np.cumsum(arm)
    c0, n0 = np.cumsum(click & ~arm), np.cumsum(~arm)
    for i in range(every - 1, n, every):
        if msprt(int(c0[i]), int(n0[i]), int(c1[i]), int(n1[i]), 0.97, 0.05, 0.02, 200).reject:
            return i + 1
    return None


def test_false_rollbacks_stay_under_alpha_at_the_boundary_with_many_looks():
    runs = [_run(0.30, 0.97 * 0.30, 0.5, 20_000, seed) for seed in range(300)]
    rate = sum(r is not None for r in runs) / len(runs)
    assert rate <= 0.05, rate


def test_an_equal_candidate_is_almost_never_rolled_back():
    runs = [_run(0.30, 0.30, 0.1, 20_000, seed) for seed in range(200)]
    assert sum(r is not None for r in runs) <= 2


def test_worse_candidates_are_caught_at_ten_percent_the_worse_the_sooner():
    """Power, measured: at a 10% canary share and CTR 0.30, a 30% drop is caught in nearly every run (median
    ~4,200 impressions, both arms), a 15% drop in nearly every run within 30,000 (median ~12,000)."""
    much = [_run(0.30, 0.70 * 0.30, 0.1, 10_000, seed) for seed in range(100)]
    some = [_run(0.30, 0.85 * 0.30, 0.1, 30_000, seed) for seed in range(100)]
    assert sum(r is not None for r in much) >= 98 and np.median([r for r in much if r]) < 6000
    caught = [r for r in some if r is not None]
    assert len(caught) >= 85 and np.median(caught) > np.median([r for r in much if r])


def test_no_decision_before_each_arm_has_its_minimum():
    assert not msprt(90, 100, 0, 100, min_per_arm=200).reject
    assert msprt(900, 1000, 100, 1000, min_per_arm=200).reject
