"""`sigserve score` on a real Ray (one local cluster, `ray.init(num_cpus=2)`, for the module): every
result equals `sigserve.load(...)` called directly on the same rows, for parquet (100,000 rows),
TFRecords of tf.train.Example (Classify and Regress), CSV through the command line on the same
cluster (`--ray-address`), and numpy (order kept); and bad data fails with sigserve's error."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from sigserve.errors import Code, SigserveError  # noqa: E402
from sigserve.integrations import columns, ray_data  # noqa: E402
from sigserve.protos import example_pb2  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.tf]

ROWS = 100_000


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def servables(exported_models: dict[str, pathlib.Path]) -> Iterator[dict[str, Any]]:
    import sigserve

    loaded = {n: sigserve.load(exported_models[n]) for n in ("tf1", "tf2", "estimator")}
    yield loaded
    for s in loaded.values():
        s.close()


def read_parquet_dir(path: pathlib.Path) -> Any:
    files = sorted(path.glob("*.parquet"))
    assert files, f"nothing written under {path}"
    return pa.concat_tables([pq.read_table(f) for f in files])


def test_100k_parquet_rows_equal_direct_predict(
    cluster: str, exported_models: dict[str, pathlib.Path], servables: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(ROWS).astype(np.float32)
    ids = rng.permutation(ROWS).astype(np.int64)  # keys that say nothing about position
    data = tmp_path / "data"
    data.mkdir()
    for i, part in enumerate(np.array_split(np.arange(ROWS), 4)):
        pq.write_table(pa.table({"id": ids[part], "x": x[part]}), data / f"part-{i}.parquet")

    report = ray_data.score(
        export_dir=str(exported_models["tf1"]),
        signature_name="serving_default",
        input=str(data),
        output=str(tmp_path / "scored.parquet"),
        actors=1,
    )
    assert report.plan.keys == ("id",) and report.plan.outputs == ("y",)
    out = read_parquet_dir(tmp_path / "scored.parquet")
    assert out.num_rows == ROWS
    got = dict(zip(out.column("id").to_numpy(), columns.to_tensor(out.column("y"), "y")[:, 0], strict=True))
    want = servables["tf1"].predict({"x": x.reshape(-1, 1)})["y"][:, 0]
    assert len(got) == ROWS
    np.testing.assert_array_equal(np.array([got[i] for i in ids], np.float32), want)


def _write_tfrecords(path: pathlib.Path, xs: np.ndarray) -> list[bytes]:
    import tensorflow as tf

    records = []
    with tf.io.TFRecordWriter(str(path)) as writer:
        for x in xs:
            ex = example_pb2.Example()
            ex.features.feature["x"].float_list.value.append(float(x))
            ex.features.feature["id"].bytes_list.value.append(b"row")
            data = ex.SerializeToString()
            writer.write(data)
            records.append(data)
    return records


def test_tfrecords_classify_and_regress_equal_the_servable(
    cluster: str, exported_models: dict[str, pathlib.Path], servables: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    rng = np.random.default_rng(1)
    data = tmp_path / "examples"
    data.mkdir()
    records = {}
    for name in ("a.tfrecord", "b.tfrecord"):
        records[str(data / name)] = _write_tfrecords(
            data / name, rng.standard_normal(1500).astype(np.float32)
        )
    est = servables["estimator"]

    for signature, method in (("classification", "classify"), ("regression", "regress")):
        out_dir = tmp_path / f"{method}.parquet"
        report = ray_data.score(
            export_dir=str(exported_models["estimator"]),
            signature_name=signature,
            input=str(data),
            output=str(out_dir),
            actors=1,
        )
        assert report.plan.method == method and report.plan.keys == ("file", "record")
        out = read_parquet_dir(out_dir).to_pylist()
        assert len(out) == 3000
        for path, recs in records.items():
            rows = sorted((r for r in out if r["file"] == path), key=lambda r: r["record"])
            assert [r["record"] for r in rows] == list(range(len(recs)))
            examples = [example_pb2.Example.FromString(b) for b in recs]
            if method == "classify":
                want = est.classify(examples, signature).classifications
                assert [r["classes"] for r in rows] == [[c.label for c in w.classes] for w in want]
                assert [r["scores"] for r in rows] == [[np.float32(c.score) for c in w.classes] for w in want]
            else:
                want_r = est.regress(examples, signature).regressions
                assert [r["outputs"] for r in rows] == [np.float32(w.value) for w in want_r]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", RAY_DEDUP_LOGS="0")
    return subprocess.run(
        [sys.executable, "-m", "sigserve.cli", "score", "--no_progress", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=str(ROOT),
    )


def test_cli_scores_csv_on_the_given_cluster(
    cluster: str, exported_models: dict[str, pathlib.Path], servables: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal(2000).astype(np.float32)
    b = rng.integers(-1000, 1000, 2000)
    pacsv.write_csv(pa.table({"key": [f"k{i}" for i in range(2000)], "a": a, "b": b}), tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    base = exported_models["tf1"].parent
    args = ["--model_base_path", str(base), "--signature_def", "multi", "--input", str(tmp_path / "in.csv")]
    proc = run_cli(*args, "--output", str(out), "--outputs", "sum,label_bytes", "--ray-address", cluster)
    assert proc.returncode == 0, proc.stderr
    assert "version 1 of" in proc.stderr and "predict multi" in proc.stderr
    table = pa.concat_tables([pacsv.read_csv(f) for f in sorted(out.glob("*.csv"))])
    assert table.column_names == ["key", "sum", "label_bytes"]
    rows = sorted(table.to_pylist(), key=lambda r: int(r["key"][1:]))
    # CSV holds a's shortest float64 text; float32 of it is a's exact value, as it would be over REST.
    want = servables["tf1"].predict({"a": a, "b": b}, "multi", output_filter=["sum", "label_bytes"])
    np.testing.assert_array_equal(np.array([r["sum"] for r in rows], np.float32), want["sum"])
    assert [r["label_bytes"] for r in rows] == [v.decode() for v in want["label_bytes"]]

    again = run_cli(*args, "--output", str(out), "--ray-address", cluster)
    assert again.returncode == 1 and "exists; remove it or pass --overwrite" in again.stderr

    missing = run_cli(
        *args, "--output", str(tmp_path / "o2.parquet"), "--input_map", "b=bee", "--ray-address", cluster
    )
    assert missing.returncode == 1
    assert "needs input 'b', but the data has no column 'bee' (columns: key, a, b)" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_numpy_rows_come_back_in_order(
    cluster: str, exported_models: dict[str, pathlib.Path], servables: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    x = np.random.default_rng(3).standard_normal((5000, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ray_data.score(
        export_dir=str(exported_models["tf2"]),
        signature_name="serving_default",
        input=str(tmp_path / "x.npy"),
        output=str(tmp_path / "out.parquet"),
        actors=1,
        batch_size=700,
    )
    out = read_parquet_dir(tmp_path / "out.parquet")
    assert out.column_names == ["doubled", "total"]
    want = servables["tf2"].predict({"x": x})
    np.testing.assert_array_equal(columns.to_tensor(out.column("doubled"), "d"), want["doubled"])
    np.testing.assert_array_equal(out.column("total").to_numpy(), want["total"])


def test_a_corrupt_tfrecord_fails_with_data_loss(
    cluster: str, exported_models: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "bad.tfrecord"
    _write_tfrecords(path, np.zeros(3, np.float32))
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first record's data: its CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(SigserveError) as e:
        ray_data.score(
            export_dir=str(exported_models["estimator"]),
            signature_name="regression",
            input=str(path),
            output=str(tmp_path / "out.parquet"),
            actors=1,
        )
    assert e.value.code == Code.DATA_LOSS and "corrupted record at 0" in e.value.message
