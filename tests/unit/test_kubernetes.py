"""The Kubernetes manifests of deploy/kubernetes, validated offline.

No cluster runs here. Each Kubernetes object is checked against the API's schemas
(kubernetes-validate, strict: an unknown field fails); the ScaledObject against KEDA's
published CRD schema kept in tests/data (kubernetes-validate does not carry KEDA's), the
TriggerAuthentication against the fields of its CRD written below; and the objects against
each other: selectors, ports, probes, what each component may read.
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


# ---- KEDA (keda.sh/v1alpha1): the ScaledObject against KEDA's CRD schema (kept in
# tests/data), the TriggerAuthentication against the fields of KEDA's CRD it uses

CRD = Path(__file__).resolve().parents[1] / "data" / "keda-scaledobject-crd.yaml"
_METADATA = {"type": "object", "required": ["name"],
             "properties": {"name": {"type": "string"}}}


def strict(schema: Any) -> Any:
    """A CRD's structural schema as JSON Schema that refuses unknown fields, as `kubectl
    apply` does (strict field validation): every object with properties gets
    additionalProperties: false unless it preserves unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()
           if not k.startswith("x-kubernetes-") and k != "format"}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_schema() -> dict[str, Any]:
    """The ScaledObject's v1alpha1 schema from the kept CRD, as strict JSON Schema."""
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["names"]["kind"] == "ScaledObject"
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    schema["properties"]["apiVersion"] = {"const": "keda.sh/v1alpha1"}
    schema["properties"]["kind"] = {"const": "ScaledObject"}
    schema["properties"]["metadata"] = _METADATA
    return dict(schema)


SCALED_OBJECT = crd_schema()
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
    spec = scaled["spec"]
    trigger = spec["triggers"][0]
    for broken in ({**scaled, "spec": {**spec, "minReplicas": 1}},
                   {**scaled, "spec": {"triggers": spec["triggers"]}},
                   {**scaled, "spec": {**spec, "pollingInterval": "5"}},
                   {**scaled, "spec": {**spec, "triggers": [{**trigger, "metadata": {
                       **trigger["metadata"], "targetQueryValue": 4}}]}},
                   {**scaled, "spec": {**spec, "advanced": {"horizontalPodAutoscalerConfig": {
                       "behavior": {"scaleDown": {"stabilizationWindow": 60}}}}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCALED_OBJECT)


def test_the_hpa_keda_makes_is_valid() -> None:
    """KEDA copies the ScaledObject's bounds and behavior into the HPA it creates: that HPA
    passes the Kubernetes API's own checks (the CRD only knows the types)."""
    spec = named("ScaledObject", "taskmaster-worker")["spec"]
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "keda-hpa-taskmaster-worker"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": spec["scaleTargetRef"]["name"]},
                    "minReplicas": spec["minReplicaCount"], "maxReplicas": spec["maxReplicaCount"],
                    "metrics": [{"type": "External", "external": {
                        "metric": {"name": "s0-postgresql"},
                        "target": {"type": "AverageValue",
                                   "averageValue": spec["triggers"][0]["metadata"][
                                       "targetQueryValue"]}}}],
                    "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]}}
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


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
