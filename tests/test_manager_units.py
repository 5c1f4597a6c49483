"""sigserve.manager's pure rules, without TensorFlow: ModelServerConfig checks, the version-directory
source, version policies, the availability-preserving policy, labels, the status monitor, and the
TFRecord reader that carries warmup requests (tfserving-api.md §1.5, §4)."""

from __future__ import annotations

import io
import logging
import os
import pathlib
import struct
import subprocess
import sys
import threading
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigserve.errors import Code, SigserveError
from sigserve.manager import ManualClock, config, labels, policy, source, tfrecord
from sigserve.manager.core import _Version
from sigserve.manager.lifecycle import ServableState, StateMonitor
from sigserve.manager.policy import Action, VersionSnapshot
from sigserve.manager.states import TRANSITIONS, IllegalTransition, check_transition, is_legal
from sigserve.protos import model_server_config_pb2

S = ServableState


def error_of(call, *args) -> SigserveError:  # type: ignore[no-untyped-def]
    with pytest.raises(SigserveError) as info:
        call(*args)
    return info.value


# -- config ----------------------------------------------------------------------------------------


def test_tf_serving_good_config_parses_with_its_placeholders_substituted(fixtures_dir: pathlib.Path) -> None:
    text = (fixtures_dir / "good_model_config.txt").read_text()
    assert "${TEST_HALF_PLUS_TWO_DIR}" in text  # no expansion: the caller substitutes
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", "/models/two").replace(
        "${TEST_HALF_PLUS_THREE_DIR}", "/models/three"
    )
    models = config.model_configs(config.parse(text))
    assert [(m.name, m.base_path, m.model_platform) for m in models] == [
        ("half_plus_two", "/models/two", "tensorflow"),
        ("half_plus_three", "/models/three", "tensorflow"),
    ]


def test_tf_serving_bad_config_is_a_parse_error(fixtures_dir: pathlib.Path) -> None:
    path = fixtures_dir / "bad_model_config.txt"
    error = error_of(config.read, str(path))
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message.startswith(f"Invalid protobuf file: '{path}': ")


def test_unreadable_config_file() -> None:
    error = error_of(config.read, "/nonexistent/models.config")
    assert error.code == Code.INVALID_ARGUMENT
    assert "Could not read model config file '/nonexistent/models.config'" in error.message


def _config(*entries: str) -> model_server_config_pb2.ModelServerConfig:
    body = "".join(f"config {{ {e} }} " for e in entries)
    return config.parse(f"model_config_list {{ {body} }}")


def test_relative_base_path_is_rejected_with_tf_servings_text() -> None:
    error = error_of(
        config.model_configs, _config('name: "m" base_path: "models/m" model_platform: "tensorflow"')
    )
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        "Expected model m to have an absolute path or URI; got base_path()=models/m",
    )


def test_duplicate_model_names_are_rejected_with_tf_servings_text() -> None:
    entry = 'name: "m" base_path: "/m" model_platform: "tensorflow"'
    error = error_of(config.model_configs, _config(entry, entry))
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        "Illegal to list model m multiple times in config list",
    )


def test_platform_rules() -> None:
    neither = error_of(config.model_configs, _config('name: "m" base_path: "/m"'))
    assert neither.code == Code.INVALID_ARGUMENT
    assert neither.message.startswith("Illegal setting neither model_type(deprecated) nor model_platform.")
    both = error_of(
        config.model_configs, _config('name: "m" base_path: "/m" model_type: TENSORFLOW model_platform: "x"')
    )
    assert both.message == "Illegal setting both model_type(deprecated) and model_platform."
    other = error_of(config.model_configs, _config('name: "m" base_path: "/m" model_platform: "pytorch"'))
    assert other.code == Code.INVALID_ARGUMENT and "'pytorch'" in other.message
    # The deprecated model_type still works.
    (model,) = config.model_configs(_config('name: "m" base_path: "/m" model_type: TENSORFLOW'))
    assert config.platform_of(model) == "tensorflow"


