"""sigserve.storage without a network: URI routing (every scheme, unknown ones, a missing extra), the S3
endpoint override, the completeness rule, and version discovery and staging through fsspec's real
`memory://` and `file://` filesystems (the same code path that s3://, gs:// and az:// take)."""

from __future__ import annotations

import os
import pathlib
import shutil
import uuid
from collections.abc import Iterator

import fsspec
import pytest

from sigserve import storage
from sigserve.errors import Code, SigserveError
from sigserve.protos import saved_model_pb2
from sigserve.storage import filesystems, uri, versions
from sigserve.storage.staging import expected_md5
from sigserve.storage.versions import RemoteFile, StoreSource, missing_parts


def error_of(call, *args, **kwargs) -> SigserveError:  # type: ignore[no-untyped-def]
    with pytest.raises(SigserveError) as info:
        call(*args, **kwargs)
    return info.value


# -- URI routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "protocol", "filesystem_class"),
    [
        ("s3://bucket/models/m", "s3", "s3fs.core.S3FileSystem"),
        ("s3a://bucket/models/m", "s3", "s3fs.core.S3FileSystem"),
        ("gs://bucket/models/m", "gs", "gcsfs.extended_gcsfs.ExtendedGcsFileSystem"),
        ("gcs://bucket/models/m", "gs", "gcsfs.extended_gcsfs.ExtendedGcsFileSystem"),
        ("az://container/models/m", "az", "adlfs.spec.AzureBlobFileSystem"),
        ("abfs://container/models/m", "abfs", "adlfs.spec.AzureBlobFileSystem"),
        ("abfss://container/models/m", "abfs", "adlfs.spec.AzureBlobFileSystem"),
        ("https://models.example.com/m", "https", "fsspec.implementations.http.HTTPFileSystem"),
        ("memory://models/m", "memory", "fsspec.implementations.memory.MemoryFileSystem"),
    ],
)
def test_each_scheme_routes_to_its_fsspec_filesystem(path: str, protocol: str, filesystem_class: str) -> None:
    """What fsspec would build for the URI (built for real only in the S3 and memory tests: gcsfs and
    adlfs would look for cloud credentials)."""
    scheme = storage.scheme_of(path)
    assert scheme.protocol == protocol
    assert storage.is_remote(path)
    cls = fsspec.get_filesystem_class(protocol)
    assert f"{cls.__module__}.{cls.__name__}" == filesystem_class


def test_local_paths_are_used_in_place() -> None:
    for path in ("/models/m", "relative/m", "C:/x", "file:///models/m"):
        assert not storage.is_remote(path)
    assert storage.local_path("file:///models/m") == "/models/m"
    assert storage.local_path("/models/m") == "/models/m"
    assert uri.scheme_name("S3://Bucket/m") == "s3"  # schemes are case-insensitive


def test_an_unknown_scheme_names_the_ones_sigserve_reads() -> None:
    error = error_of(storage.is_remote, "hdfs://namenode/models/m")
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == (
        "Unknown scheme 'hdfs://' in hdfs://namenode/models/m: sigserve reads local paths and file://, "
        "memory://, s3://, gs://, az://, abfs://, http://, https:// (e.g. s3://bucket/models/m)"
    )


def test_a_missing_extra_is_named_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a core install without sigserve[s3]: the scheme's fsspec package cannot be found."""
    monkeypatch.setitem(uri.SCHEMES, "s3", uri.Scheme("s3", "s3", "sigserve_no_such_module", "S3"))
    error = error_of(storage.scheme_of, "s3://bucket/m")
    assert (error.code, error.message) == (
        Code.UNIMPLEMENTED,
        "Reading s3://bucket/m needs sigserve_no_such_module, which is not installed: "
        "pip install 'sigserve[s3]'",
    )


