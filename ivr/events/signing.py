"""HMAC-SHA256 request signatures, scheme v2 (pure, no I/O).

A signed request carries three headers::

    X-Ivr-Timestamp: <unix seconds, ASCII digits>
    X-Ivr-Nonce:     <16..64 characters of A-Z a-z 0-9 _ ->, new for every request
    X-Ivr-Signature: v2=<64 lowercase hex digits>

The hex is HMAC-SHA256(secret, canonical) over the **canonical string** (UTF-8, lines
joined by ``\\n``, no trailing newline)::

    v2
    <METHOD, upper case>
    <request target: the path and ?query exactly as sent on the request line>
    <timestamp>
    <nonce>
    <hex SHA-256 of the raw body (of b"" for a GET)>

So the signature covers the method, the path with its query, the time, the nonce and
the body.  A receiver checks, in this order and before it parses anything else:
well-formed headers (else 401), the timestamp within ``max_age`` of its clock, the
signature (constant-time), then that the nonce was not seen within the window
(:class:`ReplayGuard`): a captured request cannot be sent again.

The version prefix (``v2=``) lets a receiver tell schemes apart; the former ``v1=``
(timestamp and body only, no method/path/nonce) is refused with a message saying so.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import time
from collections.abc import Mapping

from yarl import URL

from ivr.events.errors import SignatureError

SIGNATURE_HEADER = "X-Ivr-Signature"
TIMESTAMP_HEADER = "X-Ivr-Timestamp"
NONCE_HEADER = "X-Ivr-Nonce"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SCHEME = "v2"
DEFAULT_MAX_AGE = 300.0
DEFAULT_MAX_NONCES = 200_000

_TS_RE = re.compile(r"[0-9]{1,12}")  # ASCII digits only (int() would take '١٢', '1_0', ' 1')
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SIG_RE = re.compile(r"v2=([0-9a-f]{64})")
_METHOD_RE = re.compile(r"[A-Z]{1,16}")


def canonical(method: str, target: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    """The canonical string that is signed (see the module docstring)."""
    return "\n".join((
        SCHEME, method.upper(), target, str(timestamp), nonce,
        hashlib.sha256(body).hexdigest(),
    )).encode("utf-8", "surrogatepass")


def sign(secret: bytes, method: str, target: str, timestamp: int, nonce: str,
         body: bytes) -> str:
    """The ``X-Ivr-Signature`` value: ``v2=<hex>``."""
    mac = hmac.new(secret, canonical(method, target, timestamp, nonce, body), hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def request_target(url: str | URL) -> str:
    """The path and query of ``url`` as an HTTP client puts them on the request line."""
    return (url if isinstance(url, URL) else URL(url)).raw_path_qs


def new_nonce() -> str:
    return secrets.token_hex(16)


def signed_headers(secret: bytes, method: str, target: str, body: bytes = b"", *,
                   now: float | None = None, nonce: str | None = None) -> dict[str, str]:
    """Headers signing one request; ``target`` is the path and query as sent (use
    ``yarl.URL(url).raw_path_qs`` of the URL the request goes to)."""
    ts = int(now if now is not None else time.time())
    n = nonce or new_nonce()
    return {TIMESTAMP_HEADER: str(ts), NONCE_HEADER: n,
            SIGNATURE_HEADER: sign(secret, method, target, ts, n, body)}


def verify(
    secret: bytes,
    method: str,
    target: str,
    headers: Mapping[str, str] | None,
    body: bytes,
    *,
    now: float | None = None,
    max_age: float = DEFAULT_MAX_AGE,
) -> tuple[int, str]:
    """Check one request's signature headers; return ``(timestamp, nonce)`` for the
    replay check, or raise :class:`SignatureError` saying what is wrong.  Never raises
    anything else, whatever the header bytes are."""
    h = headers or {}
    timestamp = h.get(TIMESTAMP_HEADER)
    nonce = h.get(NONCE_HEADER)
    signature = h.get(SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    signature = signature.strip()
    if signature.startswith("v1="):
        raise SignatureError(
            f"signature scheme v1 is not accepted any more: sign with {SCHEME} "
            "(method, path, timestamp, nonce, body hash; docs/events.md)")
    m = _SIG_RE.fullmatch(signature)
    if m is None:
        raise SignatureError(f"{SIGNATURE_HEADER} must be '{SCHEME}=' and 64 hex digits")
    if not _TS_RE.fullmatch(timestamp.strip()):
        raise SignatureError(f"{TIMESTAMP_HEADER} must be Unix seconds (ASCII digits), "
                             f"got {timestamp[:20]!r}")
    if not nonce or not _NONCE_RE.fullmatch(nonce):
        raise SignatureError(f"{NONCE_HEADER} must be 16 to 64 characters of "
                             "A-Z a-z 0-9 _ -")
    if not _METHOD_RE.fullmatch(method):
        raise SignatureError(f"unsupported method {method[:16]!r}")
    ts = int(timestamp.strip())
    clock = now if now is not None else time.time()
    if abs(clock - ts) > max_age:
        raise SignatureError(f"signature timestamp {ts} is more than {max_age:.0f}s from now")
    want = sign(secret, method, target, ts, nonce, body)
    if not hmac.compare_digest(want.encode("ascii"), signature.encode("ascii")):
        raise SignatureError("signature does not match")
    return ts, nonce


class ReplayGuard:
    """Nonces seen within the clock window, so a captured request is refused when sent
    again.  A nonce is remembered until its timestamp leaves the window
    (``timestamp + max_age``): after that the timestamp check refuses it anyway.  Memory
    is bounded by ``max_nonces``: when that many unexpired nonces are held,
    :meth:`check_and_remember` refuses new requests (``full``) rather than forget one
    early — the sender retries (HTTP 503)."""

    def __init__(self, max_age: float = DEFAULT_MAX_AGE,
                 max_nonces: int = DEFAULT_MAX_NONCES) -> None:
        self.max_age = max_age
        self.max_nonces = max_nonces
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, nonce = heapq.heappop(self._expiry)
            self._seen.pop(nonce, None)

    def check_and_remember(self, timestamp: int, nonce: str,
                           now: float | None = None) -> str:
        """``"ok"`` (remembered now), ``"replayed"`` or ``"full"``."""
        clock = now if now is not None else time.time()
        self._expire(clock)
        if nonce in self._seen:
            return "replayed"
        if len(self._seen) >= self.max_nonces:
            return "full"
        until = timestamp + self.max_age
        self._seen[nonce] = until
        heapq.heappush(self._expiry, (until, nonce))
        return "ok"
