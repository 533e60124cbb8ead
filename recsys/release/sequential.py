"""The canary's rollback test: is the canary's CTR below `ratio` x the control's?

A mixture sequential probability ratio test (mSPRT; Johari, Koomen, Pekelis & Walsh, "Always valid
inference", 2017) on theta = p_canary - ratio * p_control, in its normal approximation: with the
estimate theta_hat, its variance V and a N(0, tau^2) mixture over the alternative,

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 * theta_hat^2 / (2 V (V + tau^2)))

Under H0 (theta = 0) Lambda is a martingale, so by Ville's inequality the chance that it *ever* exceeds
1/alpha is at most alpha: the controller may look after every impression and still roll back a
candidate whose CTR is at least `ratio` x the control's with probability at most alpha (one-sided: it
rolls back only when theta_hat < 0; for theta > 0 the chance is smaller still). Power is not fixed in
advance: the simulator runs measure how many impressions a given drop needs (docs/release.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TestResult:
    reject: bool                 # roll back: canary CTR < ratio x control CTR, significantly
    theta: float                 # p_canary - ratio * p_control
    std_error: float             # of theta (normal approximation; inf before either arm has impressions)
    likelihood_ratio: float      # Lambda; rejects at >= 1 / alpha
    threshold: float
    p_control: float
    p_canary: float
    n_control: int
    n_canary: int

    def as_dict(self) -> dict:
        return {k: ((round(v, 6) if math.isfinite(v) else None) if isinstance(v, float) else v)
                for k, v in asdict(self).items()}


def msprt(clicks_control: int, n_control: int, clicks_canary: int, n_canary: int, ratio: float = 0.97,
          alpha: float = 0.05, tau: float = 0.02, min_per_arm: int = 200,
          min_expected_clicks: float = 10.0, var_control: float | None = None,
          var_canary: float | None = None) -> TestResult:
    """The test on the counts so far (impressions with a click / impressions, per arm). It decides only
    once each arm has `min_per_arm` impressions and `min_expected_clicks` clicks expected at the pooled
    CTR: with fewer, the normal approximation is too coarse for the alpha bound (at CTR 0.01 and 200
    impressions an arm, an equal candidate was rolled back in ~20% of simulated canaries; with 10
    expected clicks, ~3%). `var_control` / `var_canary`: each arm's Var(CTR) when impressions are not
    independent (the controller passes the delta-method variance over users); else binomial."""
    threshold = 1.0 / alpha
    p0 = clicks_control / n_control if n_control else 0.0
    p1 = clicks_canary / n_canary if n_canary else 0.0
    theta = p1 - ratio * p0
    # a floor on each arm's variance: p = 0 or 1 would make V = 0 and the statistic infinite
    if n_control and n_canary:
        v1 = max(var_canary if var_canary is not None else p1 * (1 - p1) / n_canary, 1e-4 / n_canary)
        v0 = max(var_control if var_control is not None else p0 * (1 - p0) / n_control, 1e-4 / n_control)
        var = v1 + ratio ** 2 * v0
    else:
        var = math.inf
    pooled = (clicks_control + clicks_canary) / (n_control + n_canary) if n_control + n_canary else 0.0
    if min(n_control, n_canary) < max(min_per_arm, 1) or min(n_control, n_canary) * pooled < min_expected_clicks:
        return TestResult(False, theta, math.sqrt(var), 0.0, threshold, p0, p1, n_control, n_canary)
    log_lr = 0.5 * math.log(var / (var + tau ** 2)) + tau ** 2 * theta ** 2 / (2 * var * (var + tau ** 2))
    lr = math.exp(min(log_lr, 700.0))
    return TestResult(theta < 0 and lr >= threshold, theta, math.sqrt(var), lr, threshold, p0, p1, n_control, n_canary)
