"""Several bridges for one Asterisk: a fenced owner of its call events and hot standbys
that take over without losing or repeating an event (:mod:`ivr.failover.service`)."""