def test_uris() -> None:
    (model,) = config.model_configs(
        _config('name: "m" base_path: "file:///models/m" model_platform: "tensorflow"')
    )
    assert config.local_path(model.base_path) == "/models/m"
    (remote,) = config.model_configs(
        _config('name: "m" base_path: "gs://bucket/m" model_platform: "tensorflow"')
    )
    assert remote.base_path == "gs://bucket/m"  # read through gcsfs (sigserve[gcs])
    unknown = error_of(
        config.model_configs, _config('name: "m" base_path: "ftp://host/m" model_platform: "tensorflow"')
    )
    assert unknown.code == Code.INVALID_ARGUMENT
    assert unknown.message.startswith("Unknown scheme 'ftp://' in ftp://host/m: sigserve reads local paths")


def test_only_model_config_list() -> None:
    custom = model_server_config_pb2.ModelServerConfig()
    custom.custom_model_config.type_url = "type.googleapis.com/x.Y"
    assert error_of(config.model_configs, custom).code == Code.UNIMPLEMENTED
    assert config.model_configs(model_server_config_pb2.ModelServerConfig()) == []
    listed = _config('name: "m" base_path: "/m" model_platform: "tensorflow"')
    config.check_transition(listed, listed)
    config.check_transition(model_server_config_pb2.ModelServerConfig(), custom)
    error = error_of(config.check_transition, listed, custom)
    assert (error.code, error.message) == (
        Code.FAILED_PRECONDITION,
        "Cannot transition to requested config. It is only legal to transition "
        "from one ModelConfigList to another.",
    )


def test_single_model_config() -> None:
    (model,) = config.model_configs(config.single_model("half", "/models/half"))
    assert (model.name, model.base_path, model.model_platform) == ("half", "/models/half", "tensorflow")


# -- source ----------------------------------------------------------------------------------------


def test_version_directories(tmp_path: pathlib.Path) -> None:
    for name in ("1", "00000123", "7", "007", "v2", "1.0", "-3", "tmp-9", "١٢"):
        (tmp_path / name).mkdir()
    (tmp_path / "42").write_text("a file is not a version")
    (tmp_path / "99999999999999999999").mkdir()  # beyond int64
    os.symlink(tmp_path / "1", tmp_path / "5")
    versions = source.list_versions("m", str(tmp_path))
    assert versions == {
        1: str(tmp_path / "1"),
        5: str(tmp_path / "5"),
        7: str(tmp_path / "007"),  # `007` sorts before `7`: the first name wins, every poll
        123: str(tmp_path / "00000123"),
    }


def test_missing_base_path_and_no_versions(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope"
    error = error_of(source.list_versions, "m", str(missing))
    assert error.code == Code.NOT_FOUND
    assert error.message.startswith(f"Could not find base path {missing} for servable m with error")
    assert source.list_versions("m", str(tmp_path)) == {}
    assert source.no_versions_message("m", "/b") == (
        "No versions of servable m found under base path /b. "
        "Did you forget to name your leaf directory as a number (eg. '/1/')?"
    )


@given(st.text(max_size=25))
def test_parse_version_accepts_exactly_ascii_digit_strings_within_int64(name: str) -> None:
    version = source.parse_version(name)
    if name and all("0" <= c <= "9" for c in name) and int(name) < 2**63:
        assert version == int(name)
    else:
        assert version is None


# -- version policies ------------------------------------------------------------------------------


def _policy(text: str) -> model_server_config_pb2.ModelConfig:
    model = model_server_config_pb2.ModelConfig()
    from google.protobuf import text_format

    text_format.Parse(f"model_version_policy {{ {text} }}", model)
    return model.model_version_policy


DISK = {1: "/b/1", 3: "/b/3", 7: "/b/7", 12: "/b/12"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [12]),  # unset: latest 1
        ("latest {}", [12]),  # num_versions 0 means 1
        ("latest { num_versions: 1 }", [12]),
        ("latest { num_versions: 2 }", [7, 12]),
        ("latest { num_versions: 10 }", [1, 3, 7, 12]),
        ("all {}", [1, 3, 7, 12]),
        ("specific { versions: 3 }", [3]),
        ("specific { versions: 1 versions: 12 versions: 99 }", [1, 12]),  # 99 is not on disk
        ("specific {}", []),
    ],
)
def test_aspired_versions(text: str, expected: list[int]) -> None:
    aspired = policy.aspired_versions("m", _policy(text), DISK)
    assert sorted(aspired) == expected
    assert all(aspired[v] == DISK[v] for v in aspired)
    assert policy.aspired_versions("m", _policy(text), {}) == {}


