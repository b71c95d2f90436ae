"""deploy/k8s: the manifests parse, their probes and scrape path are real endpoints on a real container
port, termination outlasts the drain, the HPA scales on an exported metric, and there is a Job per task."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from service.__main__ import _CLOSE_GRACE_S
from tests.deploy.conftest import DEPLOY, TASKS, load_yaml_docs
from training.ensure import JOBS

K8S = DEPLOY / "k8s"


def by_kind() -> dict[str, list[dict]]:
    kustomization = load_yaml_docs(K8S / "kustomization.yaml")[0]
    out: dict[str, list[dict]] = {}
    for name in kustomization["resources"]:
        for doc in load_yaml_docs(K8S / name):
            out.setdefault(doc["kind"], []).append(doc)
    return out


def deployment() -> dict:
    (dep,) = by_kind()["Deployment"]
    return dep


def container(dep: dict) -> dict:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def test_every_manifest_parses_and_kustomization_lists_the_serving_stack() -> None:
    kustomization = load_yaml_docs(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "prometheus-adapter-rules.yaml"}
    assert listed == on_disk
    kinds = by_kind()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ServiceMonitor", "PersistentVolumeClaim"} <= set(kinds)
    for docs in kinds.values():
        for doc in docs:
            assert doc["apiVersion"] and doc["metadata"]["name"]


def test_probes_hit_real_endpoints_on_the_named_port(routes: set[str]) -> None:
    c = container(deployment())
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert ports["http"] == int(env["NLP_PORT"])
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] in routes and get["port"] in ports, probe


def test_termination_grace_outlasts_the_drain() -> None:
    dep = deployment()
    c = container(dep)
    env = {e["name"]: e["value"] for e in c["env"]}
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = int(pre_stop[1]) + float(env["NLP_DRAIN_TIMEOUT_S"]) + _CLOSE_GRACE_S
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > needed


def test_gpu_artifacts_and_non_root() -> None:
    dep = deployment()
    c = container(dep)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e["value"] for e in c["env"]}
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "artifacts"]
    assert mount["mountPath"] == env["NLP_ARTIFACTS_DIR"] and mount["readOnly"] is True
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_service_and_monitor_select_the_pods_and_scrape_metrics(routes: set[str]) -> None:
    kinds, dep = by_kind(), deployment()
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    (svc,) = kinds["Service"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in container(dep)["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    (monitor,) = kinds["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]} and endpoint["path"] in routes


def test_hpa_scales_the_deployment_on_the_exported_queue_size(exported: set[str]) -> None:
    (hpa,) = by_kind()["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment()["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name == "nlp_queue_size" and name in exported
    (rule,) = load_yaml_docs(K8S / "prometheus-adapter-rules.yaml")[0]["rules"]["custom"]
    assert rule["name"]["as"] == name and rule["seriesQuery"].startswith(name + "{")


def test_one_training_job_per_task() -> None:
    jobs = {}
    for path in sorted((K8S / "jobs").glob("*.yaml")):
        (job,) = load_yaml_docs(path)
        assert job["kind"] == "Job"
        spec = job["spec"]["template"]["spec"]
        assert spec["restartPolicy"] == "Never"
        (c,) = spec["containers"]
        module = c["command"][c["command"].index("-m") + 1]
        jobs[module.removeprefix("training.")] = c
        assert c["resources"]["limits"]["nvidia.com/gpu"] >= 1
        assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/app/artifacts"}
        assert c["command"][c["command"].index("--output-dir") + 1] == "/app/artifacts"
    assert set(JOBS) <= set(jobs) and set(jobs) <= TASKS


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds() -> None:
    done = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "kind: HorizontalPodAutoscaler" in done.stdout
