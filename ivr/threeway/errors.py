"""Exception tree of the three-way slice: every error names what was wrong, in English
and Chinese; ``http_status`` and ``code`` are read by the HTTP API
(``ivr.api.errors.from_domain``).  Bad input is refused before anything is sent to
Asterisk: nothing happens to the call.  (A bad target is the directory's error:
:class:`ivr.directory.DirectoryError`.)"""

from __future__ import annotations

from ivr.errors import IvrError


class ThreeWayError(IvrError):
    """Base of the slice's errors."""

    http_status = 409
    code = "threeway_error"


class ThreeWayInputError(ThreeWayError):
    """Refused before anything was sent to Asterisk."""


class CallNotFound(ThreeWayInputError):
    http_status = 404
    code = "threeway_no_call"

    def __init__(self, call_id: str, ended: bool) -> None:
        self.call_id = call_id
        what = "has ended" if ended else "is not a call in progress"
        zh = "已结束" if ended else "不是进行中的通话"
        super().__init__(f"call {call_id!r} {what} / 通话 {call_id!r} {zh}")


class NoAgent(ThreeWayInputError):
    code = "threeway_no_agent"

    def __init__(self, call_id: str, why: str) -> None:
        self.call_id = call_id
        super().__init__(f"call {call_id!r} has no agent to hold a three-way call: {why} / "
                         f"通话 {call_id!r} 没有可发起三方通话的坐席")


class NotYourCall(ThreeWayInputError):
    http_status = 403
    code = "threeway_not_your_call"

    def __init__(self, call_id: str, agent: str) -> None:
        self.call_id = call_id
        super().__init__(f"agent {agent!r} is not the agent of call {call_id!r} / 坐席 "
                         f"{agent!r} 不是通话 {call_id!r} 的接听坐席")


class ConferenceFull(ThreeWayInputError):
    code = "threeway_full"

    def __init__(self, call_id: str, parties: int, limit: int) -> None:
        self.call_id = call_id
        super().__init__(f"the three-way call of {call_id!r} is full ({parties} of {limit} "
                         f"parties): drop a party first / 三方通话已满（{parties}/{limit} 方）")


class AlreadyIn(ThreeWayInputError):
    code = "threeway_already_in"

    def __init__(self, call_id: str, number: str, leg: str) -> None:
        self.call_id = call_id
        super().__init__(f"call {call_id!r}: {number} is already in its three-way call "
                         f"({leg}) / {number} 已在三方通话中")


class NoInterpreter(ThreeWayInputError):
    http_status = 404
    code = "threeway_no_interpreter"

    def __init__(self, call_id: str, language: str) -> None:
        self.call_id = call_id
        shown = language or "unknown / 未知"
        super().__init__(f"call {call_id!r}: no interpreter desk for the caller's language "
                         f"{shown!r} (interpreters: in dialplans/) / "
                         f"没有该语言（{shown}）的翻译坐席")


class LegRinging(ThreeWayInputError):
    code = "threeway_leg_ringing"

    def __init__(self, call_id: str, leg: str) -> None:
        self.call_id = call_id
        super().__init__(f"call {call_id!r}: {leg} is still ringing; wait for it or drop it / "
                         f"通话 {call_id!r} 的 {leg} 仍在振铃")


class UnknownParty(ThreeWayInputError):
    http_status = 404
    code = "threeway_unknown_party"

    def __init__(self, call_id: str, party: str, known: list[str]) -> None:
        self.call_id = call_id
        shown = ", ".join(known) or "none / 无"
        super().__init__(f"call {call_id!r} has no party {party!r} in its three-way call "
                         f"(parties: {shown}) / 三方通话中没有 {party!r}")


class NoThreeWay(ThreeWayInputError):
    code = "threeway_none"

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        super().__init__(f"call {call_id!r} has no three-way call / 通话 {call_id!r} "
                         "没有进行中的三方通话")


class AgentWouldLeaveCallerAlone(ThreeWayInputError):
    code = "threeway_caller_alone"

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        super().__init__(f"call {call_id!r}: no other party is with the caller; the agent "
                         "cannot leave (end the call instead) / 来电者身边没有其他方，坐席不能退出")


class BadAnnouncement(ThreeWayInputError):
    http_status = 422
    code = "threeway_bad_announcement"

    def __init__(self, prompt: str) -> None:
        super().__init__(f"announcement {prompt!r} is not a prompt name (letters, digits, "
                         "- _ / only) / 提示音名称无效")


class NotInstalled(ThreeWayError):
    """Asterisk's dialplan has no three-way context (a definition published before it)."""

    http_status = 503
    code = "threeway_not_installed"

    def __init__(self, context: str) -> None:
        super().__init__(f"Asterisk's dialplan has no [{context}] context: publish the "
                         "dialplan (ivr dialplan publish) before holding three-way calls / "
                         f"Asterisk 拨号方案中没有 [{context}]，请先发布拨号方案")


class AsteriskRefused(ThreeWayError):
    """Asterisk answered an action with ``Response: Error`` (its message kept)."""

    http_status = 502
    code = "threeway_asterisk_refused"

    def __init__(self, action: str, call_id: str, message: str) -> None:
        self.action = action
        self.asterisk_message = message
        super().__init__(f"Asterisk refused {action} for call {call_id!r}: {message} / "
                         f"Asterisk 拒绝了 {action}：{message}")
