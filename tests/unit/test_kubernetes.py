"""The Kubernetes manifests of deploy/kubernetes, validated offline.

No cluster runs here. Each Kubernetes object is checked against the API's schemas
(kubernetes-validate, strict: an unknown field fails); the KEDA objects against the fields
of KEDA's ScaledObject and TriggerAuthentication (the subset written below, from KEDA's
published CRDs: kubernetes-validate does not carry them); and the objects against each
other: selectors, ports, probes, what each component may read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.34.0"


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file, object) for every object of every manifest."""
    out = []
    for path in sorted(FOLDER.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((str(path.relative_to(FOLDER)), doc))
    return out


DOCS = documents()
KUBERNETES = [(f, d) for f, d in DOCS
              if not d["apiVersion"].startswith(("keda.sh/", "kustomize.config.k8s.io/"))]
KEDA = [(f, d) for f, d in DOCS if d["apiVersion"].startswith("keda.sh/")]


def named(kind: str, name: str) -> dict[str, Any]:
    """The one object of this kind and name."""
    [doc] = [d for _, d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_every_manifest_is_read() -> None:
    kinds = sorted(d["kind"] for _, d in DOCS)
    assert kinds.count("Deployment") == 3
    assert {"Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject",
            "TriggerAuthentication", "Kustomization"} <= set(kinds)


@pytest.mark.parametrize(("file", "doc"), KUBERNETES,
                         ids=[f"{f}:{d['kind']}" for f, d in KUBERNETES])
def test_valid_against_the_kubernetes_api(file: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_an_unknown_field() -> None:
    broken = yaml.safe_load((FOLDER / "worker.yaml").read_text())
    broken["spec"]["replica"] = 3  # for replicas
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# ---- KEDA (keda.sh/v1alpha1): the fields these manifests use, as KEDA's CRDs define them

_INT = {"type": "integer", "format": "int32"}
_POLICIES = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "stabilizationWindowSeconds": {**_INT, "minimum": 0, "maximum": 3600},
        "selectPolicy": {"type": "string", "enum": ["Max", "Min", "Disabled"]},
        "policies": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["type", "value", "periodSeconds"],
            "properties": {"type": {"type": "string", "enum": ["Pods", "Percent"]},
                           "value": {**_INT, "minimum": 1},
                           "periodSeconds": {**_INT, "minimum": 1, "maximum": 1800}}}},
    },
}
_METADATA = {"type": "object", "required": ["name"],
             "properties": {"name": {"type": "string"}}}
SCALED_OBJECT = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": {
            "type": "object", "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object", "additionalProperties": False, "required": ["name"],
                    "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                   "apiVersion": {"type": "string"},
                                   "envSourceContainerName": {"type": "string"}}},
                "minReplicaCount": _INT, "maxReplicaCount": _INT, "idleReplicaCount": _INT,
                "pollingInterval": _INT, "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "advanced": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object", "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {
                                    "type": "object", "additionalProperties": False,
                                    "properties": {"scaleUp": _POLICIES,
                                                   "scaleDown": _POLICIES}}}}}},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["type", "metadata"],
                    "properties": {
                        "type": {"type": "string"}, "name": {"type": "string"},
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                        "useCachedMetrics": {"type": "boolean"},
                        "metadata": {"type": "object",
                                     "additionalProperties": {"type": "string"}},
                        "authenticationRef": {
                            "type": "object", "additionalProperties": False,
                            "required": ["name"],
                            "properties": {"name": {"type": "string"},
                                           "kind": {"enum": ["TriggerAuthentication",
                                                             "ClusterTriggerAuthentication"]}}},
                    }}},
            },
        },
    },
}
TRIGGER_AUTHENTICATION = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "TriggerAuthentication"},
        "metadata": _METADATA,
        "spec": {"type": "object", "additionalProperties": False, "properties": {
            "secretTargetRef": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "required": ["parameter", "name", "key"],
                "properties": {"parameter": {"type": "string"}, "name": {"type": "string"},
                               "key": {"type": "string"}}}}}},
    },
}
KEDA_SCHEMAS = {"ScaledObject": SCALED_OBJECT, "TriggerAuthentication": TRIGGER_AUTHENTICATION}
# what KEDA's postgresql scaler reads from a trigger's metadata
POSTGRESQL_METADATA = {"query", "targetQueryValue", "activationTargetQueryValue",
                       "connectionFromEnv", "host", "port", "userName", "passwordFromEnv",
                       "dbName", "sslmode"}


