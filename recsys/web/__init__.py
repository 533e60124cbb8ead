"""The dashboard and the storefront page: one FastAPI process beside Ray Serve (recsys/web/app.py)."""
