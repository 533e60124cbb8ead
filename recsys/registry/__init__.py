"""The model registry in Postgres: versions, metrics, gate reports, artefact locations and stages."""

from recsys.registry.models import ModelRecord, get, list_models, live, register, set_gates, set_stage

__all__ = ["ModelRecord", "get", "list_models", "live", "register", "set_gates", "set_stage"]
