"""Per-key rate limit on event intake: a token bucket in Redis, one script call per request.

Each key earns `rate` events per second up to `burst`; a request costs one token per event it
carries (a batch of 500 costs 500). A batch larger than the bucket passes when the bucket is full
and leaves it in debt, so no batch the API accepts is refused for ever. The bucket lives in Redis so
every replica shares it. Redis unreachable: the limit fails open (the request passes), because a
dead limiter must not stop intake.
"""

from __future__ import annotations

import logging
import math

import redis

log = logging.getLogger(__name__)

# KEYS[1] bucket hash; ARGV rate, burst, cost. Returns {allowed 0/1, seconds until it would be allowed}.
BUCKET = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local need = math.min(cost, burst)
local allowed, wait = 0, (need - tokens) / rate
if tokens >= need then
  tokens, allowed, wait = tokens - cost, 1, 0
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RateLimiter:
    def __init__(self, client: redis.Redis, prefix: str, rate_per_s: float, burst: float):
        self.client, self.prefix = client, prefix
        self.rate, self.burst = float(rate_per_s), float(burst)
        self._script = client.register_script(BUCKET)

    def acquire(self, bucket: str, cost: int) -> float:
        """0 when `cost` events may pass now (and are counted); otherwise the seconds to wait."""
        try:
            allowed, wait = self._script(keys=[f"{self.prefix}ratelimit:{bucket}"],
                                         args=[self.rate, self.burst, int(cost)])
        except redis.RedisError as exc:
            log.warning("rate limit not applied (Redis: %s)", exc)
            return 0.0
        return 0.0 if int(allowed) else max(float(wait), 0.001)

    @staticmethod
    def retry_after(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))
