"""Which AMI actions may be sent again after a lost connection.

When the TCP connection drops, an action that was already written may or may not have
run in Asterisk: only its reply may have been lost.  Sending it again is harmless for a
read-only or idempotent action (Ping, QueueStatus, Getvar…) and dangerous for one that
changes calls (a second Originate rings a citizen twice; a second Redirect or Hangup hits
whatever the channel is doing by then).  The rule is a whitelist: anything not listed
here is *not* re-sent (panoramisk 1.4 re-sends everything but Ping and Login, pitfall 7).
"""

from __future__ import annotations

from collections.abc import Mapping

from ivr.ami.codec import FieldValue

# Lower-cased action names that only read state (or set it to the same value again).
RESEND_SAFE_ACTIONS: frozenset[str] = frozenset(
    {
        "ping",
        "login",
        "challenge",
        "events",
        "status",
        "corestatus",
        "coresettings",
        "coreshowchannels",
        "coreshowchannelmap",
        "queuestatus",
        "queuesummary",
        "queues",
        "queuerule",
        "getvar",
        "dbget",
        "dbgettree",
        "getconfig",
        "getconfigjson",
        "listcategories",
        "listcommands",
        "modulecheck",
        "showdialplan",
        "extensionstate",
        "extensionstatelist",
        "devicestatelist",
        "presencestate",
        "presencestatelist",
        "mailboxcount",
        "mailboxstatus",
        "confbridgelist",
        "confbridgelistrooms",
        "bridgelist",
        "bridgeinfo",
        "bridgetechnologylist",
        "parkedcalls",
        "parkinglots",
        "agents",
        "sippeers",
        "sipshowpeer",
        "sipshowregistry",
        "sippeerstatus",
        "pjsipshowendpoints",
        "pjsipshowendpoint",
        "pjsipshowcontacts",
        "pjsipshowaors",
        "pjsipshowregistrationsinbound",
        "pjsipshowregistrationsoutbound",
        "voicemailuserslist",
    }
)

# CLI commands (``Action: Command``) that only display state.
RESEND_SAFE_COMMAND_PREFIXES: tuple[str, ...] = (
    "core show ",
    "queue show",
    "sip show ",
    "pjsip show ",
    "pjsip list ",
    "dialplan show",
    "module show",
    "confbridge list",
    "database show",
    "database get ",
    "bridge show ",
    "channel show ",
    "agent show",
    "cdr show ",
    "cel show ",
    "manager show ",
)


def is_resend_safe(action: str, fields: Mapping[str, FieldValue] | None = None) -> bool:
    """True if ``action`` with ``fields`` may be sent again after a reconnect."""
    name = action.lower()
    if name == "command":
        value = (fields or {}).get("Command")
        if not isinstance(value, str):
            return False
        command = " ".join(value.split()).lower() + " "
        return command.startswith(RESEND_SAFE_COMMAND_PREFIXES)
    return name in RESEND_SAFE_ACTIONS
