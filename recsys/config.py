"""Load the Hydra configuration tree in `conf/` from any entry point (CLI, Ray job, tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = Path(os.environ.get("RECSYS_CONF_DIR", PROJECT_ROOT / "conf"))

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


def load_config(overrides: Iterable[str] = ()) -> DictConfig:
    """Compose `conf/config.yaml` with Hydra overrides such as `data=small serve.port=8100`."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg
