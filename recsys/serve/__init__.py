"""Serving: candidate sources, the recommendation pipeline, and the Ray Serve HTTP application."""
