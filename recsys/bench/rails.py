"""`recsys bench --only rails`: would a merchandiser sign off the rails? Measured on the running stack's
world through the real `Recommender` in process (live models, ranker, rules, MMR):

- `synthetic.pdp_fbt.fit_precision@4`: on a device's product page, the share of the top 4 slots that fit
  that device (an accessory-graph edge from it: its case, screen protector, the charger it needs), for
  devices with at least 4 fitting SKUs in stock; `...exact_fit_precision@4` counts only the fits made
  for that model (edge weight 1.0).
- `synthetic.cart_upsell.variant_rate`: the share of carts holding one device whose cart rail offers
  another variant of that device (the same `specs.model`: another colour or storage).

Each page and cart is asked for a shopper drawn from the world's known users (their purchases are
excluded from rails, as in production).
"""

from __future__ import annotations

import numpy as np
import psycopg

COMMAND = "recsys bench --only rails"


def bench_rails(cfg, n_devices: int = 300, seed: int = 0) -> dict[str, tuple[float, str]]:
    from recsys.serve.recommender import Recommender
    from recsys.serve.request import RecRequest
    from recsys.services import Postgres

    rng = np.random.default_rng(seed)
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        fits: dict[str, dict[str, float]] = {}
        for src, dst, weight in conn.execute(
                "SELECT e.src_sku, e.dst_sku, e.weight FROM item_edges e JOIN items i ON i.sku = e.dst_sku "
                "WHERE i.stock > 0"):
            fits.setdefault(src, {})[dst] = float(weight)
        model_of = dict(conn.execute("SELECT sku, specs->>'model' FROM items WHERE kind = 'device'").fetchall())
        users = [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM events ORDER BY user_id")]
    devices = sorted(d for d, f in fits.items() if len(f) >= 4 and d in model_of)
    if not devices or not users:
        raise SystemExit("no devices with fitting accessories or no shoppers: run `make demo` first")
    picks = rng.choice(devices, size=min(n_devices, len(devices)), replace=False)
    recommender = Recommender(cfg)
    recommender.res.refresh(wait=True)
    recommender.res.writes.impression = lambda impression: None   # a measurement, not traffic
    fit, exact, variants = [], [], []
    for device in picks:
        user = str(users[rng.integers(len(users))])
        # explain: never a rail the response cache kept from an earlier run (a config change is not in its key)
        pdp = recommender.recommend(RecRequest(surface="pdp_fbt", user_id=user, skus=[str(device)], explain=True))
        top = [i["sku"] for i in pdp["items"][:4]]
        fit.append(sum(s in fits[device] for s in top) / 4)
        exact.append(sum(fits[device].get(s, 0.0) >= 1.0 for s in top) / 4)
        cart = recommender.recommend(RecRequest(surface="cart_upsell", user_id=user, cart=[str(device)], explain=True))
        variants.append(any(model_of.get(i["sku"]) == model_of[device] for i in cart["items"]))
    print(f"  {len(picks)} device pages and carts: fit precision@4 {np.mean(fit):.3f} (exact-model "
          f"{np.mean(exact):.3f}), carts offered a variant of their device {np.mean(variants):.1%}", flush=True)
    return {"synthetic.pdp_fbt.fit_precision@4": (float(np.mean(fit)), f"fraction of top-4 slots, {len(picks)} device pages"),
            "synthetic.pdp_fbt.exact_fit_precision@4": (float(np.mean(exact)), "fraction of top-4 slots made for the model"),
            "synthetic.cart_upsell.variant_rate": (float(np.mean(variants)), f"fraction of {len(picks)} one-device carts")}
