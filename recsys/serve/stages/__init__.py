"""The serving pipeline's stages, in order: features -> retrieval -> ranker -> slots (rules and diversity).

Each is a plain class built from (cfg, resources), testable without Ray. recsys/serve/graph.py declares
their order, entry points and fallbacks; the recommender composes them in one process (`serve.topology:
fused`) or calls each in a deployment of its own (`split`).
"""
