"""Shared fixtures: the recorded Asterisk traces and a private Redis server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.redisproc import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def _find_traces() -> Path:
    env = os.environ.get("IVR_TRACES")
    candidates = [Path(env)] if env else []
    candidates += [ROOT.parent / "shared" / "asterisk-traces", ROOT / "tests" / "traces"]
    for c in candidates:
        if (c / "README.md").exists():
            return c
    raise RuntimeError("Asterisk traces not found; set IVR_TRACES")


TRACES = _find_traces()
SCENARIOS = sorted(p for p in TRACES.iterdir() if p.is_dir() and p.name[:2].isdigit())


@pytest.fixture(scope="session")
def traces() -> Path:
    return TRACES


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the session (tests use distinct keys or flush)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