def snap(version: int, aspired: bool, state: ServableState) -> VersionSnapshot:
    return VersionSnapshot(version, aspired, state)


def test_next_action_loads_the_highest_new_version_first() -> None:
    assert policy.next_action([snap(1, True, S.START), snap(2, True, S.START)]) == (Action.LOAD, 2)
    assert policy.next_action([]) is None


def test_next_action_keeps_the_old_version_until_the_new_one_is_available() -> None:
    old_serving = snap(1, False, S.AVAILABLE)
    assert policy.next_action([old_serving, snap(2, True, S.START)]) == (Action.LOAD, 2)
    assert policy.next_action([old_serving, snap(2, True, S.LOADING)]) is None
    assert policy.next_action([old_serving, snap(2, True, S.AVAILABLE)]) == (Action.UNLOAD, 1)
    # The new version failed: the old one keeps serving, forever.
    assert policy.next_action([old_serving, snap(2, True, S.END)]) is None


def test_next_action_unloads_everything_of_a_removed_model_smallest_first() -> None:
    versions = [snap(3, False, S.AVAILABLE), snap(1, False, S.AVAILABLE)]
    assert policy.next_action(versions) == (Action.UNLOAD, 1)
    assert policy.next_action([snap(3, False, S.AVAILABLE)]) == (Action.UNLOAD, 3)


def test_next_action_never_unloads_the_last_serving_version_for_an_unavailable_new_one() -> None:
    versions = [snap(1, False, S.AVAILABLE), snap(2, False, S.AVAILABLE), snap(3, True, S.LOADING)]
    assert policy.next_action(versions) == (Action.UNLOAD, 1)
    assert policy.next_action(versions[1:]) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("aspire"), st.frozensets(st.integers(1, 6), max_size=4)),
            st.tuples(st.just("act"), st.booleans()),
        ),
        max_size=40,
    )
)
def test_availability_is_preserved_under_any_sequence(ops: list[tuple[str, object]]) -> None:
    """Drive the policy like the manager does (aspired-set changes, loads that succeed or fail) and
    check that a model that served never stops serving while anything is aspired, and that the policy
    converges to serving the aspired versions."""
    versions: dict[int, list[object]] = {}  # version -> [aspired, state]

    def housekeeping() -> None:
        for v, (aspired, state) in list(versions.items()):
            if not aspired and state in (S.START, S.END):
                del versions[v]

    def serving() -> int:
        return sum(1 for _, state in versions.values() if state == S.AVAILABLE)

    def act(load_ok: bool) -> bool:
        housekeeping()
        action = policy.next_action(snap(v, bool(a), s) for v, (a, s) in versions.items())  # type: ignore[arg-type]
        if action is None:
            return False
        kind, v = action
        before = serving()
        if kind is Action.LOAD:
            assert versions[v][0] and versions[v][1] == S.START
            versions[v][1] = S.AVAILABLE if load_ok else S.END
        else:
            assert not versions[v][0] and versions[v][1] == S.AVAILABLE
            del versions[v]
            still_aspired = any(a for a, _ in versions.values())
            assert serving() >= 1 or not still_aspired, "unloaded the last serving version"
            assert serving() == before - 1
        return True

    def aspire(wanted: frozenset[int]) -> None:
        for v, entry in versions.items():
            entry[0] = v in wanted
        for v in wanted:
            versions.setdefault(v, [True, S.START])

    for op, arg in ops:
        if op == "aspire":
            aspire(arg)  # type: ignore[arg-type]
        else:
            act(bool(arg))
    for _ in range(50):
        if not act(True):
            break
    else:
        pytest.fail("the policy did not converge")
    aspired = {v for v, (a, _) in versions.items() if a}
    assert all(versions[v][1] in (S.AVAILABLE, S.END) for v in aspired)
    if any(versions[v][1] == S.AVAILABLE for v in aspired) or not aspired:
        assert all(a for a, s in versions.values() if s == S.AVAILABLE), "an un-aspired version still serves"
    else:
        assert sum(1 for a, s in versions.values() if not a and s == S.AVAILABLE) <= 1


# -- states ----------------------------------------------------------------------------------------


