"""The Redis online store: per-user session and affinity features, per-item decayed counters, trending.

Decayed sums use forward decay in log space: a counter is kept as s = ln(v(t)) + t/tau, so adding
weight w at time t is a log-sum-exp and the value now is exp(s - now/tau). Scores of different items
stay comparable without rewriting them (trending is a plain ZSET), events may arrive out of order,
and nothing overflows. Every write happens in one Lua script call per chunk of events, each event
guarded by a marker on its event_id, so replaying events changes nothing. Each applied event also bumps the user's `version`, so
anything derived from the user's state (the response cache) can tell that it is stale.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from urllib.parse import quote

import numpy as np
import redis

from recsys.features.events import Event

# One call applies a chunk of events. ARGV: the settings, the counter windows' decay constants, the
# trending key and its decay constant, then one string per event, its fields joined by \x1f (intake refuses control characters in
# every text field, so the separator cannot occur inside one; one argument per event keeps the
# client's packing cheap). Each event runs under pcall, so one that fails leaves the others applied,
# and its dedupe marker is removed again: an event whose writes failed is not marked as seen. The
# reply has one entry per event: 1 applied, 0 already seen, or the error text of an event that failed.
# (Keys are derived inside the script from the per-event user key, which carries the user's hash tag:
# on a Redis Cluster, chunks would have to be grouped by slot.)
APPLY_EVENTS = """
local dedupe_ttl, user_ttl, views_kept = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]) - 1
local aff_tau, cart_max, bought_max = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local nw = tonumber(ARGV[7])
local taus, fields = {}, {}
for w = 1, nw do taus[w] = tonumber(ARGV[7 + w]) end
local trending, trending_tau = ARGV[8 + nw], tonumber(ARGV[9 + nw])
local TTL_REFRESH = 86400   -- an active user's TTLs are renewed at most daily (and on new keys)

local function logadd(old, w, t, tau)
  local x = math.log(w) + t / tau
  if not old then return x end
  old = tonumber(old)
  local m = math.max(old, x)
  return m + math.log(math.exp(old - m) + math.exp(x - m))
end

