"""Serving loads the trained models without torch, sentence-transformers or the training code: those are
gigabytes and seconds of start-up per replica, and a training-only change must not break serving.

Models are loaded when a replica builds its stages, so the check imports the serving modules and then
builds the stages over a live two-tower, ALS and ranker registry (stubbed; the artefacts are files
written here the way training writes them) before it looks at what was imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

SERVING_MODULES = ["recsys.serve.app", "recsys.serve.graph", "recsys.serve.recommender",
                   "recsys.serve.model_sources", "recsys.serve.stages.ranker", "recsys.serve.api"]
FORBIDDEN = ("torch", "sentence_transformers", "recsys.train")

SKUS = ["sku-a", "sku-b", "sku-c", "sku-d"]
DIM, MAX_LEN = 3, 5

REPLICA = """
import importlib, json, sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np

for name in {modules!r}:
    importlib.import_module(name)

from recsys import registry
from recsys.catalog import vectors
from recsys.serve.model_sources import ALSSource, ModelSet, TwoTowerANN
from recsys.serve.stages.ranker import LTRRanking

folder = Path({folder!r})
records = {{"tt-1": SimpleNamespace(version="tt-1", kind="two_tower", artifact_uri=str(folder), config={{}}),
           "als-1": SimpleNamespace(version="als-1", kind="als", artifact_uri=str(folder / "als.npz"), config={{}})}}
registry.get = lambda conn, version: records[version]          # no ranker trained: the blend ranks
vectors.read_vectors = lambda conn, version: ({skus!r}, np.load(folder / "item_vectors.npy"))
conn = SimpleNamespace(execute=lambda *a: SimpleNamespace(fetchone=lambda: ({dim},)))   # the vector set's dim

res = SimpleNamespace(pool=SimpleNamespace(connection=lambda timeout: nullcontext(conn)),
                      store=SimpleNamespace(r=SimpleNamespace(hgetall=lambda key: {{}}), p="test:"),
                      cfg=SimpleNamespace(serve=SimpleNamespace(user_vector_refresh_s=60.0)), item_counters=None)
res.vector_index = lambda *a: ('index of', a[0])
models = ModelSet(res, {{"two_tower": "tt-1", "als": "als-1"}})
res.models_of = lambda req: models
TwoTowerANN(res), ALSSource(res), LTRRanking(SimpleNamespace(surfaces={{}}), res)

tt, als = models.two_tower, models.als
views = [("sku-c", 1000.0), ("unknown", 990.0), ("sku-a", 900.0)]   # newest first
print(json.dumps({{
    "forbidden": sorted(m for m in sys.modules if m.startswith({forbidden!r})),
    "two_tower": [tt.vector_set, tt.dim, tt.index, tt.items.tolist()],
    "user_vector": tt.user_vector(views, 1060.0).tolist(),
    "no_known_views": tt.user_vector([("unknown", 1.0)], 2.0),
    "als": [als.skus, als.index, als.items.tolist(), als.users],
    "known_user": als.user_vector("u1", []).tolist(),
    "folded_in": als.user_vector("new", [0, 2]).tolist(),
    "nobody": als.user_vector("new", []),
}}))
"""


def _write_user_tower(path) -> None:
    """An ONNX user tower with the exported one's inputs; its user vector is the sum of the history's vectors."""
    from onnx import TensorProto, helper, save

    batch_by_len = ["batch", MAX_LEN]
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["axis"], value=helper.make_tensor("axis", TensorProto.INT64, [1], [1])),
         helper.make_node("ReduceSum", ["hist_vecs", "axis"], ["user_vector"], keepdims=0)],
        "user_tower",
        [helper.make_tensor_value_info("hist_vecs", TensorProto.FLOAT, batch_by_len + [DIM]),
         helper.make_tensor_value_info("valid", TensorProto.INT64, batch_by_len),
         helper.make_tensor_value_info("gaps", TensorProto.INT64, batch_by_len)],
        [helper.make_tensor_value_info("user_vector", TensorProto.FLOAT, ["batch", DIM])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _write_artefacts(folder) -> dict:
    """A training run's folder, file names and formats as recsys.train.pipeline writes them (artefacts
    already in a registry must keep loading)."""
    rng = np.random.default_rng(0)
    items = rng.normal(size=(len(SKUS), DIM)).astype(np.float32)
    np.save(folder / "item_vectors.npy", items)            # what pgvector would hold
    (folder / "config.json").write_text(json.dumps({"dim": DIM, "max_len": MAX_LEN, "device": "cuda"}))
    _write_user_tower(folder / "user_tower.onnx")
    als = {"user_factors": rng.normal(size=(2, DIM)).astype(np.float32),
           "item_factors": rng.normal(size=(len(SKUS), DIM)).astype(np.float32),
           "users": np.asarray(["u1", "u2"]), "regularization": 0.05, "alpha": 10.0}
    np.savez(folder / "als.npz", **als)
    (folder / "skus.json").write_text(json.dumps(SKUS))
    return {"items": items, **als}


def test_serving_builds_its_stages_without_torch_or_training_code(tmp_path):
    written = _write_artefacts(tmp_path)
    script = REPLICA.format(modules=SERVING_MODULES, folder=str(tmp_path), dim=DIM, skus=SKUS,
                            forbidden=FORBIDDEN)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])

    assert got["forbidden"] == []
    index = {sku: i for i, sku in enumerate(SKUS)}
    items = written["items"]
    assert got["two_tower"][:3] == ["tt-1", DIM, index]
    np.testing.assert_allclose(got["two_tower"][3], items)
    np.testing.assert_allclose(got["user_vector"], items[0] + items[2], rtol=1e-6)
    assert got["no_known_views"] is None

    factors, users = written["item_factors"], written["user_factors"]
    assert got["als"][:2] == [SKUS, index] and got["als"][3] == {"u1": 0, "u2": 1}
    np.testing.assert_allclose(got["als"][2], factors)
    np.testing.assert_allclose(got["known_user"], users[0])
    y = factors[[0, 2]]           # implicit ALS's user update with confidence 1 + alpha for each item
    a = factors.T @ factors + written["alpha"] * y.T @ y + written["regularization"] * np.eye(DIM)
    np.testing.assert_allclose(got["folded_in"], np.linalg.solve(a, y.T @ np.full(2, 1 + written["alpha"])),
                               rtol=1e-4)
    assert got["nobody"] is None
