"""Pure parsers for Asterisk's configuration languages.

* :mod:`ivr.asterisk.conf` — the generic ``.conf`` syntax (categories, templates, ``#include``).
* :mod:`ivr.asterisk.extensions` — the dialplan (``extensions.conf``) and pattern matching.
* :mod:`ivr.asterisk.appargs` — application arguments (``App(a,b)``) as Asterisk splits them.
  (The ``${...}``/``$[...]`` evaluator only the emulator needs is :mod:`ivr.sim.expr`.)
* :mod:`ivr.asterisk.queues` — ``queues.conf``.

No I/O except reading files named by ``#include``/``#tryinclude`` (and :func:`load_conf`).
"""

from ivr.asterisk.errors import AsteriskConfError, ConfSyntaxError, ExprError

__all__ = ["AsteriskConfError", "ConfSyntaxError", "ExprError"]
