"""The process's counters and gauges (:mod:`ivr.metrics`) in Prometheus text exposition
format 0.0.4: ``ivr_`` + the name with every character outside ``[a-zA-Z0-9_]`` replaced
by ``_``; counters end in ``_total``; one ``# HELP`` and ``# TYPE`` line each.  Pure."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(name: str, suffix: str = "") -> str:
    out = "ivr_" + _BAD.sub("_", name).strip("_")
    if suffix and not out.endswith(suffix):
        out += suffix
    return out


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def exposition(counters: Mapping[str, int], gauges: Mapping[str, float]) -> str:
    """Counters and gauges as one exposition; two source names that sanitize to the same
    metric name are summed (counters) or the last one kept (gauges)."""
    lines: list[str] = []
    merged_c: dict[str, tuple[str, int]] = {}
    for name in sorted(counters):
        key = metric_name(name, "_total")
        src, n = merged_c.get(key, (name, 0))
        merged_c[key] = (src, n + counters[name])
    for key, (src, n) in sorted(merged_c.items()):
        lines += [f"# HELP {key} ivr counter {src}", f"# TYPE {key} counter", f"{key} {n}"]
    merged_g: dict[str, tuple[str, float]] = {}
    for name in sorted(gauges):
        key = metric_name(name)
        if key in merged_c:
            key += "_gauge"
        merged_g[key] = (name, gauges[name])
    for key, (src, v) in sorted(merged_g.items()):
        lines += [f"# HELP {key} ivr gauge {src}", f"# TYPE {key} gauge", f"{key} {_value(v)}"]
    return "\n".join(lines) + "\n"