@pytest.mark.parametrize(("file", "doc"), KEDA, ids=[f"{f}:{d['kind']}" for f, d in KEDA])
def test_valid_keda_objects(file: str, doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])


def test_the_keda_schema_refuses_what_keda_would() -> None:
    scaled = named("ScaledObject", "taskmaster-worker")
    for broken in ({**scaled, "spec": {**scaled["spec"], "minReplicas": 1}},
                   {**scaled, "spec": {"triggers": scaled["spec"]["triggers"]}},
                   {**scaled, "spec": {**scaled["spec"], "pollingInterval": "5"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCALED_OBJECT)


def test_the_scaled_object_scales_the_workers_on_the_queue() -> None:
    scaled = named("ScaledObject", "taskmaster-worker")["spec"]
    named("Deployment", scaled["scaleTargetRef"]["name"])
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "postgresql"
    assert set(trigger["metadata"]) <= POSTGRESQL_METADATA
    assert float(trigger["metadata"]["targetQueryValue"]) > 0
    auth = named("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert [r["parameter"] for r in auth["spec"]["secretTargetRef"]] == ["connection"]
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    hpa = named("HorizontalPodAutoscaler", "taskmaster-worker")["spec"]
    assert hpa["scaleTargetRef"]["name"] == scaled["scaleTargetRef"]["name"]


# ---- the objects agree with each other and with the components

def containers(deployment: str) -> list[dict[str, Any]]:
    """The containers of a Deployment's pods."""
    return list(named("Deployment", deployment)["spec"]["template"]["spec"]["containers"])


def env_names(deployment: str) -> set[str]:
    """The environment variables a Deployment's containers get."""
    return {e["name"] for c in containers(deployment) for e in c.get("env", [])}


@pytest.mark.parametrize("name", ["taskmaster-coordinator", "taskmaster-scheduler",
                                  "taskmaster-worker"])
def test_deployments_select_their_own_pods(name: str) -> None:
    spec = named("Deployment", name)["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"]:
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe"):
            target = c.get(probe, {})
            port = (target.get("httpGet") or target.get("grpc") or {}).get("port")
            if port is not None:
                assert port in ports or port in ports.values(), (probe, port)


def test_services_and_budgets_select_existing_pods() -> None:
    pods = [d["spec"]["template"]["metadata"]["labels"] for _, d in DOCS
            if d["kind"] == "Deployment"]
    for _, doc in DOCS:
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
        elif doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]["matchLabels"]
        else:
            continue
        assert any(selector.items() <= labels.items() for labels in pods), doc["metadata"]


def test_workers_dial_every_coordinator_through_the_headless_service() -> None:
    [worker] = containers("taskmaster-worker")
    args = worker["args"]
    target = args[args.index("--coordinator") + 1]
    assert target.startswith("dns:///")
    host, port = target.removeprefix("dns:///").rsplit(":", 1)
    service = named("Service", host)
    assert service["spec"]["clusterIP"] == "None"
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    assert named("Deployment", "taskmaster-coordinator")["spec"]["replicas"] >= 2


def test_workers_get_the_cluster_token_only() -> None:
    assert "TASKMASTER_CLUSTER_TOKEN" in env_names("taskmaster-worker")
    assert not {"TASKMASTER_DATABASE_URL", "TASKMASTER_API_TOKEN",
                "TASKMASTER_API_READ_TOKEN"} & env_names("taskmaster-worker")
    grace = named("Deployment", "taskmaster-worker")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"]
    drain = next(float(e["value"]) for c in containers("taskmaster-worker")
                 for e in c["env"] if e["name"] == "TASKMASTER_DRAIN_GRACE")
    assert grace > drain  # a worker scaled down finishes its tasks before it is killed


def test_the_components_run_the_commands_the_cli_has() -> None:
    from taskmaster.cli import build_parser

    parser = build_parser()
    for name in ("taskmaster-coordinator", "taskmaster-scheduler", "taskmaster-worker"):
        [container] = containers(name)
        assert container["args"][0] == "taskmaster"
        parser.parse_args(container["args"][1:])  # exits on an unknown flag
