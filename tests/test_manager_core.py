"""ServerCore on real SavedModels loaded by sigserve.runtime, in temporary base paths that the tests
change under it: versions appearing and disappearing, every version policy, labels, a two-model config
and reloads, corrupt and half-copied versions, the state transitions and the status API
(tfserving-api.md §1.5, §2.3, §4)."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from sigserve.errors import Code, SigserveError
from sigserve.manager import LoadRequest, ManualClock, ServerCore
from sigserve.manager import config as manager_config
from sigserve.manager.core import SOURCE_PROBLEM_LOG_INTERVAL_SECONDS
from sigserve.manager.lifecycle import servable_id
from sigserve.protos import model_server_config_pb2
from tests.manager_helpers import (
    FAIL_FAST_HINT,
    FAST,
    POLL,
    POLL_WAIT,
    Attempts,
    Events,
    S,
    drop_version,
    handle_error,
    load,
    model_config,
    put_version,
    raises,
    retry_wait,
    running,
    served_version,
    status_of,
    wait_until,
)

# -- versions from disk --------------------------------------------------------------------------


def test_new_version_is_served_within_the_poll_period_and_removing_it_goes_back(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    with running(manager_config.single_model("m", str(base)), **FAST) as (core, events):
        assert core.ready()
        assert served_version(core, "m") == 1

        start = len(events.items)
        published = time.monotonic()
        put_version(base, 2, versions_src[2])
        available = events.wait("m", 2, S.AVAILABLE, after=start)
        # Picked up within one poll period (plus scheduling slack), then loaded.
        seen = events.items[events.find("m", 2, S.START, start) or 0][0]
        assert seen - published < POLL + 1.0
        assert served_version(core, "m") == 2
        unloading = events.wait("m", 1, S.UNLOADING, after=start)
        assert available < unloading  # the new version serves before the old one starts to go
        events.wait("m", 1, S.END, after=start)
        assert handle_error(core, "m", 1).message == "Servable not found for request: Specific(m, 1)"

        start = len(events.items)
        drop_version(base, 2)
        events.wait("m", 1, S.AVAILABLE, after=start)
        events.wait("m", 2, S.END, after=start)
        assert served_version(core, "m") == 1
        assert events.states("m", 2) == [
            ("m", 2, s) for s in (S.START, S.LOADING, S.AVAILABLE, S.UNLOADING, S.END)
        ]
        assert events.states("m", 1) == [
            ("m", 1, s) for s in (S.START, S.LOADING, S.AVAILABLE, S.UNLOADING, S.END)
        ] + [("m", 1, s) for s in (S.START, S.LOADING, S.AVAILABLE)]
        assert status_of(core, "m") == [(2, "END", "OK", ""), (1, "AVAILABLE", "OK", "")]
        assert [s.version for s in core.model_status("m", 2).model_version_status] == [2]
    # stop() unloads what was serving.
    assert events.states("m", 1)[-2:] == [("m", 1, S.UNLOADING), ("m", 1, S.END)]
    assert not core.ready()


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        ("", {3}),
        ("latest { num_versions: 2 }", {2, 3}),
        ("all {}", {1, 2, 3}),
        ("specific { versions: 1 versions: 3 }", {1, 3}),
    ],
)
def test_version_policies(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path], policy: str, served: set[int]
) -> None:
    base = tmp_path / "m"
    for version, src in versions_src.items():
        put_version(base, version, src)
    with running(model_config(("m", base), policy=policy), **FAST) as (core, events):
        wait_until(lambda: {v for _, v, s in events.states("m") if s == S.AVAILABLE} >= served, what="loads")
        for version in (1, 2, 3):
            if version in served:
                assert served_version(core, "m", version=version) == version
            else:
                error = handle_error(core, "m", version)
                assert (error.code, error.message) == (
                    Code.NOT_FOUND,
                    f"Servable not found for request: Specific(m, {version})",
                )
        assert served_version(core, "m") == max(served)
        assert {v for v, state, _, _ in status_of(core, "m") if state == "AVAILABLE"} == served
        assert {v for _, v, _ in events.states("m")} == served  # nothing else was even tried


def test_latest_two_keeps_two_versions_as_new_ones_arrive(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    put_version(base, 2, versions_src[2])
    with running(model_config(("m", base), policy="latest { num_versions: 2 }"), **FAST) as (core, events):
        wait_until(lambda: core.model_status("m").model_version_status[-1].state == S.AVAILABLE)
        start = len(events.items)
        put_version(base, 3, versions_src[3])
        events.wait("m", 1, S.END, after=start)
        events.wait("m", 3, S.AVAILABLE, after=start)
        # Version 2 (aspired, available) keeps the model serving, so 1 may go before 3 arrives.
        assert events.find("m", 2, S.UNLOADING) is None
        assert [(v, s) for v, s, _, _ in status_of(core, "m")] == [
            (3, "AVAILABLE"),
            (2, "AVAILABLE"),
            (1, "END"),
        ]


def test_spec_resolution_errors(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path], caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    with (
        caplog.at_level(logging.WARNING, logger="sigserve.manager"),
        running(model_config(("m", base), labels='version_labels { key: "stable" value: 1 }'), **FAST) as (
            core,
            _,
        ),
    ):
        cases = [
            (("nope",), {}, Code.NOT_FOUND, "Servable not found for request: Latest(nope)"),
            (("m", 999), {}, Code.NOT_FOUND, "Servable not found for request: Specific(m, 999)"),
            (
                ("m",),
                {"label": "canary"},
                Code.INVALID_ARGUMENT,
                "Unrecognized servable version label: canary",
            ),
            (
                ("nope",),
                {"label": "stable"},
                Code.INVALID_ARGUMENT,
                "Unrecognized servable version label: stable",
            ),
        ]
        for args, kwargs, code, message in cases:
            error = handle_error(core, *args, **kwargs)
            assert (error.code, error.message) == (code, message)
        # A version wins over a label, as ModelSpec's oneof allows only one of them anyway.
        assert served_version(core, "m", version=1, label="nope") == 1
        assert raises(core.model_status, "nope").message == "Could not find any versions of model nope"
        assert raises(core.model_status, "m", 5).message == "Could not find version 5 of model m"
        # TF Serving's text goes back unchanged (clients and tests compare it); the log says what is
        # served instead, once per unknown name.
        handle_error(core, "nope")
        hints = [r.getMessage() for r in caplog.records if "served models" in r.getMessage()]
        assert hints == ["Servable not found for request: Latest(nope); served models: m"]


# -- labels ----------------------------------------------------------------------------------------


def test_labels(tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]) -> None:
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    put_version(base, 2, versions_src[2])
    labels = 'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }'
    cfg = model_config(("m", base), policy="all {}", labels=labels)
    with running(cfg, **FAST) as (core, _):
        assert served_version(core, "m", label="stable") == 1
        assert served_version(core, "m", label="canary") == 2
        assert core.labels("m") == {"stable": 1, "canary": 2}

        # Re-point canary at 1 through a reload: allowed, 1 is available.
        labels = 'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 1 }'
        core.reload_config(model_config(("m", base), policy="all {}", labels=labels))
        assert served_version(core, "m", label="canary") == 1

        # A label on a version that is not available is refused with TF Serving's text.
        labels = 'version_labels { key: "canary" value: 7 }'
        error = raises(core.reload_config, model_config(("m", base), policy="all {}", labels=labels))
        assert (error.code, error.message) == (
            Code.FAILED_PRECONDITION,
            "Request to assign label to version 7 of model m, which is not currently available for inference",
        )


def test_label_on_an_unavailable_version_fails_start_up_unless_allowed(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    cfg = model_config(("m", base), labels='version_labels { key: "canary" value: 2 }')
    core = ServerCore(cfg, loader=load, **FAST)
    try:
        error = raises(core.start)
        assert error.code == Code.FAILED_PRECONDITION
        assert "version 2 of model m, which is not currently available" in error.message
    finally:
        core.stop()

    with running(cfg, allow_version_labels_for_unavailable_models=True, **FAST) as (core, events):
        error = handle_error(core, "m", label="canary")
        assert (error.code, error.message) == (
            Code.NOT_FOUND,
            "Servable not found for request: Specific(m, 2)",
        )
        # Version 2 appears (latest policy): the label now reaches it.
        put_version(base, 2, versions_src[2])
        events.wait("m", 2, S.AVAILABLE)
        assert served_version(core, "m", label="canary") == 2
        # Re-pointing an existing label still needs an available target.
        cfg2 = model_config(("m", base), labels='version_labels { key: "canary" value: 9 }')
        assert raises(core.reload_config, cfg2).code == Code.FAILED_PRECONDITION
        # A new label may point at a version that is not there yet.
        cfg3 = model_config(("m", base), labels='version_labels { key: "next" value: 9 }')
        core.reload_config(cfg3)
        assert core.labels("m") == {"next": 9}


def test_fail_if_no_model_versions_found_with_a_model_on_a_store(
    versions_src: dict[int, pathlib.Path],
) -> None:
    """On a store a complete version needs two polls to count; the start-up check already takes it
    as there (it is uploaded, only not yet known to be finished). memory:// runs the store path."""
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"fail-fast-{uuid.uuid4().hex[:8]}"
    for path in versions_src[1].rglob("*"):
        if path.is_file():
            fs.pipe(f"/{root}/m/1/{path.relative_to(versions_src[1]).as_posix()}", path.read_bytes())
    strict = {"fail_if_no_model_versions_found": True, **FAST}
    try:
        with running(model_config(("m", f"memory://{root}/m")), **strict) as (core, _):  # type: ignore[arg-type]
            assert served_version(core, "m") == 1
        core = ServerCore(model_config(("m", f"memory://{root}/none")), loader=load, **strict)  # type: ignore[arg-type]
        try:
            error = raises(core.start)
        finally:
            core.stop()
        assert error.message == (
            f"Could not find base path memory://{root}/none for servable m with error NOT_FOUND: "
            f"memory://{root}/none not found"
        )
    finally:
        fs.rm(f"/{root}", recursive=True)


