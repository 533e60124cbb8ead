"""Postgres access: schema migrations and connection helpers."""
