"""Shared pytest fixtures: where the TF Serving fixtures live, free ports, exported test models."""

from __future__ import annotations

import os
import pathlib
import socket

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "tfserving"

# Quiet TensorFlow in test subprocesses and this process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    """../shared/fixtures/tfserving; tests that need it skip when the checkout has no ../shared."""
    if not FIXTURES.is_dir():
        pytest.skip(f"TF Serving fixtures not found at {FIXTURES} (../shared is absent)")
    return FIXTURES


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def exported_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """Models exported with TensorFlow once per test session (see tests/models.py)."""
    from tests import models

    base = tmp_path_factory.mktemp("exported")
    return models.export_all(base)


@pytest.fixture
def versions_src(fixtures_dir: pathlib.Path) -> dict[int, pathlib.Path]:
    """Half-plus-two SavedModels to publish as versions (all compute y = 0.5x + 2)."""
    root = fixtures_dir / "saved_model_half_plus_two_2_versions"
    return {1: root / "00000123", 2: root / "00000124", 3: root / "00000123"}
