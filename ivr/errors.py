"""Root of the project's exception trees.

Each layer has its own tree under :class:`IvrError` (``ivr.ami.errors``,
``ivr.agi.errors``, ``ivr.events.errors``, ``ivr.dialplan.errors``…), so callers can
catch one layer's failures without catching programming errors.
"""


class IvrError(Exception):
    """Base of every exception this project raises on purpose."""


class ConfigError(IvrError):
    """Bad configuration: names the setting and what was wrong with it."""
