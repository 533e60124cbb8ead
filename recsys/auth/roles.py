"""The roles a key can hold. A key has exactly one; `admin` may do everything the others may."""

from __future__ import annotations

ROLES = ("storefront", "viewer", "merchandiser", "ml", "admin")
# storefront: read recommendations, write events. viewer: read the dashboard, the rules and the models.
# merchandiser: rules. ml: models and canary. admin: keys.
# Who may read the admin views (rules, models, canary): every role but the storefront's.
READERS = ("viewer", "merchandiser", "ml")


def allows(role: str, needed: str | tuple[str, ...]) -> bool:
    """Whether a key of `role` may call something that needs `needed` (one role or any of several)."""
    wanted = (needed,) if isinstance(needed, str) else needed
    return role == "admin" or role in wanted