def test_the_legal_transitions_are_servable_state_h() -> None:
    """Forward only (servable_state.h), plus END -> START for a version tracked anew."""
    legal = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert legal == {
        (None, S.START),
        (S.START, S.LOADING),
        (S.START, S.END),
        (S.LOADING, S.AVAILABLE),
        (S.LOADING, S.END),
        (S.AVAILABLE, S.UNLOADING),
        (S.UNLOADING, S.END),
        (S.END, S.START),
    }


@given(st.lists(st.sampled_from(list(S)), max_size=12))
def test_check_transition_accepts_exactly_the_table(walk: list[ServableState]) -> None:
    """Along any walk, a state is accepted iff the table has it; a refused one changes nothing, and an
    accepted one moves forward unless it starts the version over (END -> START)."""
    state: ServableState | None = None
    for new in walk:
        try:
            check_transition("{name: m version: 1}", state, new)
        except IllegalTransition as e:
            assert not is_legal(state, new)
            assert (e.code, e.old, e.new) == (Code.INTERNAL, state, new)
            continue
        assert is_legal(state, new)
        assert state is None or new > state or (state, new) == (S.END, S.START)
        state = new


def test_an_illegal_transition_is_logged_and_refused_by_the_monitor(caplog: pytest.LogCaptureFixture) -> None:
    monitor = StateMonitor()
    seen: list[tuple[int, ServableState]] = []
    monitor.subscribe(lambda name, version, state, error: seen.append((version, state)))
    with caplog.at_level(logging.ERROR, logger="sigserve.manager"):
        assert monitor.publish("m", 1, S.START)
        assert not monitor.publish("m", 1, S.AVAILABLE)  # skips LOADING
        assert not monitor.publish("m", 2, S.LOADING)  # never started
    assert [r.getMessage() for r in caplog.records] == [
        "Illegal servable state transition of {name: m version: 1}: START -> AVAILABLE "
        "(legal from START: LOADING, END); refused (a bug in sigserve, please report it)",
        "Illegal servable state transition of {name: m version: 2}: (untracked) -> LOADING "
        "(legal from (untracked): START); refused (a bug in sigserve, please report it)",
    ]
    assert seen == [(1, S.START)]
    status = monitor.get("m", 1)
    assert status is not None and status.state == S.START
    assert monitor.get("m", 2) is None
    # A version unloaded and then aspired again starts over.
    for state in (S.LOADING, S.AVAILABLE, S.UNLOADING, S.END, S.START):
        assert monitor.publish("m", 1, state)
    assert seen[-1] == (1, S.START)


def test_the_manager_refuses_an_illegal_move_of_a_version() -> None:
    entry: _Version[Any] = _Version("m", 3, "/m/3")
    with pytest.raises(IllegalTransition) as info:
        entry.move(S.UNLOADING)
    assert info.value.message.startswith("Illegal servable state transition of {name: m version: 3}: ")
    assert entry.state == S.START
    assert entry.move(S.LOADING) == ("m", 3, S.LOADING, None)
    assert entry.state == S.LOADING


# -- the manual clock --------------------------------------------------------------------------------


def test_manual_clock_wakes_a_wait_when_its_deadline_comes_and_not_before() -> None:
    clock = ManualClock(start=100.0)
    cond = threading.Condition()
    woke: list[float] = []

    def sleeper() -> None:
        with cond:
            clock.wait(cond, 105.0, "nap")
            woke.append(clock.monotonic())

    thread = threading.Thread(target=sleeper)
    thread.start()
    clock.wait_for_sleeper("nap")
    assert clock.sleepers() == [("nap", 105.0)]
    clock.advance(4.0)
    assert clock.sleepers() == [("nap", 105.0)] and woke == []
    clock.advance(1.0)
    thread.join(10)
    assert woke == [105.0] and clock.sleepers() == []


def test_manual_clock_waits_end_early_on_notify_and_at_once_when_due() -> None:
    clock = ManualClock(start=0.0)
    cond = threading.Condition()
    with cond:
        clock.wait(cond, 0.0, "due already")  # returns at once
    done = threading.Event()

    def sleeper() -> None:
        with cond:
            clock.wait(cond, None, "forever")
        done.set()

    thread = threading.Thread(target=sleeper)
    thread.start()
    clock.wait_for_sleeper("forever")
    clock.advance(1e9)
    assert clock.sleepers() == [("forever", None)]  # no deadline: time does not end it
    with cond:
        cond.notify_all()
    thread.join(10)
    assert done.is_set()
    with pytest.raises(AssertionError, match="nothing waits for 'poll'"):
        clock.wait_for_sleeper("poll", timeout=0.05)