# -- config files and reloads -----------------------------------------------------------------------


def test_two_model_config_file_and_a_reload_that_drops_one(
    tmp_path: pathlib.Path, fixtures_dir: pathlib.Path
) -> None:
    """TF Serving's good_model_config.txt, placeholders substituted; then a reload without half_plus_three."""
    text = (fixtures_dir / "good_model_config.txt").read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", str(fixtures_dir / "saved_model_half_plus_two_cpu"))
    text = text.replace("${TEST_HALF_PLUS_THREE_DIR}", str(fixtures_dir / "saved_model_half_plus_three"))
    path = tmp_path / "models.config"
    path.write_text(text)
    with running(manager_config.read(str(path)), **FAST) as (core, events):
        assert core.model_names() == ["half_plus_two", "half_plus_three"]
        assert served_version(core, "half_plus_two") == 123
        with core.handle("half_plus_three") as three:
            assert (
                three.regress([{"x": 1.0}], signature_name="tensorflow/serving/regress").regressions[0].value
                == 3.5
            )
        with core.handle("half_plus_two") as two_before:
            pass

        start = len(events.items)
        dropped = manager_config.read(str(path))
        del dropped.model_config_list.config[1]
        assert [m.name for m in dropped.model_config_list.config] == ["half_plus_two"]
        core.reload_config(dropped)
        # Back from the reload: half_plus_three is out of service, half_plus_two was not touched.
        error = handle_error(core, "half_plus_three")
        assert (error.code, error.message) == (
            Code.NOT_FOUND,
            "Servable not found for request: Latest(half_plus_three)",
        )
        events.wait("half_plus_three", 123, S.END, after=start)
        assert events.states("half_plus_two")[-1] == ("half_plus_two", 123, S.AVAILABLE)
        with core.handle("half_plus_two") as two_after:
            assert two_after is two_before
        assert core.model_names() == ["half_plus_two"]
        assert status_of(core, "half_plus_three") == [(123, "END", "OK", "")]  # remembered
        assert core.ready()

        # And back again: the model returns as a fresh load.
        core.reload_config(manager_config.read(str(path)))
        with core.handle("half_plus_three") as three:
            assert (
                three.regress([{"x": 2.0}], signature_name="tensorflow/serving/regress").regressions[0].value
                == 4.0
            )
        assert status_of(core, "half_plus_three") == [(123, "AVAILABLE", "OK", "")]


