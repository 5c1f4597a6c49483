"""Command-line usage errors, through the real `sigserve` entry point: exact flags (no argparse
abbreviations), unknown flags and commands reported with the chosen command's usage and the nearest
name, `show --signature_def` without `--tag_set`, proto-file errors in TF Serving's names, help texts."""

from __future__ import annotations

import argparse
import os
import pathlib
from collections.abc import Iterator

import pytest

from sigserve.cli import build_parser, main
from tests.cli import sigserve
from tests.conftest import ROOT

HPT = "saved_model_half_plus_two_cpu/00000123"


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_unknown_flag_shows_the_commands_usage_and_the_nearest_flag() -> None:
    proc = sigserve("serve", "--rest_port=9000")
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: sigserve serve ")
    assert "sigserve serve: error: unrecognized arguments: --rest_port=9000" in proc.stderr
    assert "--rest_port: did you mean --rest_api_port?" in proc.stderr
    assert len(proc.stderr.splitlines()) <= 4, proc.stderr  # the error is not buried under 40 flags


def test_an_abbreviated_flag_is_not_taken_for_the_full_one() -> None:
    # Formerly --model_base was --model_base_path; here the run then failed on the ports instead.
    proc = sigserve("serve", "--model_base=/models/m", "--port=0", "--rest_api_port=0")
    assert proc.returncode == 2, proc.stderr
    assert "unrecognized arguments: --model_base=/models/m" in proc.stderr
    assert "did you mean --model_base_path?" in proc.stderr


def test_no_command_accepts_abbreviations(capsys: pytest.CaptureFixture[str]) -> None:
    """Every long flag of every (sub)command, less its last letter, is refused (in-process: ~60 flags)."""
    checked = 0
    for path, parser in _parsers(build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue
        known = {s for a in parser._actions for s in a.option_strings}
        for action in parser._actions:
            for flag in action.option_strings:
                if not flag.startswith("--") or flag == "--help" or flag[:-1] in known:
                    continue  # score's --outputs less its s is --output, a flag of its own
                with pytest.raises(SystemExit) as exit_info:
                    main([*path, flag[:-1] + "=1"])
                assert exit_info.value.code == 2
                assert f"unrecognized arguments: {flag[:-1]}=1" in capsys.readouterr().err
                checked += 1
    assert checked > 50


def test_unknown_flag_is_reported_before_missing_required_ones() -> None:
    proc = sigserve("signature", "rename", "--dir", "d", "--key", "a", "--new=b")
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: sigserve signature rename ")
    assert "unrecognized arguments: --new=b" in proc.stderr
    assert "did you mean --new_key?" in proc.stderr


def test_flag_before_the_subcommand_and_misspelt_commands() -> None:
    proc = sigserve("signature", "--dir", "d", "--key", "k")
    assert proc.returncode == 2
    assert "--dir goes after the command: sigserve signature {set-method, rename" in proc.stderr
    proc = sigserve("shwo", "--dir", "d")
    assert proc.returncode == 2
    assert "unknown command 'shwo'" in proc.stderr and "did you mean show?" in proc.stderr
    proc = sigserve("signature", "renmae", "--dir", "d")
    assert proc.returncode == 2
    assert "did you mean rename?" in proc.stderr


def test_show_signature_def_without_tag_set_uses_the_only_tag_set(fixtures_dir: pathlib.Path) -> None:
    model = str(fixtures_dir / HPT)
    with_tags = sigserve("show", "--dir", model, "--tag_set", "serve", "--signature_def", "serving_default")
    without = sigserve("show", "--dir", model, "--signature_def", "serving_default")
    assert with_tags.returncode == without.returncode == 0
    assert "Method name is: tensorflow/serving/predict" in without.stdout
    assert without.stdout == with_tags.stdout


def test_show_signature_def_without_tag_set_with_several_tag_sets(
    fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    from sigserve.saved_model import loader

    saved_model = loader.read_saved_model(fixtures_dir / HPT)
    gpu = saved_model.meta_graphs.add()
    gpu.CopyFrom(saved_model.meta_graphs[0])
    gpu.meta_info_def.tags.append("gpu")
    (tmp_path / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    proc = sigserve("show", "--dir", str(tmp_path), "--signature_def", "serving_default")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        "sigserve show: error: --signature_def needs --tag_set: the SavedModel has 2 tag-sets "
        "('serve', 'serve,gpu'); choose one, e.g. --tag_set serve\n"
    )


@pytest.mark.parametrize(
    ("flag", "text", "expected"),
    [
        (
            "--model_config_file",
            'model_config_list { config { name: "m" base_pat: "/m" } }',
            'Message type "tensorflow.serving.ModelConfig" has no field named "base_pat" '
            "(did you mean base_path?)",
        ),
        (
            "--model_config_file",
            "model_config_lis {}",
            'Message type "tensorflow.serving.ModelServerConfig" has no field named "model_config_lis" '
            "(did you mean model_config_list?)",
        ),
        (
            "--monitoring_config_file",
            "prometheus_config { enabl: true }",
            'Message type "tensorflow.serving.PrometheusConfig" has no field named "enabl" '
            "(did you mean enable?)",
        ),
    ],
)
def test_config_file_errors_name_tf_servings_messages(
    tmp_path: pathlib.Path, flag: str, text: str, expected: str
) -> None:
    path = tmp_path / "bad.config"
    path.write_text(text)
    proc = sigserve("serve", "--model_name=m", "--model_base_path=/nonexistent", f"{flag}={path}")
    assert proc.returncode == 1
    assert expected in proc.stderr
    assert "sigserve.tensorflow" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_option_has_help_text() -> None:
    missing = [
        (" ".join(path), action.option_strings)
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if action.option_strings and not action.help
    ]
    assert missing == []
    proc = sigserve("signature", "rename", "--help")
    assert "--new_key NEW_KEY, --new-key NEW_KEY\n                        the new key" in proc.stdout


def test_serve_help_transport_claim_is_the_readmes_measured_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "3.5× grpcio's server at concurrency 64" in readme
    help_text = " ".join(sigserve("serve", "--help").stdout.split())
    assert "3.5x the throughput of grpcio's server" in help_text
    assert "10x" not in help_text


def test_run_and_serve_without_tensorflow_say_what_to_install(tmp_path: pathlib.Path) -> None:
    """A core install (no TensorFlow): simulated by a `tensorflow` that cannot be found."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _NoTF:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tensorflow' or name.startswith('tensorflow.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'tensorflow'\", name='tensorflow')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoTF())\n"
    )
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    proc = sigserve("run", "--dir", "/nonexistent", "--signature_def", "s", "--input_exprs", "x=1", env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("sigserve run: error: TensorFlow is not installed")
    assert "pip install 'sigserve[tensorflow]'" in proc.stderr
    proc = sigserve("serve", "--model_name=m", "--model_base_path=/m", env=env)
    assert proc.returncode == 1
    assert "pip install 'sigserve[tensorflow]'" in proc.stderr
    assert "Traceback" not in proc.stderr
