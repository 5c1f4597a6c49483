"""Models in S3: a real S3-API server on 127.0.0.1 (moto's ThreadedMotoServer, started here), the real
s3fs/boto3 clients, real TensorFlow loads, and the real `sigserve` entry point for the process-level
tests (issue 16's acceptance list; README "Object storage")."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from sigserve import storage
from sigserve.errors import Code, SigserveError
from sigserve.manager import ManualClock, ServableState
from sigserve.service import Metrics
from tests.conftest import free_port
from tests.manager_helpers import (
    FAST,
    POLL,
    POLL_WAIT,
    Attempts,
    model_config,
    raises,
    running,
    served_version,
    status_of,
)
from tests.servers import ROOT, ServerProcess

pytest.importorskip("s3fs", reason="needs sigserve[s3]")
moto_server = pytest.importorskip("moto.server", reason="needs moto[server]")
boto3 = pytest.importorskip("boto3")

S = ServableState
pytestmark = pytest.mark.slow


@dataclasses.dataclass
class S3:
    endpoint: str
    env: dict[str, str]
    client: Any

    def bucket(self) -> str:
        name = f"models-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=name)
        return name

    def upload(
        self, bucket: str, prefix: str, src: pathlib.Path, only: tuple[str, ...] | None = None
    ) -> list[str]:
        """Put the files under `src` at s3://bucket/prefix/...; `only`: just these relative paths."""
        keys = []
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = path.relative_to(src).as_posix()
            if only is None or rel in only:
                self.client.upload_file(str(path), bucket, f"{prefix}/{rel}")
                keys.append(rel)
        return keys

    def delete(self, bucket: str, prefix: str) -> None:
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
        for item in listed.get("Contents", []):
            self.client.delete_object(Bucket=bucket, Key=item["Key"])

    @contextlib.contextmanager
    def authentication(self) -> Iterator[None]:
        """Make the server check credentials against its IAM users (moto's reset-auth switch)."""
        post(f"{self.endpoint}/moto-api/reset-auth", b"0")
        try:
            yield
        finally:
            post(f"{self.endpoint}/moto-api/reset-auth", b"inf")


def post(url: str, body: bytes) -> None:
    headers = {"Content-Type": "text/plain"}  # not a form: moto reads the raw body
    urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST"), timeout=10).read()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "sigserve-test",
        "AWS_SECRET_ACCESS_KEY": "sigserve-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        # Nothing from this machine's own AWS set-up may leak in.
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        client = boto3.client("s3", endpoint_url=endpoint)
        yield S3(endpoint, env, client)
    server.stop()


def cached_versions(cache: pathlib.Path) -> list[str]:
    """The staged version directories under a --model_cache_dir."""
    return sorted(p.name.rsplit("-", 1)[0] for p in cache.glob("*/*") if p.is_dir())


# -- the manager on s3:// ----------------------------------------------------------------------------


