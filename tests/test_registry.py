"""The model registry: register, promote, one live version per kind, retire."""

import uuid

import pytest

from recsys import registry


def test_register_promote_and_retire(pg):
    kind = f"test-{uuid.uuid4().hex[:6]}"
    a = registry.register(pg, f"{kind}-a", kind, "file:///tmp/a", {"dim": 64}, {"ndcg@10": 0.05})
    assert a.stage == "candidate" and a.config == {"dim": 64} and a.metrics["ndcg@10"] == 0.05
    assert registry.live(pg, kind) is None
    registry.set_stage(pg, a.version, "live")
    b = registry.register(pg, f"{kind}-b", kind, "file:///tmp/b")
    registry.set_stage(pg, b.version, "live")
    assert registry.live(pg, kind).version == b.version
    assert registry.get(pg, a.version).stage == "retired"
    assert [m.version for m in registry.list_models(pg, kind)] == [a.version, b.version]
    with pytest.raises(ValueError, match="stage must be"):
        registry.set_stage(pg, b.version, "production")
    with pytest.raises(KeyError):
        registry.get(pg, "no-such-version")
