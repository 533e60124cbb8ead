"""PNG plots of a simulated A/B result (`recsys sim ab --record`): the lifts against the baseline with
their 95% intervals beside the case study's claims, and each arm's catalog shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLAIMS = {"conversion": 0.24, "aov": 0.18}   # the case study's +24% conversion and +18% AOV


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lifts(result: dict, baseline: str, path: Path) -> Path:
    """One panel per metric: each arm's mean lift over seeds with its 95% interval; dashed, the claim."""
    plt = _pyplot()
    metrics = list(result["lifts"])
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.4 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        arms = list(result["lifts"][metric])
        means = np.array([result["lifts"][metric][a]["mean"] for a in arms]) * 100
        lows = np.array([result["lifts"][metric][a]["low"] for a in arms]) * 100
        highs = np.array([result["lifts"][metric][a]["high"] for a in arms]) * 100
        ax.errorbar(means, range(len(arms)), xerr=[means - lows, highs - means], fmt="o", capsize=4)
        ax.axvline(0, color="grey", lw=0.8)
        if metric in CLAIMS:
            ax.axvline(CLAIMS[metric] * 100, color="tab:red", ls="--", lw=1, label=f"claim +{CLAIMS[metric]:.0%}")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_yticks(range(len(arms)), arms)
        ax.set_ylim(-0.5, len(arms) - 0.5)
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.set_xlabel(f"lift vs {baseline} (%)", fontsize=8)
    fig.suptitle(f"Simulated A/B: lifts with 95% intervals over {len(result['seeds'])} seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_shares(result: dict, path: Path) -> Path:
    """Per arm: long-tail share of slots, high-margin accessories' share, catalog coverage (mean over
    seeds with the 95% interval as whiskers)."""
    plt = _pyplot()
    from recsys.sim.ab import SHARES, levels

    arms = list(result["seeds"][0])
    fig, ax = plt.subplots(figsize=(7.5, 3))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        level = [levels(result["seeds"], m)[arm] for m in SHARES]
        mean = np.array([v["mean"] for v in level]) * 100
        half = np.nan_to_num(np.array([v["high"] - v["mean"] for v in level]) * 100)
        ax.bar(np.arange(len(SHARES)) + i * width, mean, width, label=arm, yerr=half, capsize=3)
    ax.set_xticks(np.arange(len(SHARES)) + width * (len(arms) - 1) / 2, [m.replace("_", " ") for m in SHARES])
    ax.set_ylabel("% of slots (coverage: of SKUs)")
    ax.legend(fontsize=8)
    ax.set_title("Simulated A/B: where the slots went", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


KINDS = ("device", "accessory", "part")


def plot_basket(result: dict, path: Path) -> Path:
    """What each arm's shoppers bought: revenue per session split by kind (device, accessory, part), and
    the share of revenue a rail led to (the rest: organic browsing). Means over seeds."""
    plt = _pyplot()
    arms = list(result["seeds"][0])
    mean = {arm: {m: float(np.mean([s[arm][m] for s in result["seeds"]])) for m in result["seeds"][0][arm]}
            for arm in arms}
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3), gridspec_kw={"width_ratios": [2, 1]})
    bottom = np.zeros(len(arms))
    for kind in KINDS:
        value = np.array([mean[a][f"{kind}_revenue_share"] * mean[a]["revenue_per_session"] for a in arms])
        left.bar(arms, value, bottom=bottom, label=kind)
        bottom += value
    left.set_ylabel("revenue per session (EUR)")
    left.legend(fontsize=8)
    left.set_title("revenue per session by kind", fontsize=9)
    right.bar(arms, [mean[a]["rail_revenue_share"] * 100 for a in arms], color="tab:gray")
    right.set_ylabel("% of revenue")
    right.set_title("led by a rail", fontsize=9)
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=7, labelrotation=15)
    fig.suptitle("Simulated A/B: what the baskets held", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
