"""Per-arm outcomes of a canary, from SQL over impressions and the events attributed to them.

An event belongs to an impression when it carries the impression's `request_id` (the storefront sends
`context.request_id` and `slot` with a view, add-to-cart or purchase that came from a rail). Per arm:
impressions; CTR = impressions with at least one recommended product viewed / impressions;
add-to-cart rate and conversion likewise (an add-to-cart, a purchase); revenue per impression =
attributed purchases' price x quantity / impressions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import psycopg

# Per request id, what followed from the rail (a sub-query; the dashboard's rollups use it too): `{until}`
# is an extra bound on the events' ts ('' for none).
ATTRIBUTED = """
    SELECT request_id,
           count(*) FILTER (WHERE type = 'product_viewed') AS views,
           count(*) FILTER (WHERE type = 'add_to_cart') AS carts,
           count(*) FILTER (WHERE type = 'purchase_completed') AS orders,
           sum(price * coalesce(quantity, 1)) FILTER (WHERE type = 'purchase_completed') AS revenue
    FROM events
    WHERE request_id IS NOT NULL AND ts >= %(since)s {until}
    GROUP BY request_id"""

# Per arm, the counts and, over the units of assignment (a user, else the session, else the request),
# the sums of squares the CTR's variance needs: a user sees many rails, so impressions are not independent.
ARM_METRICS = """
SELECT arm, sum(n), sum(clicked), sum(carted), sum(converted), sum(revenue),
       sum(clicked * clicked), sum(n * n), sum(clicked * n)
FROM (
  SELECT i.arm, coalesce(i.user_id, i.session_id, i.request_id) AS unit, count(*) AS n,
         count(*) FILTER (WHERE e.views > 0) AS clicked, count(*) FILTER (WHERE e.carts > 0) AS carted,
         count(*) FILTER (WHERE e.orders > 0) AS converted, coalesce(sum(e.revenue), 0) AS revenue
  FROM impressions i
  LEFT JOIN (""" + ATTRIBUTED.format(until="") + """) e USING (request_id)
  WHERE i.canary_id = %(canary_id)s AND i.ts >= %(since)s AND (%(until)s::timestamptz IS NULL OR i.ts < %(until)s)
  GROUP BY i.arm, unit
) units
GROUP BY arm
"""


@dataclass(frozen=True)
class ArmMetrics:
    impressions: int = 0
    clicked: int = 0
    carted: int = 0
    converted: int = 0
    revenue: float = 0.0
    # sums over the units of assignment u (clicked_u, impressions_u): for the CTR's variance
    clicked_sq: float = 0.0
    impressions_sq: float = 0.0
    clicked_x_impressions: float = 0.0

    @property
    def ctr(self) -> float:
        return self.clicked / self.impressions if self.impressions else 0.0

    @property
    def ctr_variance(self) -> float | None:
        """Var(CTR) by the delta method over units, sum_u (clicked_u - ctr * impressions_u)^2 / N^2: a
        shopper's rails are correlated, and the binomial p(1-p)/N would understate it. None: no data."""
        if not self.impressions:
            return None
        p = self.ctr
        return max(self.clicked_sq - 2 * p * self.clicked_x_impressions + p * p * self.impressions_sq, 0.0) \
            / self.impressions ** 2

    def as_dict(self) -> dict:
        n = self.impressions or 1
        return {**{k: v for k, v in asdict(self).items() if not k.endswith(("_sq", "_x_impressions"))},
                "revenue": round(self.revenue, 2), "ctr": round(self.ctr, 5),
                "add_to_cart_rate": round(self.carted / n, 5), "conversion": round(self.converted / n, 5),
                "revenue_per_impression": round(self.revenue / n, 4)}


def arm_metrics(conn: psycopg.Connection, canary_id: int, since: datetime,
                until: datetime | None = None) -> dict[str, ArmMetrics]:
    """{"control": ..., "canary": ...} over the canary's impressions from `since` (to `until`)."""
    rows = conn.execute(ARM_METRICS, {"canary_id": canary_id, "since": since, "until": until}).fetchall()
    out = {"control": ArmMetrics(), "canary": ArmMetrics()}
    for arm, n, clicked, carted, converted, revenue, c2, n2, cn in rows:
        out[arm] = ArmMetrics(int(n), int(clicked), int(carted), int(converted), float(revenue),
                              float(c2), float(n2), float(cn))
    return out
