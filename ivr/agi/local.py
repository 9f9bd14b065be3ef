"""Process-AGI fallback run by Asterisk itself when the FastAGI server is unreachable.

Dialplan on the Asterisk host (``agi-bin/ivr-local.agi`` is a two-line wrapper that
``exec``\\s ``python -m ivr.agi.local "$@"``)::

    same => n,AGI(agi://ivr-host:4573/ivr?entry=main)
    same => n,ExecIf($["${IVR_NEXT}" = ""]?AGI(ivr-local.agi,hotline))
    same => n,GotoIf($["${IVR_NEXT}" = "queue"]?queue)

It uses pyst2's :class:`asterisk.agi.AGI`, which is the right tool here: Asterisk starts
this script as its own process, talks to it over stdin/stdout, and signals hang-up with
SIGHUP, and pyst2 installs its SIGHUP handler in the constructor, which only works in the
main thread of a process (known-pitfalls pyst2 #3).  Never use it inside the server.

pyst2 writes every header (the caller number included) to the ``stderr`` it is given,
which Asterisk copies to its log; it gets ``/dev/null`` instead, and this script logs one
structured line with the number masked.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Sequence

from ivr.log import event, setup_logging
from ivr.privacy import mask_number

log = logging.getLogger("ivr.agi.local")

DEFAULT_QUEUE = "hotline"
_QUEUE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


def choose_queue(argv: Sequence[str]) -> str:
    """The queue named as the AGI's first argument, else ``$IVR_FALLBACK_QUEUE``, else
    ``hotline``; a name that is not a plain token (pyst2 does not escape quotes) is
    refused in favour of the default."""
    for candidate in (*argv[:1], os.environ.get("IVR_FALLBACK_QUEUE", "")):
        if not candidate:
            continue
        if _QUEUE_RE.match(candidate):
            return candidate
        event(log, logging.WARNING, "agi.local.bad_queue", queue=candidate[:80])
    return DEFAULT_QUEUE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m ivr.agi.local [queue]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    setup_logging("info", sys.stderr)
    queue = choose_queue(args)
    # Imported here: the rest of ivr never imports pyst2's process-AGI class.
    from asterisk.agi import AGI as ProcessAGI
    from asterisk.agi import AGIException, AGIHangup

    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", line_buffering=True)
    with open(os.devnull, "w", encoding="utf-8") as sink:
        agi = ProcessAGI(stdin=stdin, stdout=stdout, stderr=sink)
        env: dict[str, str] = dict(agi.env)
        fields = {
            "channel": env.get("agi_channel", ""),
            "uniqueid": env.get("agi_uniqueid", ""),
            "caller": mask_number(env.get("agi_callerid", "")),
            "queue": queue,
        }
        try:
            agi.set_variable("IVR_FALLBACK", "local")
            agi.set_variable("IVR_NEXT", "queue")
            agi.set_variable("IVR_QUEUE", queue)
        except AGIHangup:
            event(log, logging.INFO, "agi.local.hangup", **fields)
            return 0
        except AGIException as exc:
            event(log, logging.ERROR, "agi.local.failed", **fields,
                  error=f"{type(exc).__name__}: {exc}")
            return 1
    event(log, logging.WARNING, "agi.local.fallback", **fields)
    return 0


if __name__ == "__main__":
    sys.exit(main())
