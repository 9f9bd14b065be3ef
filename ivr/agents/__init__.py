"""Queues and agents (话务员): live queue/member state from AMI, and agent operations.

A feature slice (docs/agents.md):

* :mod:`ivr.agents.state` — pure (no I/O) live state of queues, members and waiting
  callers, fed AMI events in wire order and rebuilt from ``QueueStatus``;
* :mod:`ivr.agents.catalog` — what the published definition says: pause reasons,
  queues, wrap-up;
* :mod:`ivr.agents.service` — log in / out, pause / unpause, penalties over AMI, input
  checked first (nothing is sent to Asterisk for bad input);
* :mod:`ivr.agents.monitor` — binds the state to an AMI client (events, resync after
  every (re)connect): the application's ``AGENTS`` component;
* :mod:`ivr.agents.errors` — the slice's exception tree.

Asterisk (``persistentmembers = yes``) holds the truth of who is logged in; the state
here is a cache of it, rebuilt after every (re)connect.
"""
