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

ARM_METRICS = """
SELECT i.arm, count(*),
       count(*) FILTER (WHERE e.views > 0), count(*) FILTER (WHERE e.carts > 0),
       count(*) FILTER (WHERE e.orders > 0), coalesce(sum(e.revenue), 0)
FROM impressions i
LEFT JOIN (""" + ATTRIBUTED.format(until="") + """) e USING (request_id)
WHERE i.canary_id = %(canary_id)s AND i.ts >= %(since)s AND (%(until)s::timestamptz IS NULL OR i.ts < %(until)s)
GROUP BY i.arm
"""


@dataclass(frozen=True)
class ArmMetrics:
    impressions: int = 0
    clicked: int = 0
    carted: int = 0
    converted: int = 0
    revenue: float = 0.0

    @property
    def ctr(self) -> float:
        return self.clicked / self.impressions if self.impressions else 0.0

    def as_dict(self) -> dict:
        n = self.impressions or 1
        return {**asdict(self), "revenue": round(self.revenue, 2), "ctr": round(self.ctr, 5),
                "add_to_cart_rate": round(self.carted / n, 5), "conversion": round(self.converted / n, 5),
                "revenue_per_impression": round(self.revenue / n, 4)}


def arm_metrics(conn: psycopg.Connection, canary_id: int, since: datetime,
                until: datetime | None = None) -> dict[str, ArmMetrics]:
    """{"control": ..., "canary": ...} over the canary's impressions from `since` (to `until`)."""
    rows = conn.execute(ARM_METRICS, {"canary_id": canary_id, "since": since, "until": until}).fetchall()
    out = {"control": ArmMetrics(), "canary": ArmMetrics()}
    for arm, n, clicked, carted, converted, revenue in rows:
        out[arm] = ArmMetrics(n, clicked, carted, converted, float(revenue))
    return out
