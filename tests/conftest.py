"""Shared fixtures: the recorded Asterisk traces and a private Redis server."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.redisproc import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def _find_traces() -> Path:
    """The recorded Asterisk traces: ``tests/data/asterisk-traces`` (part of the project), or
    the folder ``$IVR_TRACES`` names instead."""
    env = os.environ.get("IVR_TRACES")
    folder = Path(env) if env else ROOT / "tests" / "data" / "asterisk-traces"
    if not (folder / "README.md").exists():
        where = "$IVR_TRACES" if env else "the project"
        raise RuntimeError(f"Asterisk traces not found: {folder} (from {where}) has no README.md")
    return folder


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


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """``ivr.cli.main`` points the root logger at the running test's captured stderr:
    restore it after every test, or a later log line goes to a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
