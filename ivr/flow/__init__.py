"""The per-call IVR: what one caller hears and keys, one call at a time.

``engine.py`` walks a published definition's steps for one call without I/O (it yields
what it needs: play-and-collect, a ticket lookup, the exit to the dialplan);
``runtime.py`` serves FastAGI, drives the engine over the AGI channel and reports every
step (:class:`ivr.calls.steps.IvrStep`); ``ticket_lookup.py`` asks the ticket backend for
the caller's open ticket.  The definitions it runs come from :mod:`ivr.dialplan` (the
admin toolchain: load, validate, render, publish), which never imports this package.
"""