def test_s3_endpoint_override_reads_the_variables_tf_serving_and_boto_read() -> None:
    assert filesystems.s3_endpoint({}) == ""
    assert filesystems.s3_endpoint({"S3_ENDPOINT": "minio:9000"}) == "https://minio:9000"
    assert filesystems.s3_endpoint({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0"}) == "http://minio:9000"
    assert filesystems.s3_endpoint({"S3_ENDPOINT": "http://ceph:7480"}) == "http://ceph:7480"
    both = {"S3_ENDPOINT": "minio:9000", "AWS_ENDPOINT_URL": "http://a:1"}
    assert filesystems.s3_endpoint(both) == "http://a:1"
    assert filesystems.s3_endpoint({**both, "AWS_ENDPOINT_URL_S3": "http://s3only:2"}) == "http://s3only:2"
    options = filesystems.storage_options(
        "s3", {"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0", "AWS_REGION": "eu-1"}
    )
    assert options["client_kwargs"] == {
        "endpoint_url": "http://minio:9000",
        "verify": False,
        "region_name": "eu-1",
    }
    assert filesystems.storage_options("gs", {"S3_ENDPOINT": "x"}) == {}


# -- the completeness rule ---------------------------------------------------------------------------


def _files(*names: str) -> list[RemoteFile]:
    return [RemoteFile(n, 1, "") for n in names]


def _pb(with_saver: bool) -> bytes:
    saved_model = saved_model_pb2.SavedModel()
    meta_graph = saved_model.meta_graphs.add()
    if with_saver:
        meta_graph.saver_def.filename_tensor_name = "save/Const:0"
    return saved_model.SerializeToString()


@pytest.mark.parametrize(
    ("names", "saver", "missing"),
    [
        ((), True, "saved_model.pb"),
        (("variables/variables.index", "variables/variables.data-00000-of-00001"), True, "saved_model.pb"),
        (("saved_model.pb",), True, "variables/"),  # uploaded before its variables
        (("saved_model.pb",), False, ""),  # a model without variables
        (("saved_model.pbtxt",), False, ""),
        (("saved_model.pb", "variables/variables.index"), True, "variables/variables.data-00000-of-..."),
        (("saved_model.pb", "variables/variables.data-00000-of-00001"), True, "variables/variables.index"),
        (
            (
                "saved_model.pb",
                "variables/variables.index",
                "variables/variables.data-00000-of-00003",
                "variables/variables.data-00002-of-00003",
            ),
            True,
            "variables/variables.data-00001-of-00003",
        ),
        (
            (
                "saved_model.pb",
                "variables/variables.index",
                "variables/variables.data-00000-of-00002",
                "variables/variables.data-00001-of-00002",
                "assets/vocab.txt",
            ),
            True,
            "",
        ),
    ],
)
def test_missing_parts(names: tuple[str, ...], saver: bool, missing: str) -> None:
    assert missing_parts(_files(*names), lambda rel: _pb(saver)) == missing


def test_expected_md5_only_where_the_store_vouches_for_one() -> None:
    md5 = "9e107d9d372bb6826bd81d3542a419d6"
    assert expected_md5("s3", RemoteFile("a", 1, f'"{md5}"')) == md5
    assert expected_md5("s3", RemoteFile("a", 1, f'"{md5}-3"')) == ""  # multipart: not an MD5
    assert expected_md5("gs", RemoteFile("a", 1, "nhB9nTcrtoJr2B01QqQZ1g==")) == md5
    assert expected_md5("https", RemoteFile("a", 1, f'"{md5}"')) == ""  # an HTTP ETag is opaque
    assert expected_md5("memory", RemoteFile("a", 1, "")) == ""


# -- version discovery and staging on memory:// and file:// ------------------------------------------


@pytest.fixture
def memory_base() -> Iterator[str]:
    base = f"memory://models-{uuid.uuid4().hex[:8]}/m"
    yield base
    fs = fsspec.filesystem("memory")
    path = fs._strip_protocol(base).rsplit("/", 1)[0]
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _upload(base: str, version: int, src: pathlib.Path, only: tuple[str, ...] | None = None) -> None:
    fs = fsspec.filesystem("memory")
    for root, _, names in os.walk(src):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), src).replace(os.sep, "/")
            if only is None or rel in only:
                fs.pipe(f"{fs._strip_protocol(base)}/{version}/{rel}", pathlib.Path(root, name).read_bytes())


