"""`make demo`: export a small model with predict, classify and regress signatures, serve it with
`sigserve serve`, and print curl lines that work. Ctrl-C stops the server.

The model (TF1-style SavedModel, like most models TF Serving serves), y = 2·x + 1:
- `serving_default` (predict): `x` float [-1] → `y` float [-1]
- `classify` (classify): serialized tf.Example with float feature `x` → `classes` ["low", "high"],
  `scores` [1 - p, p] with p = sigmoid(y)
- `regress` (regress): serialized tf.Example `x` → `outputs` = y

Environment: DEMO_REST_PORT (default 8501), DEMO_GRPC_PORT (default 8500), DEMO_MODEL_DIR (where the
model is exported, default examples/models/demo). Both ports are checked
before anything starts: a busy one is named, with the variable that moves the demo elsewhere.
TensorFlow's start-up log lines are hidden (sigserve's default); TF_CPP_MIN_LOG_LEVEL=0 shows them.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
BASE = pathlib.Path(os.environ.get("DEMO_MODEL_DIR") or HERE / "models" / "demo").resolve()
VERSION_DIR = BASE / "1"
ROOT = HERE.parent


def export_model(export_dir: pathlib.Path) -> None:
    """Write the demo SavedModel once (examples/models/ is git-ignored)."""
    from sigserve.runtime import tflog

    tf = tflog.import_tensorflow()
    tf.get_logger().setLevel("ERROR")  # the TF1 builder APIs below log deprecation notices

    v1 = tf.compat.v1
    tmp = export_dir.with_name(export_dir.name + ".tmp")
    graph = tf.Graph()
    with graph.as_default():
        w = v1.Variable(2.0, name="w")
        b = v1.Variable(1.0, name="b")
        x = v1.placeholder(tf.float32, shape=[None], name="x")
        y = tf.add(w * x, b, name="y")

        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        fx = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})["x"]
        ey = tf.add(w * fx, b, name="example_y")  # [-1, 1]
        p = tf.sigmoid(ey)
        scores = tf.concat([1.0 - p, p], axis=1, name="scores")
        classes = tf.tile(tf.constant([["low", "high"]]), [tf.shape(ey)[0], 1], name="classes")

        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils
        predict = sig.predict_signature_def({"x": x}, {"y": y})
        classify = sig.classification_signature_def(serialized, classes, scores)
        regress = sig.regression_signature_def(serialized, ey)
        assert info(x).name == "x:0"
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(tmp))
            builder.add_meta_graph_and_variables(
                session,
                ["serve"],
                signature_def_map={"serving_default": predict, "classify": classify, "regress": regress},
                strip_default_attrs=True,
            )
            builder.save()
    tmp.rename(export_dir)


def curl_lines(port: int) -> list[str]:
    base = f"localhost:{port}/v1/models/demo"
    return [
        f"curl {base}",
        f"curl {base}/metadata",
        f"curl -d '{{\"instances\": [1.0, 2.0, 5.0]}}' {base}:predict",
        f'curl -d \'{{"inputs": {{"x": [3.0]}}}}\' {base}/versions/1:predict',
        f'curl -d \'{{"signature_name": "classify", "examples": [{{"x": -2.0}}, {{"x": 0.5}}]}}\' '
        f"{base}:classify",
        f'curl -d \'{{"signature_name": "regress", "examples": [{{"x": 1.0}}, {{"x": 2.0}}]}}\' '
        f"{base}:regress",
        f"curl localhost:{port}/readyz",
        f"curl localhost:{port}/monitoring/prometheus/metrics",
    ]


def port_in_use(port: int) -> bool:
    """Whether `sigserve serve` could not bind `port` (it binds 0.0.0.0 with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as e:
            return e.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def busy_port_message(ports: dict[str, int]) -> str | None:
    """ "port 8501 is in use ..." for the first busy port of {variable: port}, else None."""
    for variable, port in ports.items():
        if port and port_in_use(port):
            return (
                f"demo: port {port} is in use (another sigserve, or an earlier `make demo`?): stop it, "
                f"or run the demo on another port: {variable}={port + 100 if port < 65400 else port - 100} "
                "make demo"
            )
    return None


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 300) -> bool:
    """Until *this* server's demo model is AVAILABLE; False if the server exits first. (`/readyz`
    alone could be answered by another server that took the port first.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/demo", timeout=2) as r:
                states = [v.get("state") for v in json.loads(r.read()).get("model_version_status", [])]
                if "AVAILABLE" in states:
                    return proc.poll() is None
        except (OSError, ValueError):
            pass
        time.sleep(0.25)
    return False


def try_example(port: int) -> str:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/demo:predict", data=b'{"instances": [1.0, 2.0, 5.0]}'
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.dumps(json.loads(r.read()))


def main() -> int:
    rest_port = int(os.environ.get("DEMO_REST_PORT", "8501"))
    grpc_port = int(os.environ.get("DEMO_GRPC_PORT", "8500"))
    try:
        import sigserve.server.grpc_server  # noqa: F401
    except ImportError:
        grpc_port = 0  # REST only until the gRPC front end is installed
    ports = {"DEMO_REST_PORT": rest_port, "DEMO_GRPC_PORT": grpc_port}
    busy = busy_port_message(ports)
    if busy:
        print(busy, file=sys.stderr)
        return 1
    if not VERSION_DIR.is_dir():
        print(f"demo: exporting the example model to {VERSION_DIR} (once) ...", flush=True)
        VERSION_DIR.parent.mkdir(parents=True, exist_ok=True)
        export_model(VERSION_DIR)
    cmd = [
        sys.executable,
        "-m",
        "sigserve.cli",
        "serve",
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        "--model_name=demo",
        f"--model_base_path={BASE}",
    ]
    print("demo: " + " ".join(cmd[2:]), flush=True)
    # SIGTERM (e.g. `timeout`) runs the `finally` below instead of leaving the server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    proc = subprocess.Popen(cmd, cwd=str(ROOT))
    try:
        if not wait_ready(rest_port, proc):
            # The port may have been taken between the check and the server's bind.
            busy = busy_port_message(ports) if proc.poll() is not None else None
            print(busy or "demo: the server did not become ready; see its log above", file=sys.stderr)
            return 1
        try:
            first = try_example(rest_port)
        except (OSError, ValueError) as e:
            print(f"demo: the first predict failed ({e}); see the server's log above", file=sys.stderr)
            return 1
        print(f"\ndemo: serving 'demo' (y = 2x + 1). {first} came back for the first line.")
        print("Try (Ctrl-C to stop):\n")
        for line in curl_lines(rest_port):
            print("  " + line)
        if grpc_port:
            print(f"\n  gRPC: localhost:{grpc_port} (tensorflow_serving.apis PredictionService)")
        print(flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        # A terminal's Ctrl-C already reached the server (same process group); a second SIGINT
        # would make it stop without finishing in-flight requests.
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            return proc.wait()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


if __name__ == "__main__":
    sys.exit(main())
