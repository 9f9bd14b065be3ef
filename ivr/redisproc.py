"""Run a private ``redis-server`` (for ``ivr demo`` and the tests).

The server listens on 127.0.0.1 on a free port, keeps its files in ``workdir``, and
with ``persist=True`` writes an append-only file with ``appendfsync always`` so a
restart keeps every stream entry (the event outbox relies on that).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ivr.errors import IvrError


class RedisServerError(IvrError):
    """redis-server could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(
        self,
        workdir: str | Path,
        *,
        port: int | None = None,
        persist: bool = False,
        executable: str | None = None,
        start_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
        config_file: Path | None = None,
        ready_marker: str = "Ready to accept connections",
        own_session: bool = False,
    ) -> None:
        """``extra_args`` go after the defaults (``--replicaof …``, ``--cluster-enabled
        yes`` …); ``config_file`` comes first on the command line (a Sentinel's, with
        ``extra_args=("--sentinel",)`` and ``ready_marker="+monitor"``)."""
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.persist = persist
        self.executable = executable or shutil.which("redis-server") or "redis-server"
        self.start_timeout = start_timeout
        self.extra_args = tuple(extra_args)
        self.config_file = config_file
        self.ready_marker = ready_marker
        # own_session: not in the terminal's process group, so a Ctrl-C meant for the
        # program that started it (ivr demo --console) does not stop it under that
        # program's feet; that program stops it
        self.own_session = own_session
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.proc is not None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            self.executable,
            *([str(self.config_file)] if self.config_file is not None else []),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "notice",
            "--protected-mode", "no",
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += self.extra_args
        try:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=self.own_session,
            )
        except FileNotFoundError as exc:
            raise RedisServerError(
                "redis-server is not installed (apt-get install redis-server) / 未安装 redis-server"
            ) from exc
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            text = line.decode("utf-8", "replace").rstrip()
            seen.append(text)
            if self.ready_marker in text:
                # Keep draining output so the pipe never fills.
                self._drain()
                return
        self.stop()
        raise RedisServerError(
            f"redis-server on port {self.port} did not start: " + " | ".join(seen[-5:])
        )

    def _drain(self) -> None:
        import threading

        proc = self.proc
        assert proc is not None and proc.stdout is not None
        out = proc.stdout

        def run() -> None:
            for _ in iter(out.readline, b""):
                pass

        threading.Thread(target=run, daemon=True, name=f"redis-{self.port}-log").start()

    def stop(self, kill: bool = False) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            if kill:
                proc.kill()
            else:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
