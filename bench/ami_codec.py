"""AMI parsing throughput: this project's AMIParser vs panoramisk 1.4 vs the bare limit.

Feeds the same bytes — trace 02's ``ami.server.raw`` (real Asterisk 20 traffic: a queued
call, recording, three-way), its body repeated to a few MB — in 4 KiB chunks through:

(a) ``ivr.ami.codec.AMIParser``: typed messages, EventLists grouped, UTF-8 safe;
(b) panoramisk 1.4 ``AMIProtocol.data_received`` with a minimal stand-in factory and
    transport, so it parses and dispatches as it does in a real Manager;
(c) the bare limit: split on ``\\r\\n\\r\\n`` (carrying the tail), decode each frame,
    build one dict per frame.

Several rounds; the best round of each counts.  The last line printed is one JSON
object with the rates and ``vs_limit`` / ``vs_panoramisk`` (AMIParser's rate divided by
each).  Run: ``.venv/bin/python bench/ami_codec.py [--mb 4] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from panoramisk.ami_protocol import AMIProtocol

from ivr.ami.codec import AMIParser
from ivr.ami.messages import EventList

CHUNK = 4096
ROOT = Path(__file__).resolve().parent.parent


def trace_bytes() -> bytes:
    env = os.environ.get("IVR_TRACES")
    base = Path(env) if env else ROOT / "tests" / "data" / "asterisk-traces"
    p = base / "02-ivr-queue-record-threeway" / "ami.server.raw"
    if not p.exists():
        sys.exit(f"trace not found: {p}")
    return p.read_bytes()


def build_stream(mb: float) -> tuple[list[bytes], int]:
    raw = trace_bytes()
    nl = raw.index(b"\r\n") + 2
    banner, body = raw[:nl], raw[nl:]
    reps = max(1, int(mb * 1024 * 1024 / len(body)))
    data = banner + body * reps
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    return chunks, body.count(b"\r\n\r\n") * reps


# (a) ------------------------------------------------------------------------------------
def run_core(chunks: list[bytes]) -> int:
    parser = AMIParser()
    n = 0
    for chunk in chunks:
        for item in parser.feed(chunk):
            if isinstance(item, EventList):
                n += 2 + len(item.events)
            elif item.kind != "banner":
                n += 1
    parser.feed_eof()
    return n


# (b) ------------------------------------------------------------------------------------
class _Factory:
    def __init__(self) -> None:
        self.dispatched = 0
        self.forgetable_actions = ("ping", "login")
        self.awaiting_actions: list[Any] = []
        self.save_stream = None

    def dispatch(self, message: Any) -> None:
        self.dispatched += 1


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _CountingProtocol(AMIProtocol):  # type: ignore[misc]
    parsed = 0

    def handle_message(self, message: Any) -> None:
        self.parsed += 1
        super().handle_message(message)


def run_panoramisk(chunks: list[bytes]) -> int:
    proto = _CountingProtocol()
    proto.connection_made(_Transport())
    proto.factory = _Factory()
    proto.encoding = "utf8"
    for chunk in chunks:
        proto.data_received(chunk)
    return int(proto.parsed)


# (c) ------------------------------------------------------------------------------------
def run_limit(chunks: list[bytes]) -> int:
    buf = b""
    n = 0
    first = True
    for chunk in chunks:
        buf += chunk
        if first:
            nl = buf.find(b"\r\n")
            if nl < 0:
                continue
            buf = buf[nl + 2:]
            first = False
        frames = buf.split(b"\r\n\r\n")
        buf = frames.pop()
        for frame in frames:
            d: dict[str, str] = {}
            for line in frame.decode("utf-8").split("\r\n"):
                k, _, v = line.partition(": ")
                d[k] = v
            n += 1
    return n


def measure(fn: Callable[[list[bytes]], int], chunks: list[bytes]) -> tuple[float, int]:
    # CPU time of this process: the machine is shared, wall time would count neighbours.
    t0 = time.process_time()
    n = fn(chunks)
    return time.process_time() - t0, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=3.0, help="stream size in MiB (default 3)")
    ap.add_argument("--rounds", type=int, default=9, help="rounds (default 9)")
    args = ap.parse_args(argv)
    chunks, frames = build_stream(args.mb)
    size = sum(map(len, chunks))
    print(f"stream: {size / 1e6:.1f} MB, {frames} frames, {len(chunks)} chunks of {CHUNK} B; "
          f"python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    runners = {"ami_core": run_core, "panoramisk": run_panoramisk, "limit": run_limit}
    best: dict[str, float] = {}
    for r in range(args.rounds):
        line = []
        for name, fn in runners.items():
            secs, n = measure(fn, chunks)
            if n != frames:
                print(f"{name}: counted {n} messages, expected {frames}", file=sys.stderr)
                return 1
            rate = n / secs
            best[name] = max(best.get(name, 0.0), rate)
            line.append(f"{name} {rate:,.0f} msg/s")
        print(f"round {r + 1}: " + ", ".join(line))
    result = {
        "ami_core_msgs_per_s": round(best["ami_core"]),
        "panoramisk_msgs_per_s": round(best["panoramisk"]),
        "limit_msgs_per_s": round(best["limit"]),
        "vs_limit": round(best["ami_core"] / best["limit"], 3),
        "vs_panoramisk": round(best["ami_core"] / best["panoramisk"], 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