def test_a_model_on_s3_is_served_and_its_local_copy_removed_when_it_unloads(
    s3: S3, versions_src: dict[int, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    bucket = s3.bucket()
    s3.upload(bucket, "models/m/1", versions_src[1])
    cache = tmp_path / "cache"
    metrics = Metrics()
    base = f"s3://{bucket}/models/m"
    options = {"model_cache_dir": str(cache), "load_observer": metrics, **FAST}
    with running(model_config(("m", base)), **options) as (core, events):  # type: ignore[arg-type]
        assert served_version(core, "m") == 1
        assert cached_versions(cache) == ["m-1"]
        s3.upload(bucket, "models/m/2", versions_src[2])
        events.wait("m", 2, S.AVAILABLE)
        events.wait("m", 1, S.END)
        assert served_version(core, "m") == 2
        assert cached_versions(cache) == ["m-2"]  # version 1's copy went with it
        assert status_of(core, "m") == [(2, "AVAILABLE", "OK", ""), (1, "END", "OK", "")]
    assert list(cache.iterdir()) == []  # stop() removed this process's cache
    text = metrics.render().decode()
    total = sum(p.stat().st_size for v in (1, 2) for p in versions_src[v].rglob("*") if p.is_file())
    assert f':sigserve:storage:bytes_downloaded{{model_name="m"}} {total}' in text
    for version in (1, 2):
        for stage in ("download", "load"):
            line = (
                ":tensorflow:cc:saved_model:load_latency_by_stage_count"
                f'{{model_path="{base}/{version}",stage="{stage}"}} 1'
            )
            assert line in text, line


def test_a_partial_upload_is_never_loaded(
    s3: S3, versions_src: dict[int, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    """saved_model.pb first, the variables later (the order `aws s3 cp --recursive` uses): version 2 is
    not even tried until every file is there and the listing has held still for a poll."""
    bucket = s3.bucket()
    s3.upload(bucket, "m/1", versions_src[1])
    clock = ManualClock()
    attempts = Attempts()
    base = f"s3://{bucket}/m"
    options = {"clock": clock, "loader": attempts, "model_cache_dir": str(tmp_path), **FAST}
    with running(model_config(("m", base)), wait=False, **options) as (core, events):  # type: ignore[arg-type]
        clock.wait_for_sleeper(POLL_WAIT)  # version 1 seen once: complete, not yet stable
        clock.advance(POLL)
        events.wait("m", 1, S.AVAILABLE)

        def polls(n: int) -> None:
            for _ in range(n):
                clock.advance(POLL)
                clock.wait_for_sleeper(POLL_WAIT)

        s3.upload(bucket, "m/2", versions_src[2], only=("saved_model.pb",))
        polls(3)
        s3.upload(bucket, "m/2", versions_src[2], only=("variables/variables.index",))
        polls(3)
        assert events.states("m", 2) == [] and attempts.of(2) == []
        assert served_version(core, "m") == 1
        s3.upload(bucket, "m/2", versions_src[2])
        polls(1)  # complete, but changed since the last poll
        assert events.states("m", 2) == []
        clock.advance(POLL)
        events.wait("m", 2, S.AVAILABLE)
        assert attempts.of(2) == ["ok"]  # one attempt, on the whole version
        assert served_version(core, "m") == 2


def test_deleting_the_newest_version_applies_the_policy_as_on_disk(
    s3: S3, versions_src: dict[int, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    bucket = s3.bucket()
    s3.upload(bucket, "m/1", versions_src[1])
    s3.upload(bucket, "m/2", versions_src[2])
    options = {"model_cache_dir": str(tmp_path), **FAST}
    with running(model_config(("m", f"s3://{bucket}/m")), **options) as (core, events):  # type: ignore[arg-type]
        assert served_version(core, "m") == 2
        start = len(events.items)
        s3.delete(bucket, "m/2")
        events.wait("m", 1, S.AVAILABLE, after=start)
        events.wait("m", 2, S.END, after=start)
        assert served_version(core, "m") == 1
        assert [(v, s) for v, s, _, _ in status_of(core, "m")] == [(2, "END"), (1, "AVAILABLE")]


def test_store_errors_are_one_clear_line_and_other_models_keep_serving(
    s3: S3, versions_src: dict[int, pathlib.Path], tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = s3.bucket()
    s3.upload(bucket, "m/1", versions_src[1])
    missing_bucket = f"absent-{uuid.uuid4().hex[:8]}"
    cfg = model_config(
        ("m", f"s3://{bucket}/m"), ("nobucket", f"s3://{missing_bucket}/m"), ("noprefix", f"s3://{bucket}/x")
    )
    options = {"model_cache_dir": str(tmp_path), **FAST}
    with (
        caplog.at_level(logging.WARNING, logger="sigserve"),
        running(cfg, wait=False, **options) as (  # type: ignore[arg-type]
            core,
            events,
        ),
    ):
        events.wait("m", 1, S.AVAILABLE)
        assert served_version(core, "m") == 1
        bucket_line = (
            f"s3://{missing_bucket}/m: bucket '{missing_bucket}' does not exist at {s3.endpoint}; "
            "create it or fix the base path"
        )
        assert raises(core.model_status, "nobucket").message == (
            f"Could not find any versions of model nobucket; {bucket_line}"
        )
        assert raises(core.model_status, "noprefix").message == (
            "Could not find any versions of model noprefix; Could not find base path "
            f"s3://{bucket}/x for servable noprefix with error NOT_FOUND: s3://{bucket}/x not found"
        )
    lines = [r for r in caplog.records if bucket_line in r.getMessage()]
    assert lines and all(r.levelno == logging.ERROR and r.exc_info is None for r in lines)
    assert not [r for r in caplog.records if r.exc_info], "a store error logged a traceback"


@pytest.mark.parametrize("checksum", ["CRC32", ""])
def test_a_changed_object_fails_the_download_check(s3: S3, tmp_path: pathlib.Path, checksum: str) -> None:
    """The listing is what the download is checked against: an object replaced in between (same size,
    other bytes; or another size) is DATA_LOSS. With a full-object checksum the S3 client checks the
    bytes and sigserve the ETag; without one, sigserve compares the copy's MD5 with the ETag."""
    from botocore.config import Config

    from sigserve.storage import filesystems, staging, versions

    calculation = "when_supported" if checksum else "when_required"  # boto3 adds CRC32 unless told not to
    client = boto3.client(
        "s3", endpoint_url=s3.endpoint, config=Config(request_checksum_calculation=calculation)
    )
    bucket = s3.bucket()
    client.put_object(Bucket=bucket, Key="m/1/saved_model.pb", Body=b"a" * 100)
    uri = f"s3://{bucket}/m/1"
    fs, root = filesystems.filesystem(uri)
    (listed,) = versions.list_files(fs, root, uri)
    assert listed.checksum == checksum
    client.put_object(Bucket=bucket, Key="m/1/saved_model.pb", Body=b"b" * 100)
    progress = staging._Progress(uri, 100)
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(SigserveError) as info:
        staging._fetch(fs, root, uri, listed, str(dest), "s3", progress)
    assert info.value.code == Code.DATA_LOSS
    if checksum:
        assert info.value.message == (
            f"{uri}/saved_model.pb changed on the store while it was downloaded; try again"
        )
    else:
        assert info.value.message.startswith(f"Downloaded {uri}/saved_model.pb: MD5 ")
    client.put_object(Bucket=bucket, Key="m/1/saved_model.pb", Body=b"c" * 50)
    with pytest.raises(SigserveError) as info:
        staging._fetch(fs, root, uri, listed, str(dest), "s3", progress)
    assert info.value.message == (
        f"Downloaded {uri}/saved_model.pb: 50 bytes, but the store lists 100; try again"
    )
    staged = storage.stage(uri, str(tmp_path / "ok"))  # listed afresh: fine
    assert (staged.files, staged.bytes) == (1, 50)


def test_download_progress_and_a_summary_are_logged(
    s3: S3,
    versions_src: dict[int, pathlib.Path],
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sigserve.storage import staging

    monkeypatch.setattr(staging, "PROGRESS_INTERVAL_SECONDS", 0.0)  # every chunk, for the test
    bucket = s3.bucket()
    files = s3.upload(bucket, "m/1", versions_src[1])
    uri = f"s3://{bucket}/m/1"
    with caplog.at_level(logging.INFO, logger="sigserve.storage"):
        storage.stage(uri, str(tmp_path / "copy"))
    lines = [r.getMessage() for r in caplog.records if r.name == "sigserve.storage"]
    assert any(line.startswith(f"Downloading {uri}: ") and "MB (" in line for line in lines), lines
    assert lines[-1].startswith(f"Downloaded {uri}: {len(files)} files, ")
    assert lines[-1].endswith(f"to {tmp_path / 'copy'}")


def test_an_unreachable_endpoint_is_one_line(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    error = raises(storage.StoreSource("m", "s3://models/m").list_versions)
    assert error.code == Code.UNAVAILABLE
    assert error.message == (
        f"s3://models/m: cannot reach the store at http://127.0.0.1:{port} (S3_ENDPOINT / "
        f"AWS_ENDPOINT_URL): [Errno 111] Connect call failed ('127.0.0.1', {port})"
    )
    assert "\n" not in error.message
    assert time.monotonic() - started < 30  # bounded retries


# -- the sigserve process --------------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sigserve.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        cwd=str(ROOT),
    )


def test_show_and_validate_read_a_model_on_s3(s3: S3, versions_src: dict[int, pathlib.Path]) -> None:
    bucket = s3.bucket()
    s3.upload(bucket, "m/1", versions_src[1])
    args = ["--tag_set", "serve", "--signature_def", "serving_default"]
    remote = _cli(["show", "--dir", f"s3://{bucket}/m/1", *args], s3.env)
    local = _cli(["show", "--dir", str(versions_src[1]), *args], s3.env)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout and "inputs['x'] tensor_info:" in remote.stdout
    assert _cli(["validate", "--dir", f"s3://{bucket}/m/1"], s3.env).returncode == 0

    missing = _cli(["show", "--dir", f"s3://{bucket}/nothing/1"], s3.env)
    assert missing.returncode != 0
    assert f"Nothing to read at s3://{bucket}/nothing/1: it does not exist or is empty" in missing.stderr
    no_credentials = {**s3.env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    refused = _cli(["show", "--dir", f"s3://{bucket}/m/1"], no_credentials)
    assert refused.returncode != 0
    assert f"s3://{bucket}/m/1: no credentials found; set AWS_ACCESS_KEY_ID" in refused.stderr
    assert "Traceback" not in refused.stderr + missing.stderr


def _predict(port: int, x: float) -> float:
    body = json.dumps({"instances": [[x]]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/m:predict", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return float(json.loads(response.read())["predictions"][0][0])


def _status(port: int) -> list[tuple[str, str]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/m", timeout=30) as response:
        return [(s["version"], s["state"]) for s in json.loads(response.read())["model_version_status"]]


def _serve(
    s3: S3, base: str, tmp_path: pathlib.Path, env: dict[str, str] | None = None
) -> tuple[ServerProcess, int]:
    proc = ServerProcess(
        [
            "--model_name=m",
            f"--model_base_path={base}",
            "--file_system_poll_wait_seconds=0.2",
            f"--model_cache_dir={tmp_path / 'cache'}",
        ],
        env={**s3.env, **(env or {})},
        grpc=False,
    )
    return proc, proc.rest_port


def test_sigserve_serve_swaps_in_a_version_uploaded_under_load_with_no_failed_request(
    s3: S3, versions_src: dict[int, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    bucket = s3.bucket()
    s3.upload(bucket, "m/1", versions_src[1])
    proc, rest = _serve(s3, f"s3://{bucket}/m", tmp_path)
    try:
        proc.wait_ready()
        failures: list[str] = []
        answered = [0]
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                try:
                    assert _predict(rest, 1.0) == 2.5
                    answered[0] += 1
                except Exception as e:  # every failure is what this test counts
                    failures.append(repr(e))

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        s3.upload(bucket, "m/2", versions_src[2])
        deadline = time.monotonic() + 60
        while _status(rest) != [("2", "AVAILABLE"), ("1", "END")]:
            assert time.monotonic() < deadline, _status(rest)
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        assert answered[0] > 0
    finally:
        proc.stop()
        proc.cleanup()


def test_revoked_credentials_are_reported_while_the_server_keeps_serving(
    s3: S3, versions_src: dict[int, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    """The server's access key is deleted while it serves: each poll fails with one clear line, the
    loaded version keeps answering, and a version uploaded meanwhile is not seen."""
    bucket = s3.bucket()
    s3.upload(bucket, "m/1", versions_src[1])
    iam = boto3.client("iam", endpoint_url=s3.endpoint)
    user = f"sigserve-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    creds = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    with s3.authentication():
        proc, rest = _serve(s3, f"s3://{bucket}/m", tmp_path, env=creds)
        try:
            proc.wait_ready()
            assert _predict(rest, 3.0) == 3.5
            admin = boto3.client("iam", endpoint_url=s3.endpoint, **_keys(creds))
            admin.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
            line = (
                f"s3://{bucket}/m: the store at {s3.endpoint} rejected the credentials (InvalidAccessKeyId); "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
            deadline = time.monotonic() + 60
            while line not in proc.output():
                assert time.monotonic() < deadline, proc.output()[-3000:]
                time.sleep(0.1)
            assert _predict(rest, 5.0) == 4.5
            assert _status(rest) == [("1", "AVAILABLE")]
            assert "Traceback" not in proc.output()
        finally:
            proc.stop()
            proc.cleanup()


def test_access_denied_is_one_line(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid credentials of a user with no permission on the bucket."""
    import s3fs

    bucket = s3.bucket()
    s3.client.put_object(Bucket=bucket, Key="m/1/saved_model.pb", Body=b"x")
    iam = boto3.client("iam", endpoint_url=s3.endpoint)
    user = f"nobody-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    s3fs.S3FileSystem.clear_instance_cache()  # clients read the credentials when they are made
    try:
        with s3.authentication():
            error = raises(storage.StoreSource("m", f"s3://{bucket}/m").list_versions)
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert (error.code, error.message) == (
        Code.PERMISSION_DENIED,
        f"s3://{bucket}/m: access denied (AccessDenied) at {s3.endpoint}; the credentials need "
        "permission to list and read it (for S3: s3:ListBucket and s3:GetObject)",
    )


def _keys(creds: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"],
    }


# -- a large model -----------------------------------------------------------------------------------


def test_a_200_mb_model_loads_from_s3(s3: S3, tmp_path: pathlib.Path) -> None:
    """200 MB of variables through the loopback S3 server; the download throughput is printed (run with
    -s to see it; bench/storage.py compares it with local disk)."""
    tf = pytest.importorskip("tensorflow")
    export = tmp_path / "big"
    module = tf.Module()
    module.w = tf.Variable(np.ones([50 * 1024 * 1024], np.float32))  # 200 MiB

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def serve(x: Any) -> dict[str, Any]:
        return {"y": x * 0.5 + 2.0 + 0.0 * module.w[0]}

    tf.saved_model.save(module, str(export), signatures={"serving_default": serve})
    bucket = s3.bucket()
    s3.upload(bucket, "big/1", export)
    metrics = Metrics()
    options = {"model_cache_dir": str(tmp_path / "cache"), "load_observer": metrics, **FAST}
    with running(model_config(("big", f"s3://{bucket}/big")), **options) as (core, _):  # type: ignore[arg-type]
        with core.handle("big") as servable:
            assert servable.predict({"x": np.float32([[1.0]])})["y"].tolist() == [[2.5]]
    samples = {
        (s.labels.get("stage"), s.name): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if family.name == ":tensorflow:cc:saved_model:load_latency_by_stage"
    }
    download_s = samples[("download", ":tensorflow:cc:saved_model:load_latency_by_stage_sum")] / 1e6
    load_s = samples[("load", ":tensorflow:cc:saved_model:load_latency_by_stage_sum")] / 1e6
    size = sum(p.stat().st_size for p in export.rglob("*") if p.is_file())
    assert size > 200e6
    print(
        f"\n200 MB model from loopback S3: {size / 1e6:.0f} MB downloaded in {download_s:.2f} s "
        f"({size / 1e6 / download_s:.0f} MB/s), loaded in {load_s:.2f} s"
    )
