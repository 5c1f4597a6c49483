"""The deploy/ containers, run: what the pod would do, replayed as a process on loopback.

For the KServe runtime: render `{{.Name}}` from the example InferenceService's metadata as the
controller does, stage the model under a stand-in for `/mnt/models` the way the storage initializer
leaves it (numbered version directory, read-only), and start the container's exact `command` +
`args` (ports 8080/9000 swapped for free ones, and the two bind-address flags appended, as an
InferenceService's own args would be). Then: the readiness probe's path is 503 while the port is
already open and the model is missing (why the runtime cannot rely on KServe's default TCP check),
200 once the version is there; REST predict answers on the 8080 stand-in, gRPC Predict and
GetModelStatus on the 9000 stand-in (TF Serving's own stubs), the metrics annotation's path serves
Prometheus text, and nothing is written into the model directory. The same for the plain Kubernetes
Deployment. Every flag of KServe's stock TF Serving runtime is in these args (test_deploy_manifests
checks the lists are equal), so a clean start proves sigserve accepts them all.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port
from tests.deploy_files import DEPLOY, KSERVE_FIXTURES, STOCK_TF_RUNTIME, flag_values, load_yaml, render

pytestmark = pytest.mark.tf

BIN = pathlib.Path(sys.executable).parent
MODEL = "saved_model_half_plus_two_cpu"
VERSION = "00000123"


def tree_state(root: pathlib.Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def make_read_only(root: pathlib.Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)


def localize(args: list[str], ports: dict[int, int], paths: dict[str, str]) -> list[str]:
    """The container's args with its ports and mount paths swapped for this machine's."""
    out = []
    for arg in args:
        name, value = arg[2:].split("=", 1)
        if name in ("port", "rest_api_port") and int(value) in ports:
            value = str(ports[int(value)])
        for mount, local in paths.items():
            if value == mount or value.startswith(mount + "/"):
                value = local + value[len(mount) :]
        out.append(f"--{name}={value}")
    return [*out, "--rest_api_host=127.0.0.1", "--grpc_host=127.0.0.1"]


class Container:
    """A container's command + args as a process; the command is found on the venv's PATH, as the
    image's `sigserve` console script is on the image's."""

    def __init__(self, command: list[str], args: list[str], log: pathlib.Path) -> None:
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        exe = shutil.which(command[0], path=env["PATH"])
        assert exe is not None, f"{command[0]} is not on PATH"
        self.log = log
        self._log_file = open(log, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            [exe, *command[1:], *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(log.parent),  # not the repository: the image has no checkout
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_status(self, url: str, status: int, timeout: float = 180.0) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.output()}")
            try:
                last = httpx.get(url, timeout=5)
                if last.status_code == status:
                    return last
            except httpx.TransportError as e:
                last = e
            time.sleep(0.1)
        raise AssertionError(f"{url} never answered {status} (last: {last!r}):\n{self.output()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log_file.close()
        return rc


@pytest.fixture
def model_source(fixtures_dir: pathlib.Path) -> pathlib.Path:
    return fixtures_dir / MODEL / VERSION


@pytest.fixture
def stock_args() -> list[str]:
    if not (KSERVE_FIXTURES / STOCK_TF_RUNTIME).is_file():
        pytest.skip(f"KServe's TF Serving runtime not found in {KSERVE_FIXTURES} (../shared is absent)")
    stock = load_yaml(KSERVE_FIXTURES / STOCK_TF_RUNTIME)
    return list(stock["spec"]["containers"][0]["args"])


@pytest.fixture
def started() -> Iterator[list[Container]]:
    containers: list[Container] = []
    yield containers
    for c in containers:
        c.stop()


def check_apis(name: str, rest: str, grpc_target: str) -> None:
    """REST and gRPC predict on half_plus_two (y = x/2 + 2) with TF Serving's clients' wire formats."""
    import grpc
    import numpy as np
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    r = httpx.post(f"{rest}/v1/models/{name}:predict", json={"instances": [1.0, 2.0, 5.0]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}

    with grpc.insecure_channel(grpc_target) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs["x"].CopyFrom(_tensor_proto(np.array([[1.0], [3.0]], np.float32)))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        y = response.outputs["y"]
        assert list(y.float_val) == [2.5, 3.5] or np.frombuffer(y.tensor_content, np.float32).tolist() == [
            2.5,
            3.5,
        ]
        assert response.model_spec.version.value == int(VERSION)
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = name
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=30)
        assert [(v.version, v.state) for v in status.model_version_status] == [
            (int(VERSION), get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        ]


def _tensor_proto(array: Any) -> Any:
    from tensorflow.core.framework import tensor_pb2  # the classes TF Serving's stubs carry

    from sigserve.codec.tensor import from_ndarray

    proto = tensor_pb2.TensorProto()
    proto.ParseFromString(from_ndarray(array).SerializeToString())
    return proto


def test_kserve_runtime_container_serves_the_isvc(
    tmp_path: pathlib.Path, model_source: pathlib.Path, stock_args: list[str], started: list[Container]
) -> None:
    runtime = load_yaml(DEPLOY / "kserve" / "servingruntime.yaml")
    isvc = load_yaml(DEPLOY / "kserve" / "inferenceservice.yaml")
    (spec,) = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    c = render(spec, isvc["metadata"])
    name = isvc["metadata"]["name"]
    assert flag_values(c["args"])["model_name"] == name
    # The stock runtime's flags, rendered the same way, are exactly the ones this container runs.
    assert render(stock_args, isvc["metadata"]) == c["args"]

    mnt = tmp_path / "mnt" / "models"  # the storage initializer's emptyDir, still empty
    mnt.mkdir(parents=True)
    rest_port, grpc_port = free_port(), free_port()
    args = localize(c["args"], {8080: rest_port, 9000: grpc_port}, {"/mnt/models": str(mnt)})
    container = Container(c["command"], args, tmp_path / "kserve-container.log")
    started.append(container)

    rest = f"http://127.0.0.1:{rest_port}"
    probe = c["readinessProbe"]["httpGet"]
    assert probe["port"] == 8080
    # The REST port is open and alive while there is no model: a TCP probe would say ready.
    container.wait_status(rest + c["livenessProbe"]["httpGet"]["path"], 200)
    assert httpx.get(rest + probe["path"], timeout=5).status_code == 503

    staged = tmp_path / "staging" / VERSION
    shutil.copytree(model_source, staged)
    make_read_only(staged)
    os.rename(staged, mnt / VERSION)  # appears whole, as a download finished into place would
    make_read_only(mnt)
    before = tree_state(mnt)
    ready = container.wait_status(rest + probe["path"], 200)
    assert ready.json()["models"] == {name: "AVAILABLE"}

    check_apis(name, rest, f"127.0.0.1:{grpc_port}")
    metrics = runtime["spec"]["annotations"]
    assert metrics["prometheus.kserve.io/port"] == "8080"
    m = httpx.get(rest + metrics["prometheus.kserve.io/path"], timeout=10)
    assert m.status_code == 200 and f'model_name="{name}"' in m.text
    assert tree_state(mnt) == before  # nothing written next to the model

    assert container.stop() == 0
    log = container.output()
    assert "unrecognized arguments" not in log and "accepted for compatibility" not in log, log


def test_k8s_deployment_container_serves_the_model(
    tmp_path: pathlib.Path, model_source: pathlib.Path, started: list[Container]
) -> None:
    dep = load_yaml(DEPLOY / "k8s" / "deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "models"]
    flags = flag_values(c["args"])
    models = tmp_path / "models"
    base = models / pathlib.PurePosixPath(flags["model_base_path"]).relative_to(mount["mountPath"])
    shutil.copytree(model_source, base / VERSION)
    make_read_only(models)
    before = tree_state(models)

    rest_port, grpc_port = free_port(), free_port()
    ports = {int(flags["rest_api_port"]): rest_port, int(flags["port"]): grpc_port}
    container = Container(
        c["command"], localize(c["args"], ports, {mount["mountPath"]: str(models)}), tmp_path / "pod.log"
    )
    started.append(container)
    rest = f"http://127.0.0.1:{rest_port}"
    container.wait_status(rest + c["readinessProbe"]["httpGet"]["path"], 200)
    assert httpx.get(rest + c["livenessProbe"]["httpGet"]["path"], timeout=5).status_code == 200
    check_apis(flags["model_name"], rest, f"127.0.0.1:{grpc_port}")
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert httpx.get(rest + annotations["prometheus.io/path"], timeout=10).status_code == 200
    assert tree_state(models) == before
    assert container.stop() == 0


def test_localize_swaps_only_ports_and_mounts() -> None:
    args = ["--model_name=m", "--port=9000", "--rest_api_port=8080", "--model_base_path=/mnt/models"]
    out = localize(args, {8080: 1, 9000: 2}, {"/mnt/models": "/tmp/x"})
    assert out == [
        "--model_name=m",
        "--port=2",
        "--rest_api_port=1",
        "--model_base_path=/tmp/x",
        "--rest_api_host=127.0.0.1",
        "--grpc_host=127.0.0.1",
    ]
    assert localize(["--model_base_path=/mnt/models2"], {}, {"/mnt/models": "/x"})[0].endswith("/mnt/models2")
    assert str(ROOT) not in " ".join(out)