# -- labels ----------------------------------------------------------------------------------------


def _labelled(name: str, **labels_: int) -> model_server_config_pb2.ModelConfig:
    model = model_server_config_pb2.ModelConfig(name=name, base_path=f"/{name}", model_platform="tensorflow")
    for label, version in labels_.items():
        model.version_labels[label] = version
    return model


def test_labels_point_only_at_available_versions() -> None:
    available = {("m", 1), ("m", 2)}
    models = [_labelled("m", stable=1, canary=2), _labelled("n")]
    assert labels.assign(models, lambda n, v: (n, v) in available, {}, False) == {
        "m": {"stable": 1, "canary": 2}
    }
    error = error_of(labels.assign, [_labelled("m", canary=3)], lambda n, v: (n, v) in available, {}, False)
    assert (error.code, error.message) == (
        Code.FAILED_PRECONDITION,
        "Request to assign label to version 3 of model m, which is not currently available for inference",
    )


def test_labels_for_unavailable_versions_only_when_new() -> None:
    def nothing(n: str, v: int) -> bool:
        return False

    models = [_labelled("m", canary=3)]
    assert labels.assign(models, nothing, {}, True) == {"m": {"canary": 3}}
    assert labels.assign(models, nothing, {"m": {"canary": 3}}, True) == {"m": {"canary": 3}}  # unchanged
    error = error_of(labels.assign, models, nothing, {"m": {"canary": 2}}, True)  # re-pointed
    assert error.code == Code.FAILED_PRECONDITION


def test_label_lookup() -> None:
    table = {"m": {"stable": 1}}
    assert labels.lookup(table, "m", "stable") == 1
    for name, label in (("m", "canary"), ("other", "stable")):
        error = error_of(labels.lookup, table, name, label)
        assert (error.code, error.message) == (
            Code.INVALID_ARGUMENT,
            f"Unrecognized servable version label: {label}",
        )


# -- status monitor --------------------------------------------------------------------------------


def test_status_lists_versions_highest_first_and_remembers_errors() -> None:
    monitor = StateMonitor()
    seen: list[tuple[str, int, ServableState, SigserveError | None]] = []
    monitor.subscribe(lambda *event: seen.append(event))
    failure = SigserveError(Code.DATA_LOSS, "truncated")
    for version, state, error in (
        (1, S.START, None),
        (1, S.LOADING, None),
        (1, S.AVAILABLE, None),
        (10, S.START, None),
        (10, S.LOADING, None),
        (10, S.END, failure),
        (2, S.START, None),
    ):
        monitor.publish("m", version, state, error)
    assert [(n, v, s) for n, v, s, _ in seen][:3] == [
        ("m", 1, S.START),
        ("m", 1, S.LOADING),
        ("m", 1, S.AVAILABLE),
    ]
    status = monitor.model_status("m")
    assert [
        (s.version, s.state, s.status.error_code, s.status.error_message) for s in status.model_version_status
    ] == [
        (10, S.END, Code.DATA_LOSS, "truncated"),
        (2, S.START, 0, ""),
        (1, S.AVAILABLE, 0, ""),
    ]
    assert [s.version for s in monitor.model_status("m", 2).model_version_status] == [2]
    missing = error_of(monitor.model_status, "x")
    assert (missing.code, missing.message) == (Code.NOT_FOUND, "Could not find any versions of model x")
    missing = error_of(monitor.model_status, "m", 7)
    assert (missing.code, missing.message) == (Code.NOT_FOUND, "Could not find version 7 of model m")
    assert error_of(monitor.model_status, "").message == "Could not find any versions of model "


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    monitor = StateMonitor()
    seen: list[int] = []

    def broken(*event: object) -> None:
        raise RuntimeError("boom")

    monitor.subscribe(broken)
    monitor.subscribe(lambda name, version, state, error: seen.append(version))
    monitor.publish("m", 4, S.START)
    assert seen == [4]


# -- TFRecord --------------------------------------------------------------------------------------


