"""Every dialplan (channel or global) variable name the product sets or reads, in one
place (like ``wazo_agid/dialplan_variables.py``).

Used by the renderer (:mod:`ivr.dialplan.render`), the IVR runtime
(:mod:`ivr.flow.engine`, :mod:`ivr.flow.runtime`) and the call-event builder
(:mod:`ivr.events.builder`).  Who sets each name is said next to it: ``render`` (the
rendered extensions.conf), ``IVR`` (the FastAGI runtime's exit ``MSet``), ``Asterisk``.
A ``__`` prefix (:func:`inherited`) makes Asterisk copy the variable to channels the
call creates (the agent's leg); AMI ``VarSet`` events name it with the prefix.

The ``agi`` protocol layer imports no domain code: :mod:`ivr.agi.channel` keeps its own
default for ``IVR_DIGITS`` (the runtime passes :data:`DIGITS`) and the stand-alone
``ivr/agi/local.py`` script spells ``IVR_NEXT``/``IVR_QUEUE``/``IVR_FALLBACK`` itself.
"""

from __future__ import annotations

# -- [globals] of the rendered extensions.conf (render) ---------------------------------
AGI_HOST = "IVR_AGI_HOST"  # host of the FastAGI server
AGI_PORT = "IVR_AGI_PORT"  # its port
AGI_BACKUP_HOST = "IVR_AGI_BACKUP_HOST"  # a second FastAGI server ("" = none)
AGI_BACKUP_PORT = "IVR_AGI_BACKUP_PORT"  # its port
DIALPLAN_VERSION = "IVR_DIALPLAN_VERSION"  # the definition version rendered
GENERAL_QUEUE = "IVR_GENERAL_QUEUE"  # the static fallback queue
DIAL_CONTEXT = "IVR_DIAL_CONTEXT"  # where transfers dial Local/<number>@…

# -- set by the entry extension (render) -------------------------------------------------
ENTRY = "IVR_ENTRY"  # the entry number (inherited); a routing variable
LANGUAGE = "IVR_LANGUAGE"  # the caller's language (inherited; the IVR sets it again)
OPERATOR_QUEUE = "IVR_OPERATOR_QUEUE"  # where a failed transfer goes
BARGE = "IVR_BARGE"  # the key pressed during the greeting the dialplan played
RESUME_STEP = "IVR_RESUME_STEP"  # IVR_RESUME kept for the AGI that resumes the IVR
SURVEY = "IVR_SURVEY"  # the key the caller pressed in the post-call survey (1-5)
SURVEY_PROMPT = "IVR_SURVEY_PROMPT"  # the survey prompt file in the call's language
SURVEY_THANKS = "IVR_SURVEY_THANKS"  # its survey-thanks file
SURVEY_TRY = "IVR_SURVEY_TRY"  # 1, then 2 after an invalid key (one retry)

# -- set by the IVR at its exit (one MSet), read by the [ivr-route] context -------------
NEXT = "IVR_NEXT"  # queue / transfer / hangup
QUEUE = "IVR_QUEUE"  # the queue to join; a routing variable
PRIORITY = "IVR_PRIORITY"  # the caller's queue priority; a routing variable
TRANSFER = "IVR_TRANSFER"  # the number to transfer to
TIMEOUT = "IVR_TIMEOUT"  # the transfer's Dial timeout (seconds)
RESUME = "IVR_RESUME"  # the IVR step to go back to after the queue/transfer
PROMPT = "IVR_PROMPT"  # prompts (&-joined) the dialplan plays before leaving
HOLD_PROMPT = "IVR_HOLD_PROMPT"  # played before Queue() only when no member is ready
QUEUE_STEP = "IVR_QUEUE_STEP"  # the queue step's path: a key pressed in the queue resumes it
LANG = "IVR_LANG"  # the caller's language, set inherited (__IVR_LANG); routing
VERSION = "IVR_VERSION"  # the definition version the call ran on
CALLBACK = "IVR_CALLBACK"  # "1" when the caller asked to be called back
TAG_PREFIX = "IVR_TAG_"  # IVR_TAG_<name>: a definition's ``set`` step

# -- three-way calls (ivr/threeway): set by the bridge's Originate of an added party -----
TW_CALL = "IVR_TW_CALL"  # the call (Linkedid) the party is added to
TW_LEG = "IVR_TW_LEG"  # the leg's id in that call (leg-1, leg-2 …)
TW_ANNOUNCE = "IVR_TW_ANNOUNCE"  # a prompt played to the party before it joins ("" none)

# -- set by the IVR while collecting digits (EXEC Read) ----------------------------------
DIGITS = "IVR_DIGITS"

# -- set by the stand-alone local AGI (ivr/agi/local.py) ---------------------------------
FALLBACK = "IVR_FALLBACK"

# -- Asterisk's own ----------------------------------------------------------------------
CHANNEL_LANGUAGE = "CHANNEL(language)"  # the channel's language (a function)
CHANNEL_LINKEDID = "CHANNEL(linkedid)"  # the call's id (read only)
EXTEN = "EXTEN"  # the extension the channel is at (the three-way contexts' pattern match)
AGISTATUS = "AGISTATUS"  # SUCCESS / FAILURE / NOTFOUND / HANGUP after AGI()
READSTATUS = "READSTATUS"  # OK / TIMEOUT / HANGUP / ERROR after Read()
DIALSTATUS = "DIALSTATUS"  # ANSWER / BUSY / … after Dial()
QUEUESTATUS = "QUEUESTATUS"  # TIMEOUT / … after Queue(); CONTINUE: option c, agent hung up
QUEUE_PRIO = "QUEUE_PRIO"  # app_queue: the caller's priority in Queue()
QUEUE_MEMBER = "QUEUE_MEMBER"  # app_queue's function: QUEUE_MEMBER(<queue>,ready) members
MIXMONITOR_FILENAME = "MIXMONITOR_FILENAME"  # MixMonitor: the recording's file

# -- what the call-event builder reads from VarSet (and CoreShowChannel ChanVariable) ----
ROUTING_VARS: dict[str, str] = {
    ENTRY: "entry",
    QUEUE: "queue",
    PRIORITY: "priority",
    LANG: "language",
    LANGUAGE: "language",
    CHANNEL_LANGUAGE: "language",
}
"""Routing variable → the routing field it sets (read without ``_``/``__`` prefixes)."""

TAG_ROUTING: dict[str, str] = {
    "department": "department",
    "priority": "priority",
    "anonymous": "anonymous",
    "tags": "tags",
    "tag": "tag",
    "queue": "queue",
}
"""A definition's ``set`` step of one of these names sets that routing field: the builder
reads it from the IVR's ``tag`` step, and from ``IVR_TAG_<name>`` (:data:`TAG_PREFIX`)
when it adopts a call from ``CoreShowChannels`` (manager.conf ``channelvars``)."""


def inherited(name: str) -> str:
    """``__NAME``: Asterisk copies the variable to every channel the call creates."""
    return "__" + name


def ref(name: str) -> str:
    """``${NAME}``: the variable's value in a dialplan expression."""
    return "${" + name + "}"
