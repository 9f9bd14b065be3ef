"""Masking of phone numbers: caller numbers never reach a log in clear.

Chinese mobile numbers are 11 digits starting with 1[3-9]; landlines are an area
code starting with 0 plus 7–8 digits.  ``mask_number`` keeps the first three and the
last four digits of anything that long (``13800138000`` → ``138****8000``) and masks
all but the last two of shorter numbers (short codes such as 12345 or 110 stay clear,
they are service numbers, not people).
"""

from __future__ import annotations

import re

_SERVICE_MAX_DIGITS = 6

# A phone-looking run of digits not part of a longer number or of an Asterisk
# uniqueid/timestamp (which are 10+ digits followed by '.').
_PHONE_RE = re.compile(r"(?<![\d.])(?:\+?86[- ]?)?(?:1[3-9]\d{9}|0\d{2,3}-?\d{7,8})(?![\d.])")


def mask_number(number: str | None) -> str:
    """Mask a caller number for logs and non-privileged views."""
    if not number:
        return ""
    digits = [c for c in number if c.isdigit()]
    if len(digits) <= _SERVICE_MAX_DIGITS:
        return number
    n = len(digits)
    keep_head, keep_tail = (3, 4) if n >= 10 else (2, 2)
    out: list[str] = []
    seen = 0
    for c in number:
        if c.isdigit():
            out.append(c if seen < keep_head or seen >= n - keep_tail else "*")
            seen += 1
        else:
            out.append(c)
    return "".join(out)


def scrub(text: str) -> str:
    """Mask every phone-looking number inside free text (log messages)."""
    return _PHONE_RE.sub(lambda m: mask_number(m.group(0)), text)
