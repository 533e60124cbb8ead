"""Researchers' notebooks run top to bottom on small data, against the suite's own stack, and their
assertions hold. A notebook that needs the stack reads the suite's configuration from
RECSYS_NOTEBOOK_OVERRIDES (without it: the demo's stack)."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import PATIENT, TEST_OVERRIDES

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_every_notebook_of_the_issue_is_here():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, world, monkeypatch):
    monkeypatch.setenv("RECSYS_NOTEBOOK_OVERRIDES", json.dumps(TEST_OVERRIDES + PATIENT))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=420, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
