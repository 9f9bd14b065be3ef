"""Exception tree of the queues-and-agents slice: every error names what was wrong and
reads in Chinese and English (an operator or supervisor reads it)."""

from __future__ import annotations

from ivr.errors import IvrError


class AgentError(IvrError):
    """Base of the slice's errors."""


class AgentInputError(AgentError):
    """Bad input: refused before anything was sent to Asterisk."""


class UnknownQueue(AgentInputError):
    def __init__(self, queue: str, known: list[str]) -> None:
        self.queue = queue
        shown = ", ".join(known) or "none / 无"
        super().__init__(f"unknown queue {queue!r} (Asterisk has: {shown}) / "
                         f"队列 {queue!r} 不存在（现有队列：{shown}）")


class InvalidAgent(AgentInputError):
    def __init__(self, what: str, value: str, why: str) -> None:
        self.value = value
        super().__init__(f"invalid {what} {value!r}: {why}")


class NotLoggedIn(AgentInputError):
    def __init__(self, interface: str, queue: str) -> None:
        self.interface = interface
        self.queue = queue
        super().__init__(f"agent {interface!r} is not logged in to queue {queue!r} / "
                         f"坐席 {interface!r} 未登录队列 {queue!r}")


class UnknownAgent(NotLoggedIn):
    """Not a member of any queue (static or logged in)."""

    def __init__(self, interface: str) -> None:
        AgentInputError.__init__(
            self, f"unknown agent {interface!r}: not logged in to any queue / "
                  f"坐席 {interface!r} 未登录任何队列")
        self.interface = interface
        self.queue = ""


class AlreadyLoggedIn(AgentInputError):
    def __init__(self, interface: str, queue: str) -> None:
        self.interface = interface
        self.queue = queue
        super().__init__(f"agent {interface!r} is already logged in to queue {queue!r} / "
                         f"坐席 {interface!r} 已登录队列 {queue!r}")


class StaticMember(AgentInputError):
    def __init__(self, interface: str, queue: str) -> None:
        self.interface = interface
        self.queue = queue
        super().__init__(
            f"agent {interface!r} is a static member of queue {queue!r} (queues.conf "
            f"'member =>', from dialplans/): it cannot log out; remove it from the queue "
            f"definition / 坐席 {interface!r} 是队列 {queue!r} 的静态成员，不能签出")


class UnknownPauseReason(AgentInputError):
    def __init__(self, reason: str, known: list[str]) -> None:
        self.reason = reason
        shown = ", ".join(known) or "none configured / 未配置"
        super().__init__(f"pause reason {reason!r} is not in the catalog (pause_reasons in "
                         f"dialplans/: {shown}) / 暂停原因 {reason!r} 不在目录中（{shown}）")


class StateNotReady(AgentError):
    def __init__(self) -> None:
        super().__init__("the queue state has not been read from Asterisk yet (QueueStatus) "
                         "/ 尚未从 Asterisk 读取队列状态")


class AsteriskRefused(AgentError):
    """Asterisk answered the action with ``Response: Error`` (its message kept)."""

    def __init__(self, action: str, queue: str | None, interface: str, message: str) -> None:
        self.action = action
        self.queue = queue
        self.interface = interface
        self.asterisk_message = message
        where = f" in queue {queue!r}" if queue else ""
        super().__init__(f"Asterisk refused {action} for {interface!r}{where}: {message} / "
                         f"Asterisk 拒绝了 {action}（{interface}）：{message}")
