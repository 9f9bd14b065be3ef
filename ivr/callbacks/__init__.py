"""Missed-call callbacks (漏接回拨): durable jobs that call back every caller missed in a
queue and every caller who asked for it in the IVR (docs/callbacks.md)."""
