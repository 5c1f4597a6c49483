"""Signature edits by sigserve: what TensorFlow sees afterwards, and how the files are written."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from sigserve.cli import main as sigserve_main
from sigserve.errors import SigserveError
from sigserve.saved_model import editor, loader
from sigserve.saved_model import signature_constants as sc

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(editor.copy_saved_model(src, dst))


def _tree_digest(d: pathlib.Path, skip: tuple[str, ...]) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def _run_tf(code: str, *args: str) -> str:
    """TensorFlow in a fresh process, so this process's graph state cannot help or hurt."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


_TF2_CLASSIFY_CHECK = r"""
import sys, tensorflow as tf
d = sys.argv[1]
v1 = tf.compat.v1
with v1.Session(graph=tf.Graph()) as sess:
    mg = v1.saved_model.loader.load(sess, ["serve"], d)
    sig = mg.signature_def["serving_default"]
    feed = {sig.inputs["x"].name: [[1.0, 2.0, 3.0]]}
    out = sess.run({k: v.name for k, v in sig.outputs.items()}, feed)
    print("method", sig.method_name)
    print("doubled", out["doubled"].tolist())
loaded = tf.saved_model.load(d)
r = loaded.signatures["serving_default"](x=tf.constant([[1.0, 1.0, 1.0]]))
print("tf2_total", r["total"].numpy().tolist())
"""


