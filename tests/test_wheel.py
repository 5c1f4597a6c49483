"""The install line a user copies (issue 21, item 11): `python -m build` makes an sdist and a wheel;
the wheel, installed into fresh virtual environments, gives

- a core install (no TensorFlow, its dependencies resolved from the package index as a user's pip
  would) on which `show`, `validate`, `signature`, `predict` and both Python clients work, and `run`
  and `serve` say which extra to install;
- with the `[tensorflow]` extra, a server. To stay fast, that venv reuses the TensorFlow (and the
  other dependencies) already installed in the test environment: the wheel goes in with --no-deps
  and a .pth file appends this environment's site-packages; a pip dry run checks that the extra's
  requirements are then satisfied.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator

import httpx
import pytest

from sigserve.saved_model import loader
from tests.conftest import ROOT, free_port
from tests.grpc_servers import grpc_target, start_server
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow

HPT = "saved_model_half_plus_two_cpu"


def _run(*argv: str | pathlib.Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, cwd="/")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    out = tmp_path_factory.mktemp("dist")
    proc = _run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # setuptools>=77 warns about `license = { text = ... }` (a TOML table) on every build.
    assert "project.license" not in proc.stdout + proc.stderr
    wheels, sdists = list(out.glob("sigserve-*.whl")), list(out.glob("sigserve-*.tar.gz"))
    assert len(wheels) == len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def _venv(path: pathlib.Path) -> pathlib.Path:
    proc = _run(sys.executable, "-m", "venv", path)
    assert proc.returncode == 0, proc.stderr
    return path / "bin"


@pytest.fixture(scope="module")
def core(dist: dict[str, pathlib.Path], tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    bin_dir = _venv(tmp_path_factory.mktemp("venv") / "core")
    proc = _run(bin_dir / "python", "-m", "pip", "install", "--quiet", dist["wheel"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return bin_dir


@pytest.fixture(scope="module")
def server(fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("wheel_server") / "models.config"
    proc = start_server(config, [(HPT, fixtures_dir / HPT, {})])
    yield proc
    proc.stop()
    proc.cleanup()


def test_core_install_has_no_tensorflow_and_its_commands_work(
    core: pathlib.Path, fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    probe = _run(core / "python", "-c", "import importlib.util as u; print(u.find_spec('tensorflow'))")
    assert probe.stdout == "None\n", probe.stderr
    model = fixtures_dir / HPT / "00000123"

    show = _run(core / "sigserve", "show", "--dir", model, "--all")
    assert show.returncode == 0, show.stderr
    dev_show = _run(sys.executable, "-m", "sigserve.cli", "show", "--dir", model, "--all")
    assert show.stdout == dev_show.stdout

    validate = _run(core / "sigserve", "validate", "--dir", model)
    assert validate.returncode == 0, validate.stderr
    assert "signature_def['classify_x_to_y'] (method_name: tensorflow/serving/classify)" in validate.stdout

    edited = tmp_path / "m"
    rename = _run(
        core / "sigserve", "signature", "rename", "--dir", model, "--output_dir", edited,
        "--key", "regress_x_to_y", "--new_key", "regress",
    )  # fmt: skip
    assert rename.returncode == 0, rename.stderr
    assert "regress" in loader.read_saved_model(edited).meta_graphs[0].signature_def

    run = _run(
        core / "sigserve", "run", "--dir", model, "--signature_def", "serving_default", "--input_exprs", "x=1"
    )
    serve = _run(
        core / "sigserve", "serve", "--port=0", f"--rest_api_port={free_port()}", "--model_base_path=/m"
    )
    for proc in (run, serve):
        assert proc.returncode == 1
        assert "pip install 'sigserve[tensorflow]'" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_core_install_clients(core: pathlib.Path, server: ServerProcess) -> None:
    for args in (["--server", grpc_target(server)], ["--rest", "--server", f"127.0.0.1:{server.rest_port}"]):
        proc = _run(core / "sigserve", "predict", *args, "--model", HPT, "--input", "x=[[1.0], [2.0]]")
        assert (proc.returncode, proc.stdout) == (0, "Result for output key y:\n[[2.5]\n [3. ]]\n"), (
            proc.stderr
        )
    code = (
        "import sys\n"
        "from sigserve.client import Client, RestClient\n"
        "g = Client(sys.argv[1], timeout=60).predict(sys.argv[3], {'x': [[1.0]]})['y']\n"
        "r = RestClient(sys.argv[2], timeout=60).predict(sys.argv[3], {'x': [[1.0]]})['y']\n"
        "print(g.tolist(), r.tolist(), 'tensorflow' in sys.modules)\n"
    )
    proc = _run(core / "python", "-c", code, grpc_target(server), f"127.0.0.1:{server.rest_port}", HPT)
    assert (proc.returncode, proc.stdout) == (0, "[[2.5]] [[2.5]] False\n"), proc.stderr


def test_tensorflow_extra_serves(
    dist: dict[str, pathlib.Path], fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    bin_dir = _venv(tmp_path / "tf")
    proc = _run(bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-deps", dist["wheel"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    own = _run(bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    site = pathlib.Path(own.stdout.strip())
    (site / "zz_reuse_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = _run(bin_dir / "python", "-c", "import sigserve; print(sigserve.__file__)")
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr  # the wheel, not this checkout
    dry = _run(
        bin_dir / "python", "-m", "pip", "install", "--dry-run", "--no-index", f"{dist['wheel']}[tensorflow]"
    )
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert "Would install" not in dry.stdout or "tensorflow" not in dry.stdout.split("Would install")[1]

    port = free_port()
    serve = subprocess.Popen(
        [
            str(bin_dir / "sigserve"), "serve", "--port=0", f"--rest_api_port={port}",
            "--rest_api_host=127.0.0.1", f"--model_name={HPT}", f"--model_base_path={fixtures_dir / HPT}",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        answer = None
        with httpx.Client(timeout=5) as http:
            while answer is None:
                assert serve.poll() is None and time.monotonic() < deadline, (
                    "server exited or never got ready"
                )
                try:
                    response = http.post(
                        f"http://127.0.0.1:{port}/v1/models/{HPT}:predict", json={"instances": [1.0, 2.0]}
                    )
                    if response.status_code == 200:
                        answer = response.json()
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        assert answer == {"predictions": [2.5, 3.0]}
    finally:
        serve.terminate()
        out, _ = serve.communicate(timeout=60)
    assert serve.returncode == 0, out
    assert "Traceback" not in out


def test_sdist_has_the_sources_and_no_local_state(dist: dict[str, pathlib.Path]) -> None:
    import tarfile

    with tarfile.open(dist["sdist"]) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert "pyproject.toml" in names and "src/sigserve/cli.py" in names
    assert "src/sigserve/protos/predict.proto" in names
    assert not [n for n in names if n.startswith((".venv", "examples/models", "build/"))]
