"""Serving: candidate sources, the pipeline's stages (stages/), their composition with budgets and the
response cache (recommender.py), the HTTP API, and the Ray Serve application in either topology (app.py)."""