@pytest.mark.slow
def test_tf2_serving_default_set_to_classify_loads_and_runs_in_tensorflow(
    exported_models: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    d = _copy(exported_models["tf2"], tmp_path / "m")
    assert (d / "fingerprint.pb").exists()
    assert (
        sigserve_main(
            ["signature", "set-method", "--dir", str(d), "--key", "serving_default", "--method", "classify"]
        )
        == 0
    )
    out = _run_tf(_TF2_CLASSIFY_CHECK, str(d))
    assert "method tensorflow/serving/classify" in out
    assert "doubled [[2.0, 4.0, 6.0]]" in out
    assert "tf2_total [3.0]" in out
    assert not (d / "fingerprint.pb").exists()


_TF2_RENAME_CHECK = r"""
import sys, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
print("keys", sorted(loaded.signatures.keys()))
r = loaded.signatures["scaled"](x=tf.constant([1.0, 2.0]), factor=tf.constant(3.0))
print("scaled", r["output_0"].numpy().tolist())
r = loaded.signatures["copy_of_default"](x=tf.constant([[1.0, 2.0, 3.0]]))
print("copy", r["total"].numpy().tolist())
"""


@pytest.mark.slow
def test_tf2_rename_copy_delete_keep_object_graph_signatures_in_step(
    exported_models: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    d = _copy(exported_models["tf2"], tmp_path / "m")
    ed = editor.SavedModelEditor(d)
    ed.rename("scale", "scaled")
    ed.copy("serving_default", "copy_of_default")
    ed.copy("serving_default", "doomed")
    ed.delete("doomed")
    assert ed.save() is True
    keys = sorted(loader.read_saved_model(d).meta_graphs[0].signature_def)
    assert keys == ["__saved_model_init_op", "copy_of_default", "scaled", "serving_default"]
    out = _run_tf(_TF2_RENAME_CHECK, str(d))
    assert "keys ['copy_of_default', 'scaled', 'serving_default']" in out
    assert "scaled [3.0, 6.0]" in out
    assert "copy [6.0]" in out


def test_edit_touches_only_saved_model_pb_and_is_deterministic(
    exported_models: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    a = _copy(exported_models["tf1"], tmp_path / "a")
    b = _copy(exported_models["tf1"], tmp_path / "b")
    before = _tree_digest(a, skip=("saved_model.pb",))
    for d in (a, b):
        ed = editor.SavedModelEditor(d, ["serve"])
        ed.set_default("multi", keep_old_as="original_default")
        ed.set_method("classify_x", "predict")
        ed.save()
    assert (a / "saved_model.pb").read_bytes() == (b / "saved_model.pb").read_bytes()
    assert _tree_digest(a, skip=("saved_model.pb",)) == before
    assert not [p for p in a.iterdir() if p.name.endswith(".tmp")]
    sigs = loader.read_saved_model(a).meta_graphs[0].signature_def
    assert sigs["serving_default"] == sigs["multi"]
    assert sigs["original_default"].inputs["x"].name == "x:0"
    assert sigs["classify_x"].method_name == sc.PREDICT_METHOD_NAME


def test_unedited_fields_survive_a_write(fixtures_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """An edit changes exactly the edited signature; TensorFlow parses everything else as before."""
    from tensorflow.core.protobuf import saved_model_pb2 as tf_saved_model_pb2

    src = fixtures_dir / "saved_model_half_plus_two_tf2_cpu/00000123"
    d = _copy(src, tmp_path / "m")
    ed = editor.SavedModelEditor(d, ["serve"])
    ed.set_method("classify_x_to_y", "classify")
    ed.save()
    original = tf_saved_model_pb2.SavedModel.FromString((src / "saved_model.pb").read_bytes())
    edited = tf_saved_model_pb2.SavedModel.FromString((d / "saved_model.pb").read_bytes())
    assert edited.meta_graphs[0].signature_def["classify_x_to_y"].method_name == sc.CLASSIFY_METHOD_NAME
    edited.meta_graphs[0].signature_def["classify_x_to_y"].method_name = sc.PREDICT_METHOD_NAME
    assert edited == original


def test_reserved_keys_are_protected(
    exported_models: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    d = _copy(exported_models["tf2"], tmp_path / "m")
    ed = editor.SavedModelEditor(d)
    init = "__saved_model_init_op"
    for action in (
        lambda: ed.delete(init),
        lambda: ed.set_method(init, "predict"),
        lambda: ed.rename(init, "x"),
        lambda: ed.copy("serving_default", "__saved_model_train_op"),
        lambda: ed.set_default(init),
    ):
        with pytest.raises(SigserveError, match="is reserved for"):
            action()
    assert ed.changed is False


def test_editor_errors(exported_models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    d = _copy(exported_models["tf1"], tmp_path / "m")
    ed = editor.SavedModelEditor(d)
    with pytest.raises(SigserveError, match=r'Could not find signature "nope"\. Please choose from: '):
        ed.delete("nope")
    with pytest.raises(SigserveError, match='Signature "multi" already exists'):
        ed.rename("serving_default", "multi")
    with pytest.raises(
        SigserveError, match=r"Could not find meta graph def matching supplied tags: \{ gpu \}"
    ):
        editor.SavedModelEditor(d, ["gpu"])
    with pytest.raises(SigserveError, match="already exists and is not empty"):
        editor.copy_saved_model(d, d)


def test_cli_edit_of_read_only_fixture_writes_a_copy(
    fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    src = fixtures_dir / "saved_model_half_plus_two_cpu/00000123"
    out = tmp_path / "124"
    argv = ["signature", "rename", "--dir", str(src), "--output_dir", str(out)]
    assert sigserve_main([*argv, "--key", "regress_x_to_y", "--new_key", "regress"]) == 0
    assert "regress" in loader.read_saved_model(out).meta_graphs[0].signature_def
    assert "regress_x_to_y" in loader.read_saved_model(src).meta_graphs[0].signature_def
    assert (out / "variables" / "variables.index").read_bytes() == (
        src / "variables" / "variables.index"
    ).read_bytes()


def test_cli_errors_are_one_line(exported_models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    d = _copy(exported_models["tf2"], tmp_path / "m")
    for argv in (
        ["delete", "--dir", str(d), "--key", "__saved_model_init_op"],
        ["set-method", "--dir", str(d), "--key", "missing", "--method", "classify"],
        ["delete", "--dir", str(tmp_path / "absent"), "--key", "x"],
    ):
        proc = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "sigserve"), "signature", *argv], capture_output=True, text=True
        )
        assert proc.returncode != 0
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("sigserve signature: error: ")
        assert "Traceback" not in proc.stderr


def test_text_format_saved_model_is_refused(tmp_path: pathlib.Path) -> None:
    from google.protobuf import text_format

    from sigserve.protos import saved_model_pb2

    sm = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    sm.meta_graphs.add().meta_info_def.tags.append("serve")
    (tmp_path / "saved_model.pbtxt").write_text(text_format.MessageToString(sm))
    assert loader.read_saved_model(tmp_path).meta_graphs[0].meta_info_def.tags == ["serve"]
    with pytest.raises(SigserveError, match="text-format SavedModel"):
        editor.SavedModelEditor(tmp_path)


def test_copy_preserves_unrelated_files(fixtures_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    src = fixtures_dir / "saved_model_half_plus_two_mlmd/00000123"
    d = _copy(src, tmp_path / "m")
    ed = editor.SavedModelEditor(d, ["serve"])
    ed.delete("regress_x_to_y2")
    ed.save()
    assert _tree_digest(d, skip=("saved_model.pb",)) == _tree_digest(src, skip=("saved_model.pb",))
    assert (d / "assets.extra").is_dir()
    shutil.rmtree(d)


def test_set_method_refuses_an_unknown_method_and_writes_nothing(
    fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    from tests.cli import sigserve

    d = _copy(fixtures_dir / "saved_model_half_plus_two_cpu/00000123", tmp_path / "m")
    before = (d / "saved_model.pb").read_bytes()
    proc = sigserve(
        "signature", "set-method", "--dir", str(d), "--key", "serving_default", "--method", "classifyy"
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: sigserve signature set-method ")
    assert "argument --method: 'classifyy' is not a method TF Serving serves: did you mean classify?" in (
        proc.stderr
    )
    assert (d / "saved_model.pb").read_bytes() == before
    # The full names are accepted; so is every shorthand.
    proc = sigserve(
        "signature", "set-method", "--dir", str(d), "--key", "classify_x_to_y",
        "--method", "tensorflow/serving/classify",
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")


def test_set_method_warns_when_the_api_cannot_serve_the_signature(
    fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    from tests.cli import sigserve

    d = _copy(fixtures_dir / "saved_model_half_plus_two_cpu/00000123", tmp_path / "m")
    proc = sigserve(
        "signature", "set-method", "--dir", str(d), "--key", "serving_default", "--method", "classify"
    )
    assert proc.returncode == 0
    assert proc.stderr == (
        "sigserve signature: warning: the Classify API cannot serve serving_default: No classification "
        "inputs found in SignatureDef (the input key must be 'inputs') (method_name set anyway; see "
        f"sigserve validate --dir {d})\n"
    )
    sig = loader.read_saved_model(d).meta_graphs[0].signature_def["serving_default"]
    assert sig.method_name == sc.CLASSIFY_METHOD_NAME
    # A signature the API can serve: no warning.
    proc = sigserve(
        "signature", "set-method", "--dir", str(d), "--key", "regress_x_to_y", "--method", "regress"
    )
    assert (proc.returncode, proc.stderr) == (0, "")


def test_a_failed_edit_leaves_no_output_dir(fixtures_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    from tests.cli import sigserve

    src = fixtures_dir / "saved_model_half_plus_two_cpu/00000123"
    out = tmp_path / "2"
    proc = sigserve(
        "signature", "delete", "--dir", str(src), "--output_dir", str(out), "--key", "serving_defaul"
    )
    assert proc.returncode == 1
    assert 'Could not find signature "serving_defaul"' in proc.stderr
    assert not out.exists()
