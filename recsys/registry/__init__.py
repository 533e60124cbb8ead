"""The model registry in Postgres: versions, metrics, artefact locations and stages."""

from recsys.registry.models import ModelRecord, get, list_models, live, register, set_stage

__all__ = ["ModelRecord", "get", "list_models", "live", "register", "set_stage"]