def test_crc32c_known_values() -> None:
    # RFC 3720 (iSCSI) test vectors and the classic check value.
    assert tfrecord.crc32c(b"123456789") == 0xE3069283
    assert tfrecord.crc32c(b"\x00" * 32) == 0x8A9136AA
    assert tfrecord.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert tfrecord.crc32c(bytes(range(32))) == 0x46DD794E
    assert tfrecord.crc32c(b"") == 0
    assert tfrecord.crc32c(b"6789", tfrecord.crc32c(b"12345")) == 0xE3069283
    assert tfrecord.crc32c(b"123456789") != zlib.crc32(b"123456789")  # not the IEEE polynomial


def _reference_crc32c(data: bytes, crc: int = 0) -> int:
    """Bit by bit, straight from the definition (reflected Castagnoli polynomial 0x82F63B78)."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


@given(st.binary(max_size=200), st.binary(max_size=50))
def test_crc32c_equals_the_definition(head: bytes, tail: bytes) -> None:
    assert tfrecord.crc32c(head + tail) == _reference_crc32c(head + tail)
    assert tfrecord.crc32c(tail, tfrecord.crc32c(head)) == _reference_crc32c(head + tail)


def test_crc32c_runs_in_compiled_code() -> None:
    # google-crc32c falls back on pure Python where its extension is missing: ~1,000x slower, which
    # makes every warmup file of tens of MB cost seconds at each load (bench/tfrecord.py).
    assert tfrecord.CRC_IMPLEMENTATION == "c"


@given(st.integers(0, 2**32 - 1))
def test_mask_round_trips(crc: int) -> None:
    assert tfrecord.unmask(tfrecord.mask(crc)) == crc


def test_encoding_matches_tensorflows_layout() -> None:
    record = tfrecord.encode(b"abc")
    assert record[:8] == struct.pack("<Q", 3)
    assert struct.unpack("<I", record[8:12])[0] == tfrecord.mask(tfrecord.crc32c(record[:8]))
    assert record[12:15] == b"abc"
    assert struct.unpack("<I", record[15:])[0] == tfrecord.mask(tfrecord.crc32c(b"abc"))


@given(st.lists(st.binary(max_size=300), max_size=6))
def test_records_round_trip(records: list[bytes]) -> None:
    stream = io.BytesIO(b"".join(tfrecord.encode(r) for r in records))
    assert list(tfrecord.read_records(stream)) == records


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=3), st.data())
def test_every_truncation_and_bit_flip_is_detected(records: list[bytes], data: st.DataObject) -> None:
    blob = b"".join(tfrecord.encode(r) for r in records)
    boundaries = {0}
    offset = 0
    for r in records:
        offset += 16 + len(r)
        boundaries.add(offset)
    cut = data.draw(st.integers(0, len(blob) - 1))
    if cut not in boundaries:
        with pytest.raises(SigserveError) as info:
            list(tfrecord.read_records(io.BytesIO(blob[:cut])))
        assert info.value.code == Code.DATA_LOSS
        assert info.value.message.startswith("truncated record at ")
    position = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(blob)
    flipped[position] ^= 1 << bit
    with pytest.raises(SigserveError) as info:
        list(tfrecord.read_records(io.BytesIO(bytes(flipped))))
    assert info.value.code == Code.DATA_LOSS
    assert "record at " in info.value.message


def test_corruption_names_the_records_offset() -> None:
    blob = bytearray(tfrecord.encode(b"first") + tfrecord.encode(b"second"))
    blob[21 + 12] ^= 0x01  # the first byte of the second record's data
    with pytest.raises(SigserveError) as info:
        list(tfrecord.read_records(io.BytesIO(bytes(blob))))
    assert info.value.message == "corrupted record at 21"


def test_a_huge_length_is_not_allocated() -> None:
    header = struct.pack("<Q", 2**62)
    blob = header + struct.pack("<I", tfrecord.mask(tfrecord.crc32c(header))) + b"short"
    with pytest.raises(SigserveError) as info:
        list(tfrecord.read_records(io.BytesIO(blob)))
    assert info.value.message == "truncated record at 0"


def test_the_manager_imports_without_tensorflow() -> None:
    code = (
        "import sys, sigserve.manager, sigserve.manager.warmup, sigserve.manager.tfrecord; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
