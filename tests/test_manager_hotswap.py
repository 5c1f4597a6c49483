"""Hot swap under load: client threads predict without pause while versions are added to and removed
from the base path, and every single request must succeed on a version that was AVAILABLE
(tfserving-api.md §4: availability-preserving policy, unload after in-flight requests)."""

from __future__ import annotations

import pathlib
import threading
import time

import numpy as np

from sigserve.manager import ServableState
from tests.manager_helpers import POLL, TWO_VERSIONS, drop_version, model_config, put_version, running

S = ServableState
CYCLES = 20  # each adds version 2 and removes it again: 40 swaps
CLIENTS = 4


def test_no_request_fails_while_versions_come_and_go(
    tmp_path: pathlib.Path, fixtures_dir: pathlib.Path
) -> None:
    base = tmp_path / "m"
    src = {1: fixtures_dir / TWO_VERSIONS / "00000123", 2: fixtures_dir / TWO_VERSIONS / "00000124"}
    put_version(base, 1, src[1])
    records: list[tuple[float, float, int]] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    with running(model_config(("m", base)), file_system_poll_wait_seconds=POLL, max_num_load_retries=0) as (
        core,
        events,
    ):

        def client(seed: int) -> None:
            rng = np.random.default_rng(seed)
            mine: list[tuple[float, float, int]] = []
            while not stop.is_set():
                # Client 0 sends large batches, so long requests are in flight across the swaps.
                rows = 50_000 if seed == 0 else int(rng.integers(1, 8))
                x = rng.uniform(-100, 100, size=(rows, 1)).astype(np.float32)
                t0 = time.monotonic()
                version = -1
                try:
                    with core.handle("m") as servable:
                        y = servable.predict({"x": x})["y"]
                        version = int(servable.version)
                    if not np.allclose(y, 0.5 * x + 2.0):
                        failures.append(f"wrong result from version {version}: {x.tolist()} -> {y.tolist()}")
                except Exception as e:  # any failure at all is what this test is about
                    failures.append(f"{type(e).__name__}: {e}")
                mine.append((t0, time.monotonic(), version))
            with lock:
                records.extend(mine)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            for _ in range(CYCLES):
                mark = len(events.items)
                put_version(base, 2, src[2])
                events.wait("m", 2, S.AVAILABLE, after=mark)
                events.wait("m", 1, S.END, after=mark)
                mark = len(events.items)
                drop_version(base, 2)
                events.wait("m", 1, S.AVAILABLE, after=mark)
                events.wait("m", 2, S.END, after=mark)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        swaps = len(events.items)

    assert failures == []
    # Every response came from a version between its AVAILABLE and the END that followed it.
    intervals: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    opened: dict[int, float] = {}
    for when, _name, version, state, error in events.items:
        assert error is None
        if state == S.AVAILABLE:
            opened[version] = when
        elif state == S.END and version in opened:
            intervals[version].append((opened.pop(version), when))
    assert len(intervals[2]) == CYCLES
    assert len(intervals[1]) == CYCLES + 1  # the last one ended at stop()
    for t0, t1, version in records:
        assert any(start <= t1 and t0 <= end for start, end in intervals[version]), (t0, t1, version)
    served = {v for _, _, v in records}
    assert served == {1, 2}
    assert len(records) > 20 * CYCLES  # the clients really were busy throughout
    # 40 swaps, and the model was never without an AVAILABLE version.
    available = 0
    for _, _, _, state, _ in events.items[:swaps]:
        if state == S.AVAILABLE:
            available += 1
        elif state == S.UNLOADING:
            available -= 1
            assert available >= 1
