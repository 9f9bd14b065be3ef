"""Asterisk Manager Interface: a sans-I/O codec (:mod:`ivr.ami.codec`) and an asyncio
client (:mod:`ivr.ami.client`)."""
