"""Merchandising rules: a JSON rule language (schema), its compiled form (filters, engine), versions
in Postgres (store), what a serving replica applies (rulebook) and shadow runs (shadow)."""
