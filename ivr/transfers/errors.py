"""Exception tree of the transfers slice.  Every message names what was wrong and reads
in English and Chinese ("English … / 中文…"); ``http_status`` and ``code`` tell the HTTP
API how to answer.  Input errors are raised before anything is sent to Asterisk; a bad
target raises the directory's errors (:mod:`ivr.directory`: ``UnknownTarget``,
``NotDialable``, ``NotOneKey``)."""

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


class TargetClosed(TransferInputError):
    """The directory entry is outside its hours now: its fallback is named."""

    http_status = 409
    code = "transfer_target_closed"

    def __init__(self, target: str, label: str,
                 fallback: tuple[str, str] | None) -> None:
        self.target = target
        self.fallback = fallback
        if fallback is None:
            en, zh = "it has no fallback", "且未设置备用去向"
        else:
            kind, name = fallback
            en = f"its fallback is {kind} {name!r}"
            zh = f"备用去向：{'队列' if kind == 'queue' else '条目'} {name!r}"
        super().__init__(f"{label} ({target!r}) is closed now (outside its hours): {en} / "
                         f"{label}（{target!r}）当前不在服务时间，{zh}")


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
