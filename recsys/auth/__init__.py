"""Who may do what: API keys (hashed in Postgres), roles, the request verifier and the per-key rate limit.

One store and one check for every caller: the HTTP API, the admin endpoints and the CLI.
"""

from recsys.auth.keys import ApiKey, create_key, find_key, list_keys, revoke_key
from recsys.auth.rate_limit import RateLimiter
from recsys.auth.roles import ROLES, allows
from recsys.auth.verifier import AuthError, Verifier

__all__ = ["ApiKey", "AuthError", "RateLimiter", "ROLES", "Verifier", "allows", "create_key", "find_key",
           "list_keys", "revoke_key"]
