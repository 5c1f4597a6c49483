"""Every subcommand with the usual mistakes (missing or misspelt flag, wrong path, bad port, unknown
name): one error line that says what to do, the right exit status, never a traceback. The cases that
need a running server are in test_client_api.py; these need none (issue 21's sweep)."""

from __future__ import annotations

import pathlib

import pytest

from tests.cli import sigserve

HPT = "saved_model_half_plus_two_cpu/00000123"


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (["show"], 2, "sigserve show: error: the following arguments are required: --dir"),
        (
            ["show", "--dir", "{model}/saved_model.pb"],
            1,
            "(a file; --dir takes the SavedModel directory, e.g. {model})",
        ),
        (["show", "--dir", "{tmp}"], 1, "(no saved_model.pb or saved_model.pbtxt in it)"),
        (
            ["show", "--dir", "{model}", "--tag_set", "gpu"],
            1,
            "Please use one of the following tag-sets: ['serve']",
        ),
        (["validate", "--dir", "{model}", "--method_name_chek"], 2, "did you mean --method_name_check?"),
        (["validate", "--dir", "{base}"], 1, "(it holds version directories; pass one, e.g. {model})"),
        (["signature", "set-method", "--dir", "{model}", "--key", "k"], 2, "required: --method"),
        (
            ["signature", "delete", "--dir", "{model}", "--key", "nope"],
            1,
            'Could not find signature "nope". Please choose from: classify_x_to_y,',
        ),
        (["run", "--dir", "{model}", "--input_exprs", "x=1"], 2, "required: --signature_def"),
        (
            ["run", "--dir", "{model}", "--signature_def", "serving_default", "--input-expr", "x=1"],
            2,
            "did you mean --input-exprs?",
        ),
        (["serve", "--port=abc"], 2, "argument --port: invalid int value: 'abc'"),
        (
            ["serve", "--model_base_path=/m", "--rest_api_port=-1"],
            1,
            "--rest_api_port must be a port number, 0-65535 (0 turns it off); got -1",
        ),
        (
            ["serve", "--model_base_path=/m", "--rest_api_max_header_bytes=0"],
            1,
            "--rest_api_max_header_bytes must be above 0 (every request would be refused); e.g. 65536",
        ),
        (
            ["serve", "--model_base_path=/m", "--rest_api_body_timeout_seconds=-1"],
            1,
            "--rest_api_body_timeout_seconds must be above 0",
        ),
        (
            ["serve", "--model_base_path=/m", "--max_request_json_depth=0"],
            1,
            "--max_request_json_depth must be at least 2 (a request is an object holding a list, "
            '{{"instances": [1.0]}}), e.g. 100, the default; got 0',
        ),
        (
            ["serve", "--model_base_path=/m", "--enable_batching=maybe"],
            2,
            "expected true or false, got 'maybe'",
        ),
        (
            ["predict", "--server", "", "--model", "m", "--input", "x=1"],
            1,
            "--server is empty; give HOST:PORT",
        ),
        (
            [
                "predict",
                "--server",
                "h:1",
                "--model",
                "m",
                "--input",
                "x=1",
                "--ca_file",
                "/nonexistent/ca.pem",
            ],
            1,
            "--ca_file /nonexistent/ca.pem: No such file or directory",
        ),
        (
            ["predict", "--server", "h:1", "--model", "m", "--input", "x"],
            1,
            "--input must be ALIAS=VALUE, e.g. --input 'x=[[1.0]]'",
        ),
        (["predict", "--server", "h:1", "--model", "m", "--inputs", "x=1"], 2, "did you mean --input?"),
        (
            [
                "predict",
                "--server",
                "h:1",
                "--model",
                "m",
                "--version",
                "1",
                "--label",
                "a",
                "--input",
                "x=1",
            ],
            2,
            "not allowed with argument --version",
        ),
    ],
)
def test_mistakes_get_one_clear_line(
    fixtures_dir: pathlib.Path, tmp_path: pathlib.Path, argv: list[str], code: int, expected: str
) -> None:
    where = {
        "model": str(fixtures_dir / HPT),
        "base": str(fixtures_dir / HPT.split("/")[0]),
        "tmp": str(tmp_path),
    }
    proc = sigserve(*(a.format(**where) for a in argv))
    assert proc.returncode == code, proc.stderr
    assert expected.format(**where) in proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"sigserve {argv[0]}"), proc.stderr


def test_run_outdir_that_is_a_file(fixtures_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    taken = tmp_path / "out.npy"
    taken.write_bytes(b"")
    proc = sigserve(
        "run", "--dir", str(fixtures_dir / HPT), "--signature_def", "serving_default",
        "--input_exprs", "x=[[1.0]]", "--outdir", str(taken),
    )  # fmt: skip
    assert proc.returncode == 1
    assert (
        proc.stderr
        == f"sigserve run: error: --outdir {taken} is a file; give a directory (created if missing)\n"
    )
