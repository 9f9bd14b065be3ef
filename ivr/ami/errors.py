"""Exception tree of the AMI layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ivr.errors import IvrError

if TYPE_CHECKING:
    from ivr.ami.messages import Response


class AMIError(IvrError):
    """Base of every AMI-layer error."""


class AMIProtocolError(AMIError):
    """The peer broke the protocol in a way the connection cannot survive
    (for example a banner that is not Asterisk's)."""


class AMIEncodeError(AMIError, ValueError):
    """An action could not be encoded safely (a header name or value would break framing)."""


class AMIConnectionError(AMIError):
    """Not connected, or the connection went away while an action was in flight."""


class AMIActionTimeout(AMIError, TimeoutError):
    """No response to an action within its timeout."""


class AMIActionNotRetried(AMIConnectionError):
    """An action that must not run twice (Originate, Redirect, Hangup…) was in flight
    when the connection dropped: Asterisk may or may not have run it, so it is not
    re-sent; the caller must check the live state and decide."""


class AMIListTooLarge(AMIError):
    """A list result (``EventList: start`` … ``Complete``) grew over the client's caps
    before it completed; what came is dropped, the rest of it is discarded, and the
    connection goes on."""


class AMIAuthError(AMIError):
    """Login refused (wrong user or secret)."""


class AMIActionFailed(AMIError):
    """Asterisk answered ``Response: Error`` to an action."""

    def __init__(self, action: str, response: Response) -> None:
        self.action = action
        self.response = response
        super().__init__(f"{action} failed: {response.get('Message') or 'no message'}")
