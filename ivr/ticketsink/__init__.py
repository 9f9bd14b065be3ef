"""The reference ticket backend (``ivr ticket-sink``): the HTTP contract a real 12345
ticket system implements, for the demo, the tests and the benches.

- ``server.py`` — :class:`~ivr.ticketsink.server.TicketSink`, the aiohttp backend;
- ``tickets.py`` — :class:`~ivr.ticketsink.tickets.TicketStore`, tickets built from call
  events, idempotently and in order (pure);
- ``client.py`` — :class:`~ivr.ticketsink.client.SinkClient`, a signed client of its
  read and admin API;
- ``cli.py`` — the ``ivr ticket-sink`` command.

It reads what it shares with event delivery from ``ivr.events`` — the call-event schema
(``ivr.events.schema``) and the request signature (``ivr.events.signing``) — and event
delivery never imports it (``tests/test_import_rules.py``).
"""