def test_a_version_counts_once_complete_and_unchanged_for_a_poll(
    memory_base: str, fixtures_dir: pathlib.Path
) -> None:
    src = fixtures_dir / "saved_model_half_plus_two_2_versions" / "00000123"
    source = StoreSource("m", memory_base)
    missing = (
        f"Could not find base path {memory_base} for servable m with error NOT_FOUND: {memory_base} not found"
    )
    error = error_of(source.list_versions)
    assert (error.code, error.message) == (Code.NOT_FOUND, missing)
    _upload(memory_base, 1, src, only=("saved_model.pb",))  # the pb first, as `cp -r` uploads
    for _ in range(3):
        assert source.list_versions() == {}
        assert source.pending == {1: "missing variables/"}
    _upload(memory_base, 1, src)
    assert source.list_versions() == {}  # complete, but the listing changed since the last poll
    assert source.pending == {1: "files still changing since the last poll"}
    assert source.list_versions() == {1: f"{memory_base}/1"}
    assert source.pending == {}
    # Another version arrives, then version 1 is deleted: gone at the next poll.
    _upload(memory_base, 2, src)
    fs = fsspec.filesystem("memory")
    fs.rm(fs._strip_protocol(f"{memory_base}/1"), recursive=True)
    assert source.list_versions() == {}
    assert source.list_versions() == {2: f"{memory_base}/2"}
    # A prefix with no object left is no base path, as on S3 and GCS.
    fs.rm(fs._strip_protocol(f"{memory_base}/2"), recursive=True)
    assert error_of(source.list_versions).message == missing
    # Polling once (no second listing to compare with): the structure alone decides.
    _upload(memory_base, 2, src)
    assert StoreSource("m", memory_base, require_stable=False).list_versions() == {2: f"{memory_base}/2"}


def test_stage_copies_a_version_and_checks_it(
    memory_base: str, fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    src = fixtures_dir / "saved_model_half_plus_two_2_versions" / "00000123"
    _upload(memory_base, 1, src)
    staged = storage.stage(f"{memory_base}/1", str(tmp_path / "copy"))
    copied = sorted(
        str(p.relative_to(tmp_path / "copy")) for p in (tmp_path / "copy").rglob("*") if p.is_file()
    )
    expected = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    assert copied == expected
    assert staged.bytes == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert staged.files == len(expected)
    for rel in expected:
        assert (tmp_path / "copy" / rel).read_bytes() == (src / rel).read_bytes()
    error = error_of(storage.stage, f"{memory_base}/9", str(tmp_path / "none"))
    assert (error.code, error.message) == (
        Code.NOT_FOUND,
        f"Nothing to read at {memory_base}/9: it does not exist or is empty",
    )
    assert not (tmp_path / "none").exists()


def test_local_dir_is_the_one_call_for_every_dir_flag(
    memory_base: str, fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    src = fixtures_dir / "saved_model_half_plus_two_2_versions" / "00000123"
    with storage.local_dir(str(src)) as d:
        assert d == str(src)
    with storage.local_dir(f"file://{src}") as d:
        assert d == str(src)
    _upload(memory_base, 1, src)
    with storage.local_dir(f"{memory_base}/1", only=storage.SAVED_MODEL_FILES) as d:
        assert os.listdir(d) == ["saved_model.pb"]
        kept = d
    assert not os.path.exists(kept)  # removed on exit
    with storage.local_dir(f"{memory_base}/1") as d:
        assert (pathlib.Path(d) / "variables" / "variables.index").is_file()
    local = tmp_path / "m"
    shutil.copytree(src, local / "1")
    fs_source = StoreSource("m", f"file://{local}")  # file:// through fsspec too, as a store
    assert fs_source.list_versions() == {}
    assert fs_source.list_versions() == {1: f"file://{local}/1"}
    assert versions.version_number("00012") == 12 and versions.version_number("1.0") is None


@pytest.fixture
def http_root(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, str]]:
    """A directory served by Python's own HTTP server on loopback, with directory index pages."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_versions_from_an_http_server_with_index_pages(
    http_root: tuple[pathlib.Path, str], fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    pytest.importorskip("aiohttp", reason="needs sigserve[http]")
    root, url = http_root
    src = fixtures_dir / "saved_model_half_plus_two_2_versions" / "00000123"
    shutil.copytree(src, root / "m" / "7")
    source = StoreSource("m", f"{url}/m")
    assert source.list_versions() == {}
    assert source.list_versions() == {7: f"{url}/m/7"}
    staged = storage.stage(f"{url}/m/7", str(tmp_path / "copy"))
    assert staged.bytes == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert (tmp_path / "copy" / "saved_model.pb").read_bytes() == (src / "saved_model.pb").read_bytes()
    error = error_of(StoreSource("m", f"{url}/nothing").list_versions)
    assert error.code == Code.NOT_FOUND


def test_model_base_path_from_the_environment_may_be_a_uri() -> None:
    import argparse

    from sigserve.commands import serve

    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model_name=m"])
    options = serve.options_from_args(args, {"MODEL_BASE_PATH": "s3://bucket/models"})
    assert options.model_base_path == "s3://bucket/models/m"
