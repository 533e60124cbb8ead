"""The specs in cluster/: no Ray head exposes its dashboard / job server without token authentication,
no token is ever written into a spec, and the RayService deploys exactly what `serve build` makes of
the application today."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
SPECS = sorted(CLUSTER.glob("*.yaml"))


def documents():
    for path in SPECS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def find(node, key):
    """Every value under `key` anywhere in a parsed YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from find(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from find(item, key)


def containers(group: dict) -> list[dict]:
    return group.get("template", {}).get("spec", {}).get("containers", [])


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def kuberay_token_auth(cluster_spec: dict, group: dict) -> bool:
    """authOptions mode token (KubeRay manages the Secret), or RAY_AUTH_MODE=token with RAY_AUTH_TOKEN
    (or RAY_AUTH_TOKEN_PATH) taken from a Secret on the group's Ray container."""
    if (cluster_spec.get("authOptions") or {}).get("mode") == "token":
        return True
    env = env_of(containers(group)[0])
    token = env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH") or {}
    from_secret = "secretKeyRef" in (token.get("valueFrom") or {}) or "RAY_AUTH_TOKEN_PATH" in env
    return env.get("RAY_AUTH_MODE", {}).get("value") == "token" and from_secret


def test_the_specs_are_there():
    names = {p.name for p in SPECS}
    assert {"kuberay-raycluster.yaml", "kuberay-rayservice.yaml", "kuberay-rayjob.yaml", "ray-cluster.yaml",
            "serve-config.yaml"} <= names


def test_every_kuberay_head_on_all_interfaces_has_token_auth():
    heads = 0
    for path, doc in documents():
        specs = [doc["spec"]] if "headGroupSpec" in (doc.get("spec") or {}) else []
        specs += list(find(doc, "rayClusterConfig"))   # a RayService's cluster
        specs += list(find(doc, "rayClusterSpec"))     # a RayJob's cluster
        for spec in specs:
            head = spec["headGroupSpec"]
            heads += 1
            params = {k: str(v).lower() for k, v in (head.get("rayStartParams") or {}).items()}
            # KubeRay starts the dashboard on 0.0.0.0 unless told otherwise.
            exposed = (params.get("include-dashboard", "true") != "false"
                       and params.get("dashboard-host", "0.0.0.0") in ("0.0.0.0", "::"))
            if exposed:
                assert kuberay_token_auth(spec, head), f"{path.name}: the head's dashboard has no token auth"
                # Every node must run in the same mode with the same token, or workers cannot join.
                for group in spec.get("workerGroupSpecs", []):
                    assert kuberay_token_auth(spec, group), f"{path.name}: worker group {group['groupName']}"
    assert heads >= 3      # the RayCluster, the RayService and the RayJob


def test_every_launcher_head_on_all_interfaces_has_token_auth():
    checked = 0
    for path, doc in documents():
        for commands in find(doc, "head_start_ray_commands"):
            for command in commands:
                if "ray start --head" in command and re.search(r"--dashboard-host[= ](0\.0\.0\.0|::)", command):
                    checked += 1
                    assert re.search(r"\bRAY_AUTH_MODE=token\b", command), f"{path.name}: {command}"
                    # The token comes from a file on the node: the default path, mounted from the launcher.
                    mounts = doc.get("file_mounts") or {}
                    assert "RAY_AUTH_TOKEN_PATH=" in command or "~/.ray/auth_token" in mounts, path.name
        for commands in find(doc, "worker_start_ray_commands"):
            for command in commands:
                if "ray start" in command:
                    assert re.search(r"\bRAY_AUTH_MODE=token\b", command), f"{path.name}: {command}"
    assert checked >= 1


def test_no_spec_contains_a_token():
    for path in SPECS:
        text = path.read_text()
        # A literal token: an env entry with a value, or an assignment on a command line.
        assert not re.search(r"name:\s*RAY_AUTH_TOKEN\s*,\s*value:", text), path.name
        assert not re.search(r"RAY_AUTH_TOKEN=(?!\"?\$)", text), path.name
        assert not re.search(r"Bearer [A-Za-z0-9_\-]{16,}", text), path.name
    for path, doc in documents():
        for env_vars in find(doc, "env_vars"):
            assert not {"RAY_AUTH_TOKEN", "RAY_AUTH_MODE"} & set(env_vars or {}), path.name


def _doc(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def test_the_rayjob_runs_the_nightly_job_and_its_submitter_authenticates():
    job = _doc("kuberay-rayjob.yaml")
    assert job["kind"] == "RayJob" and job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["entrypoint"].split()[:2] in (["recsys", "nightly"], ["python", "-m"])
    submitter = env_of(job["spec"]["submitterPodTemplate"]["spec"]["containers"][0])
    assert submitter["RAY_AUTH_MODE"]["value"] == "token"
    assert "secretKeyRef" in submitter["RAY_AUTH_TOKEN"]["valueFrom"]


def test_the_rayservice_deploys_a_fresh_serve_build(tmp_path):
    """cluster/serve-config.yaml is what `serve build recsys.serve.app:cluster_app` writes now, and the
    RayService's serveConfigV2 is that file. To refresh both after a change to conf/serve or the app:
    `serve build recsys.serve.app:cluster_app -o cluster/serve-config.yaml`, then paste it into
    cluster/kuberay-rayservice.yaml (docs/cluster.md)."""
    serve_cli = Path(sys.executable).with_name("serve")
    fresh = tmp_path / "serve-config.yaml"
    built = subprocess.run([str(serve_cli), "build", "recsys.serve.app:cluster_app", "-o", str(fresh)],
                           capture_output=True, text=True, timeout=120, cwd=CLUSTER.parent)
    assert built.returncode == 0, built.stderr[-2000:]
    checked_in = (CLUSTER / "serve-config.yaml").read_text()
    assert checked_in == fresh.read_text(), "cluster/serve-config.yaml is not a fresh `serve build` (see the docstring)"
    assert _doc("kuberay-rayservice.yaml")["spec"]["serveConfigV2"] == checked_in
    app = yaml.safe_load(checked_in)["applications"][0]
    api = next(d for d in app["deployments"] if d["name"] == "recsys_api")
    assert api["autoscaling_config"]["min_replicas"] < api["autoscaling_config"]["max_replicas"]
    assert api["max_replicas_per_node"] >= 1