def test_reload_errors_leave_the_served_models_alone(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    with running(model_config(("m", base)), **FAST) as (core, events):
        duplicate = model_config(("m", base), ("m", base))
        error = raises(core.reload_config, duplicate)
        assert (error.code, error.message) == (
            Code.INVALID_ARGUMENT,
            "Illegal to list model m multiple times in config list",
        )
        relative = model_config(("m", pathlib.Path("relative/m")))
        assert raises(core.reload_config, relative).message.startswith(
            "Expected model m to have an absolute path"
        )
        custom = model_server_config_pb2.ModelServerConfig()
        custom.custom_model_config.type_url = "type.googleapis.com/x.Y"
        for other in (custom, model_server_config_pb2.ModelServerConfig()):
            assert raises(core.reload_config, other).message == (
                "Cannot transition to requested config. It is only legal to transition "
                "from one ModelConfigList to another."
            )
        assert served_version(core, "m") == 1
        assert events.states("m") == [("m", 1, S.START), ("m", 1, S.LOADING), ("m", 1, S.AVAILABLE)]


def test_reload_moves_a_model_to_another_policy(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    put_version(base, 2, versions_src[2])
    with running(model_config(("m", base)), **FAST) as (core, events):
        assert served_version(core, "m") == 2
        core.reload_config(model_config(("m", base), policy="specific { versions: 1 }"))
        events.wait("m", 2, S.END)
        assert served_version(core, "m") == 1


# -- failures ----------------------------------------------------------------------------------------


def test_corrupt_versions_leave_the_old_version_serving(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    with running(model_config(("m", base)), **FAST) as (core, events):
        # Version 2: saved_model.pb cut in half.
        staging = put_version(tmp_path / "staging", 2, versions_src[2])
        pb = staging / "saved_model.pb"
        pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 2])
        os.rename(staging, base / "2")
        events.wait("m", 2, S.END)
        assert served_version(core, "m") == 1
        status = status_of(core, "m")
        assert status[0][:2] == (2, "END") and status[0][2] != "OK" and status[0][3]
        assert status[1] == (1, "AVAILABLE", "OK", "")

        # Version 3: no variables at all.
        staging = put_version(tmp_path / "staging", 3, versions_src[3])
        shutil.rmtree(staging / "variables")
        os.rename(staging, base / "3")
        events.wait("m", 3, S.END)
        error = events.error("m", 3)
        assert error is not None and error.code != Code.OK
        assert served_version(core, "m") == 1
        assert [(v, s) for v, s, _, _ in status_of(core, "m")] == [(3, "END"), (2, "END"), (1, "AVAILABLE")]
        assert core.ready()
        # The failed versions were never available; version 1 never stopped.
        assert events.find("m", 2, S.AVAILABLE) is None and events.find("m", 3, S.AVAILABLE) is None
        assert events.find("m", 1, S.UNLOADING) is None


def test_a_version_still_being_copied_is_retried_and_never_served_half_written(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    clock = ManualClock()
    retry = 1.0  # seconds on the manual clock
    attempts = Attempts()
    options = {
        "file_system_poll_wait_seconds": POLL,
        "max_num_load_retries": 1000,
        "load_retry_interval_micros": int(retry * 1e6),
    }
    with running(model_config(("m", base)), clock=clock, loader=attempts, **options) as (core, events):
        # A copy in progress, in place: variables first, saved_model.pb not yet there.
        target = base / "2"
        target.mkdir()
        shutil.copytree(versions_src[2] / "variables", target / "variables")
        clock.advance(POLL)
        events.wait("m", 2, S.LOADING)
        for tries in (1, 2):
            clock.wait_for_sleeper(retry_wait("m", 2))
            assert len(attempts.of(2)) == tries and "ok" not in attempts.of(2)
            if tries == 1:
                clock.advance(retry)
        # Now saved_model.pb arrives, but only partly written.
        data = (versions_src[2] / "saved_model.pb").read_bytes()
        with open(target / "saved_model.pb", "wb") as f:
            f.write(data[: len(data) // 3])
            f.flush()
            clock.advance(retry)
            clock.wait_for_sleeper(retry_wait("m", 2))  # the third attempt read the partial file
            assert len(attempts.of(2)) == 3 and attempts.of(2)[-1] != "ok"
            assert events.states("m", 2) == [("m", 2, S.START), ("m", 2, S.LOADING)]  # still retrying
            assert served_version(core, "m") == 1
            assert core.model_status("m", 2).model_version_status[0].state == S.LOADING
            f.write(data[len(data) // 3 :])
        clock.advance(retry)
        events.wait("m", 2, S.AVAILABLE)
        assert attempts.of(2)[-1] == "ok" and len(attempts.of(2)) == 4
        assert served_version(core, "m") == 2
        events.wait("m", 1, S.END)


def test_start_up_fails_with_tf_servings_message_when_no_version_can_load(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path], fixtures_dir: pathlib.Path
) -> None:
    base = tmp_path / "m"
    staging = put_version(base, 7, versions_src[1])
    (staging / "saved_model.pb").write_bytes(b"\x08\x01garbage")
    cfg = model_config(("m", base), ("legacy", fixtures_dir / "bad_half_plus_two"))
    core = ServerCore(cfg, loader=load, file_system_poll_wait_seconds=POLL, load_retry_interval_micros=1000)
    events = Events(core)
    try:
        error = raises(core.start)
    finally:
        core.stop()
    assert error.code == Code.UNKNOWN
    assert error.message.startswith(
        "2 model(s) did not become available: {{{name: m version: 7} due to error: "
    )
    assert "{{name: legacy version: 123} due to error: " in error.message
    assert error.message.endswith("}, }")
    # max_num_load_retries defaults to 5: six attempts, one LOADING, then END with the error.
    assert events.states("m") == [("m", 7, S.START), ("m", 7, S.LOADING), ("m", 7, S.END)]
    assert status_of(core, "legacy")[0][:2] == (123, "END")
    assert not core.ready()


def test_a_loader_that_raises_something_else_is_an_unknown_error(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    put_version(base, 2, versions_src[2])
    calls: list[LoadRequest] = []

    def picky(request: LoadRequest) -> Any:
        calls.append(request)
        if request.version == 2:
            raise MemoryError("no room for version 2")
        return load(request)

    with running(model_config(("m", base), policy="all {}"), loader=picky, **FAST) as (core, events):
        wait_until(lambda: events.find("m", 2, S.END) is not None)
        assert status_of(core, "m")[0] == (2, "END", "UNKNOWN", "MemoryError: no room for version 2")
        assert served_version(core, "m") == 1
    assert sorted(c.version for c in calls) == [1, 2]
    assert all(c.path == str(base / str(c.version)) and c.name == "m" for c in calls)


# -- lifecycle -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def version_1_draining(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> Iterator[tuple[ServerCore, Events, ManualClock, Any, Callable[[], None]]]:
    """Version 1 serves and a request holds it; version 2 is published, so version 1 is UNLOADING and
    its unload waits (no deadline) for that request. Yields (core, events, clock, the servable the
    request holds, a function that ends the request)."""
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    clock = ManualClock()
    with (
        running(model_config(("m", base)), clock=clock, **FAST) as (core, events),
        contextlib.ExitStack() as held,
    ):
        old = held.enter_context(core.handle("m"))
        assert old.version == 1
        put_version(base, 2, versions_src[2])
        clock.advance(POLL)
        clock.wait_for_sleeper(f"drain {servable_id('m', 1)}")
        yield core, events, clock, old, held.close


def test_an_old_version_unloads_only_after_its_in_flight_requests(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    with version_1_draining(tmp_path, versions_src) as (core, events, _, old, end_request):
        assert events.find("m", 1, S.UNLOADING) is not None
        assert served_version(core, "m") == 2  # new requests already go to 2
        assert events.find("m", 1, S.END) is None  # the unload waits for this request
        assert old.predict({"x": np.float32([[3.0]])})["y"].tolist() == [[3.5]]
        end_request()
        events.wait("m", 1, S.END)
        assert events.states("m", 1)[-2:] == [("m", 1, S.UNLOADING), ("m", 1, S.END)]


def test_a_version_that_comes_back_while_it_unloads_is_loaded_again_after_its_end(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    with version_1_draining(tmp_path, versions_src) as (core, events, clock, old, end_request):
        drop_version(tmp_path / "m", 2)  # version 1 is the latest on disk again, while it drains
        clock.advance(POLL)
        clock.wait_for_sleeper(POLL_WAIT)
        assert served_version(core, "m") == 2  # 2 serves until 1 is back
        assert old.version == 1
        end_request()
        events.wait("m", 2, S.END)
        assert served_version(core, "m") == 1
        cycle = [S.START, S.LOADING, S.AVAILABLE, S.UNLOADING, S.END]
        assert events.states("m", 1) == [("m", 1, s) for s in cycle + cycle[:3]]
        assert events.states("m", 2) == [("m", 2, s) for s in cycle]


def test_start_without_waiting_and_a_base_path_that_appears_later(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path], caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "later"
    clock = ManualClock()
    missing = f"Could not find base path {base} for servable m with error NOT_FOUND: {base} not found"
    expected = f"expected numbered version directories there, e.g. {base}/1/saved_model.pb"

    def problems() -> list[str]:
        return [r.getMessage() for r in caplog.records if "base path" in r.getMessage()]

    with (
        caplog.at_level(logging.INFO, logger="sigserve.manager"),
        running(model_config(("m", base)), wait=False, clock=clock, **FAST) as (core, events),
    ):
        clock.wait_for_sleeper(POLL_WAIT)  # the first poll found no base path
        assert not core.ready()
        # The status says why after TF Serving's text; the log names the path and what belongs there.
        assert raises(core.model_status, "m").message == f"Could not find any versions of model m; {missing}"
        line = f"{missing}; {expected}; looking again every 0.05 s" + FAIL_FAST_HINT
        assert problems() == [line]
        # Not on every poll, but again every SOURCE_PROBLEM_LOG_INTERVAL_SECONDS while it lasts.
        clock.advance(POLL)
        clock.wait_for_sleeper(POLL_WAIT)
        assert problems() == [line]
        clock.advance(SOURCE_PROBLEM_LOG_INTERVAL_SECONDS)
        clock.wait_for_sleeper(POLL_WAIT)
        assert problems() == [line, line]
        base.mkdir()
        clock.advance(POLL)
        clock.wait_for_sleeper(POLL_WAIT)  # the next one found it empty
        assert not core.ready()
        assert events.items == []
        assert problems()[-1].startswith(
            f"No versions of servable m found under base path {base}. Did you forget to name your leaf "
            f"directory as a number (eg. '/1/')?; {expected}"
        )
        put_version(base, 5, versions_src[1])
        clock.advance(POLL)
        events.wait("m", 5, S.AVAILABLE)
        # The AVAILABLE callback can run a moment before ready() reads the new state.
        wait_until(core.ready, timeout=10, what="core.ready()")
        assert served_version(core, "m") == 5
        assert problems()[-1] == f"Servable m: base path {base} holds versions again"


def test_fail_if_no_model_versions_found(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    """TF Serving's option: start-up (and a reload) fails at once instead of waiting for a version."""
    missing, empty, good = tmp_path / "missing", tmp_path / "empty", tmp_path / "good"
    empty.mkdir()
    put_version(good, 1, versions_src[1])
    fail_fast = {"fail_if_no_model_versions_found": True, **FAST}
    for base, message in (
        (
            missing,
            f"Could not find base path {missing} for servable m with error NOT_FOUND: {missing} not found",
        ),
        (
            empty,
            f"Unable to find a numerical version path for servable m at: {empty}; expected numbered "
            f"version directories there, e.g. {empty}/1/saved_model.pb",
        ),
    ):
        core = ServerCore(model_config(("m", base)), loader=load, **fail_fast)
        try:
            error = raises(core.start)
        finally:
            core.stop()
        assert (error.code, error.message) == (Code.NOT_FOUND, message)
    with running(model_config(("m", good)), **fail_fast) as (core, _):
        assert served_version(core, "m") == 1
        error = raises(core.reload_config, model_config(("m", good), ("other", empty)))
        assert error.message.startswith("Unable to find a numerical version path for servable other at: ")
        assert core.model_names() == ["m"]  # the reload did not happen


def test_stop_interrupts_a_start_that_is_still_waiting(tmp_path: pathlib.Path) -> None:
    (tmp_path / "empty").mkdir()
    clock = ManualClock()
    core = ServerCore(model_config(("m", tmp_path / "empty")), loader=load, clock=clock, **FAST)
    assert not core.ready()
    outcome: list[BaseException | None] = []

    def start() -> None:
        try:
            core.start()
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=start)
    thread.start()
    clock.wait_for_sleeper(POLL_WAIT)  # the base path was listed: no version
    clock.wait_for_sleeper("settle")
    assert outcome == []  # no version yet: start-up waits, as TF Serving does
    assert not core.ready()
    core.stop()
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], SigserveError)
    assert outcome[0].code == Code.CANCELLED


def test_poll_once(tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]) -> None:
    """file_system_poll_wait_seconds=0: the base path is listed once; later versions are not seen."""
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    clock = ManualClock()
    cfg = model_config(("m", base))
    with running(cfg, file_system_poll_wait_seconds=0, max_num_load_retries=0, clock=clock) as (core, events):
        put_version(base, 2, versions_src[2])
        clock.advance(3600.0)
        clock.wait_for_sleeper(POLL_WAIT)
        assert clock.sleepers() == [(POLL_WAIT, None)]  # no next poll, ever
        assert served_version(core, "m") == 1
        assert events.find("m", 2, S.START) is None
        # A reload lists the base path again.
        core.reload_config(cfg)
        events.wait("m", 2, S.AVAILABLE)
        assert served_version(core, "m") == 2


def test_a_version_waiting_to_retry_ends_as_soon_as_it_is_no_longer_wanted(
    tmp_path: pathlib.Path, versions_src: dict[int, pathlib.Path]
) -> None:
    """Retries are a minute apart by default; deleting the version, dropping the model or stopping
    must not wait for the next one."""
    base = tmp_path / "m"
    put_version(base, 1, versions_src[1])
    other = tmp_path / "other"
    (other / "4").mkdir(parents=True)  # an empty version directory: every load fails
    cfg = model_config(("m", base), ("other", other))
    clock = ManualClock()
    began = clock.monotonic()
    slow_retries = {"file_system_poll_wait_seconds": POLL, "load_retry_interval_micros": 60_000_000}
    with running(cfg, wait=False, clock=clock, **slow_retries) as (core, events):
        events.wait("m", 1, S.AVAILABLE)
        clock.wait_for_sleeper(retry_wait("other", 4))
        (base / "2").mkdir()
        clock.advance(POLL)
        clock.wait_for_sleeper(retry_wait("m", 2))  # the first attempt failed; the next is a minute away
        (base / "2").rmdir()
        clock.advance(POLL)  # the next poll finds it gone
        events.wait("m", 2, S.END)
        assert events.error("m", 2) is not None  # the last load error is kept
        assert served_version(core, "m") == 1

        # The model whose only version keeps failing is dropped by a reload: the reload returns
        # without the clock reaching its next retry.
        core.reload_config(model_config(("m", base)))
        assert status_of(core, "other")[0][:2] == (4, "END")
        wait_until(core.ready, timeout=10, what="the background start-up to settle")
        # A version of m that keeps failing is still retrying when stop() is called.
        (base / "3").mkdir()
        clock.advance(POLL)
        clock.wait_for_sleeper(retry_wait("m", 3))
    assert events.states("m", 3)[-1] == ("m", 3, S.END)  # stop() did not wait for the retry
    assert clock.monotonic() - began < 1.0  # no retry was ever due
