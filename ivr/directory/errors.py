"""Errors of the directory resolver: bad targets, named in English and Chinese.

``http_status`` and ``code`` are read by the HTTP API (``ivr.api.errors.from_domain``)."""

from __future__ import annotations

from collections.abc import Iterable

from ivr.errors import IvrError


class DirectoryError(IvrError):
    """Base of the directory's errors: a target that cannot be dialled."""

    http_status = 422
    code = "directory_invalid_target"


class UnknownTarget(DirectoryError):
    """Neither a directory id nor a number."""

    http_status = 404
    code = "directory_unknown"

    def __init__(self, target: str, known: Iterable[str]) -> None:
        self.target = target
        names = sorted(known)
        shown = ", ".join(names[:12]) + (" …" if len(names) > 12 else "") or "none / 无"
        super().__init__(f"unknown directory entry {target!r} (not an id of dialplans/ "
                         f"directory and not a number; ids: {shown}) / 通讯录中没有 {target!r}"
                         f"（不是目录编号也不是号码）")


class NotDialable(DirectoryError):
    """A number with characters Asterisk cannot dial, or of the wrong length."""

    code = "directory_not_dialable"

    def __init__(self, target: str, why: str) -> None:
        self.target = target
        super().__init__(f"{target!r} is not a dialable number: {why} / {target!r} 不是可拨打"
                         f"的号码")


class NotOneKey(DirectoryError):
    """A one-key transfer asked of an entry that is not marked for it."""

    code = "directory_not_one_key"

    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(f"{target!r} is not an emergency service marked for one-key "
                         f"transfer (emergency: in dialplans/) / {target!r} 不是一键转接的紧急服务")
