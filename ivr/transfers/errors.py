"""Exception tree of the transfers slice.  Every message names what was wrong and reads
in English and Chinese ("English … / 中文…"); ``http_status`` and ``code`` tell the HTTP
API how to answer.  Input errors are raised before anything is sent to Asterisk."""

from __future__ import annotations

from ivr.errors import IvrError


class TransferError(IvrError):
    """Base of the slice's errors."""

    http_status = 500
    code = "transfer_error"


class TransferInputError(TransferError):
    """Bad input: refused before anything was sent to Asterisk; the call is unchanged."""

    http_status = 400
    code = "invalid_transfer"


class UnknownTarget(TransferInputError):
    http_status = 404
    code = "unknown_transfer_target"

    def __init__(self, target: str, hint: str = "") -> None:
        self.target = target
        extra = f" ({hint})" if hint else ""
        super().__init__(f"unknown transfer target {target!r}: not a directory entry{extra} / "
                         f"转接目标 {target!r} 不在通讯录中")


class NotDialable(TransferInputError):
    code = "not_dialable"

    def __init__(self, number: str, why: str) -> None:
        self.number = number
        super().__init__(f"{number!r} is not a dialable number: {why} / "
                         f"{number!r} 不是可拨打的号码")


class NotOneKey(TransferInputError):
    code = "not_one_key"

    def __init__(self, target: str, known: list[str]) -> None:
        self.target = target
        shown = ", ".join(known) or "none / 无"
        super().__init__(f"{target!r} is not a one-key transfer target (one-key: {shown}) / "
                         f"{target!r} 不是一键转接目标（可一键转接：{shown}）")


class CallNotActive(TransferInputError):
    http_status = 404
    code = "call_not_active"

    def __init__(self, call_id: str, ended: bool) -> None:
        self.call_id = call_id
        state = "has ended" if ended else "is not a call in progress"
        zh = "已结束" if ended else "不是进行中的通话"
        super().__init__(f"call {call_id!r} {state}: nothing to transfer / 通话 {call_id!r} {zh}，"
                         "无法转接")


class NoAgent(TransferInputError):
    http_status = 409
    code = "call_without_agent"

    def __init__(self, call_id: str, why: str = "no agent is talking with the caller") -> None:
        self.call_id = call_id
        super().__init__(f"call {call_id!r} cannot be transferred: {why} / 通话 {call_id!r} "
                         "当前没有坐席与来电人通话，无法转接")


class TransferInProgress(TransferInputError):
    http_status = 409
    code = "transfer_in_progress"

    def __init__(self, call_id: str, kind: str, target: str) -> None:
        self.call_id = call_id
        super().__init__(f"call {call_id!r} already has a {kind} transfer to {target!r} in "
                         f"progress / 通话 {call_id!r} 正在转接至 {target!r}")


class NoTransfer(TransferInputError):
    http_status = 409
    code = "no_transfer"

    def __init__(self, call_id: str, what: str, zh: str) -> None:
        self.call_id = call_id
        super().__init__(f"call {call_id!r}: {what} / 通话 {call_id!r}：{zh}")


class AsteriskRefused(TransferError):
    """Asterisk answered the action with ``Response: Error`` (its message kept)."""

    http_status = 502
    code = "asterisk_refused"

    def __init__(self, action: str, channel: str, message: str) -> None:
        self.action = action
        self.asterisk_message = message
        super().__init__(f"Asterisk refused {action} on {channel}: {message} / "
                         f"Asterisk 拒绝了 {action}（{channel}）：{message}")


class NotReady(TransferError):
    http_status = 503
    code = "transfers_not_ready"

    def __init__(self) -> None:
        super().__init__("the bridge is not connected to Asterisk (AMI) / 网关尚未连接 Asterisk")