-- seen, user key, item key, kind, sku, ts, device, geo, category, weight, session
local function apply_one(seen, u, item, kind, sku, ts, device, geo, category, weight, session)
  local t = tonumber(ts)
  weight = tonumber(weight)
  if not t or not weight or not session then error('bad event arguments') end
  local views, aff, cart, bought = u .. ':views', u .. ':aff', u .. ':cart', u .. ':bought'
  local new_user = redis.call('HINCRBY', u, 'version', 1) == 1
  local last = tonumber(redis.call('HGET', u, 'last_seen') or '0')
  if t >= last then
    local update = {'last_seen', ts}
    if device ~= '' then update[#update + 1] = 'device'; update[#update + 1] = device end
    if geo ~= '' then update[#update + 1] = 'geo'; update[#update + 1] = geo end
    if session ~= '' then update[#update + 1] = 'session_id'; update[#update + 1] = session end
    redis.call('HSET', u, unpack(update))
  end
  if kind == 'product_viewed' then
    if redis.call('LPUSH', views, sku .. '|' .. ts) == 1 then redis.call('EXPIRE', views, user_ttl) end
    redis.call('LTRIM', views, 0, views_kept)
  elseif kind == 'add_to_cart' then
    redis.call('SADD', cart, sku)
    if redis.call('SCARD', cart) > cart_max then redis.call('SPOP', cart) end
    redis.call('EXPIRE', cart, user_ttl)
  else
    redis.call('SREM', cart, sku)
    redis.call('ZADD', bought, t, sku)
    redis.call('ZREMRANGEBYRANK', bought, 0, -1 - bought_max)
    redis.call('EXPIRE', bought, user_ttl)
  end
  if category ~= '' then
    local added = redis.call('ZADD', aff, logadd(redis.call('ZSCORE', aff, category), weight, t, aff_tau), category)
    if added == 1 then redis.call('EXPIRE', aff, user_ttl) end
  end
  if new_user or t - last > TTL_REFRESH then
    for _, key in ipairs({u, views, aff, cart, bought}) do redis.call('EXPIRE', key, user_ttl) end
  end
  for w = 1, nw do fields[w] = kind .. ':' .. w end
  local counters = redis.call('HMGET', item, unpack(fields, 1, nw))
  local update = {}
  for w = 1, nw do
    update[#update + 1] = fields[w]
    update[#update + 1] = logadd(counters[w] or nil, 1, t, taus[w])
  end
  redis.call('HSET', item, unpack(update))
  redis.call('ZADD', trending, logadd(redis.call('ZSCORE', trending, sku), weight, t, trending_tau), sku)
  return 1
end

local out = {}
for i = 10 + nw, #ARGV do
  local f = {}
  for value in string.gmatch(ARGV[i], '([^\\31]*)\\31?') do f[#f + 1] = value end
  if not redis.call('SET', f[1], '1', 'NX', 'EX', dedupe_ttl) then
    out[#out + 1] = 0
  else
    local ok, result = pcall(apply_one, unpack(f, 1, 11))
    if ok then out[#out + 1] = result
    else
      redis.call('DEL', f[1])
      out[#out + 1] = type(result) == 'table' and (result.err or 'error') or tostring(result)
    end
  end
end
return out
"""


# KEYS: item hashes; ARGV: hash fields. One flat reply, #KEYS x #ARGV values, '-inf' (log of 0) where missing.
READ_COUNTERS = """
local out = {}
for _, key in ipairs(KEYS) do
  local values = redis.call('HMGET', key, unpack(ARGV))
  for j = 1, #ARGV do out[#out + 1] = values[j] or '-inf' end
end
return out
"""


@dataclass
class UserState:
    """What serving knows about a user right now (empty for an unknown user)."""

    user_id: str
    views: list[tuple[str, float]] = field(default_factory=list)   # (sku, epoch s), newest first
    device: str | None = None
    geo: str | None = None
    last_seen: float | None = None
    session_id: str | None = None
    cart: set[str] = field(default_factory=set)
    purchased: dict[str, float] = field(default_factory=dict)       # sku -> epoch s
    category_affinity: dict[str, float] = field(default_factory=dict)
    version: int = 0                                                # events applied so far
    # The user's two-tower vector as last stored (model version, computed at, vector), read with the
    # rest in serving's one round trip (recsys/models/user_vectors.py owns its layout).
    stored_vector: tuple[str, float, np.ndarray] | None = None

    @property
    def known(self) -> bool:
        return self.last_seen is not None


class OnlineStore:
    def __init__(self, client: redis.Redis, prefix: str, features_cfg):
        self.r = client
        self.p = prefix
        self.cfg = features_cfg
        self.windows_s = [float(h) * 3600 for h in features_cfg.counter_windows_h]
        self.aff_tau = float(features_cfg.affinity_half_life_h) * 3600 / math.log(2)
        self.weights = dict(features_cfg.event_weights)
        self.weight_text = {kind: repr(float(w)) for kind, w in self.weights.items()}
        self._apply = self.r.register_script(APPLY_EVENTS)
        self._read_counters = self.r.register_script(READ_COUNTERS)

    @classmethod
    def from_config(cls, cfg, prefix: str | None = None, socket_timeout: float = 5.0) -> "OnlineStore":
        client = redis.Redis.from_url(cfg.services.redis.url, socket_timeout=socket_timeout,
                                      socket_connect_timeout=min(socket_timeout, 2.0))
        return cls(client, prefix if prefix is not None else cfg.services.redis.key_prefix, cfg.features)

    # keys --------------------------------------------------------------------------------------
    def user_key(self, user_id: str, part: str = "") -> str:
        return user_key(self.p, user_id, part)

    def seen_key(self, event_id: str) -> str:
        return f"{self.p}seen:{escape_id(event_id)}"

    def trending_key(self) -> str:
        return f"{self.p}trending:{int(self.cfg.trending_window_h)}h"

    def item_key(self, sku: str) -> str:
        return f"{self.p}i:{sku}"

    # writes ------------------------------------------------------------------------------------
    def apply(self, events: list[Event], category_of: dict[str, str]) -> int:
        """Apply events (each at most once, by event_id); return how many were new. The events that
        could be applied are; if any could not, redis.ResponseError names the first failure.
        `features.redis_chunk_events` per script call: larger chunks cost less per event, but Redis
        serves nothing else while one runs (~70 us per event here)."""
        chunk = int(self.cfg.redis_chunk_events)
        settings = [int(self.cfg.dedupe_ttl_s), int(self.cfg.user_ttl_s), int(self.cfg.session_views),
                    repr(self.aff_tau), int(self.cfg.max_cart_items), int(self.cfg.max_purchases_kept),
                    len(self.windows_s), *[repr(w) for w in self.windows_s], self.trending_key(),
                    repr(float(self.cfg.trending_window_h) * 3600)]
        applied, failures = 0, []
        for start in range(0, len(events), chunk):
            args = list(settings)
            for e in events[start:start + chunk]:
                args.append("\x1f".join((
                    self.seen_key(e.event_id), self.user_key(e.user_id), self.item_key(e.sku), e.type, e.sku,
                    repr(e.epoch), e.device or "", e.geo or "", category_of.get(e.sku, ""), self.weight_text[e.type],
                    e.session_id or "")))
            for result in self._apply(args=args):
                if isinstance(result, int):
                    applied += result
                else:
                    failures.append(result.decode() if isinstance(result, bytes) else str(result))
        if failures:
            raise redis.ResponseError(f"{failures[0]} ({len(failures)} of {len(events)} events not applied)")
        return applied

    def set_bestsellers(self, scores: dict[str, float]) -> None:
        key = f"{self.p}bestsellers"
        pipe = self.r.pipeline()
        pipe.delete(key)
        if scores:
            pipe.zadd(key, scores)
        pipe.execute()

    # reads -------------------------------------------------------------------------------------
    def user_state(self, user_id: str, now: float | None = None) -> UserState:
        pipe = self.r.pipeline(transaction=False)
        self.queue_user_state(pipe, user_id)
        return self.parse_user_state(user_id, pipe.execute(), now)

    # A user's state is USER_STATE_REPLIES commands on a pipeline, so serving can read it in the same
    # round trip as the cached rail and the user's vector (recsys/serve/stages/features.py).
    USER_STATE_REPLIES = 5

    def queue_user_state(self, pipe, user_id: str) -> None:
        u = self.user_key(user_id)
        pipe.hgetall(u)
        pipe.lrange(f"{u}:views", 0, -1)
        pipe.smembers(f"{u}:cart")
        pipe.zrange(f"{u}:bought", 0, -1, withscores=True)
        pipe.zrange(f"{u}:aff", 0, -1, withscores=True)

    def parse_user_state(self, user_id: str, replies: list, now: float | None = None) -> UserState:
        now = time.time() if now is None else now
        info, views, cart, bought, aff = replies
        info = {k.decode(): v.decode() for k, v in info.items()}
        parsed_views = []
        for raw in views:
            sku, _, ts = raw.decode().rpartition("|")
            parsed_views.append((sku, float(ts)))
        return UserState(
            user_id=user_id,
            views=parsed_views,
            device=info.get("device") or None,
            geo=info.get("geo") or None,
            last_seen=float(info["last_seen"]) if "last_seen" in info else None,
            session_id=info.get("session_id") or None,
            cart={s.decode() for s in cart},
            purchased={s.decode(): ts for s, ts in bought},
            category_affinity={c.decode(): math.exp(s - now / self.aff_tau) for c, s in aff},
            version=int(info.get("version", 0)),
        )

    def trending(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        """Top-n SKUs by decayed weighted activity over `features.trending_window_h`, with their current
        decayed value. (One window only: each trending ZSET costs two Redis calls per event.)"""
        now = time.time() if now is None else now
        tau = float(self.cfg.trending_window_h) * 3600
        rows = self.r.zrevrange(self.trending_key(), 0, n - 1, withscores=True)
        return [(sku.decode(), math.exp(score - now / tau)) for sku, score in rows]

    def item_counters(self, skus: list[str], now: float | None = None) -> dict[str, dict[str, float]]:
        """Every decayed view / cart / purchase count per window of each SKU, e.g. {'product_viewed:24h': 3.2}."""
        now = time.time() if now is None else now
        names = [f"{int(h)}h" for h in self.cfg.counter_windows_h]
        pipe = self.r.pipeline(transaction=False)
        for sku in skus:
            pipe.hgetall(self.item_key(sku))
        out = {}
        for sku, raw in zip(skus, pipe.execute()):
            counters = {}
            for k, v in raw.items():
                kind, _, idx = k.decode().rpartition(":")
                i = int(idx) - 1
                counters[f"{kind}:{names[i]}"] = math.exp(float(v) - now / self.windows_s[i])
            out[sku] = counters
        return out

    def counter_matrix(self, skus: list[str], keys: list[str], now: float | None = None) -> np.ndarray:
        """(len(skus), len(keys)) decayed counters, keys as in item_counters ('product_viewed:24h'); 0 where
        none."""
        logs, taus = self.counter_logs(skus, keys)
        now = time.time() if now is None else now
        return np.exp(logs - now / taus)

    def counter_logs(self, skus: list[str], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The counters as stored (forward-decay logs, -inf where none) and each key's decay constant:
        `exp(logs - now / taus)` is their value at `now`, so a snapshot of them stays right as time
        passes. One script call for all the SKUs, where a pipeline of HMGETs costs redis-py ~60 us of
        Python per SKU."""
        names = [f"{int(h)}h" for h in self.cfg.counter_windows_h]
        windows = [names.index(k.rpartition(":")[2]) for k in keys]   # 'product_viewed:24h' -> field 'product_viewed:1'
        fields = [f"{k.rpartition(':')[0]}:{w + 1}" for k, w in zip(keys, windows)]
        taus = np.array([self.windows_s[w] for w in windows])
        if not skus:
            return np.zeros((0, len(keys))), taus
        raw = self._read_counters(keys=[self.item_key(s) for s in skus], args=fields)
        return np.array(raw).astype(np.float64).reshape(len(skus), len(keys)), taus

    def bestsellers(self, n: int) -> list[tuple[str, float]]:
        return [(s.decode(), score) for s, score in self.r.zrevrange(f"{self.p}bestsellers", 0, n - 1, withscores=True)]

    def delete_all(self) -> int:
        """Remove every key under this store's prefix (tests, or a rebuild); never a FLUSHDB."""
        removed = 0
        for keys in _chunks(self.r.scan_iter(match=f"{self.p}*", count=2000), 1000):
            removed += self.r.unlink(*keys)
        return removed


def user_key(prefix: str, user_id: str, part: str = "") -> str:
    """`<prefix>u:{<id>}[:part]`: every key of one user. The id is percent-escaped, so no id can spell
    another user's key (`"bob}:views"` stays inside its braces), and the braces are a Redis Cluster hash
    tag that keeps one user's keys on one slot."""
    return f"{prefix}u:{{{escape_id(user_id)}}}{':' + part if part else ''}"


def escape_id(value: str) -> str:
    """Percent-escape everything but [A-Za-z0-9_.~-]: injective (`%` itself is escaped), so two ids
    never share a key, and no id can contain the `{`, `}` or `:` that structure our keys."""
    return quote(value, safe="")


def _chunks(iterable, size):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
