"""The live model of calls: what the bridge knows about each call, read by every feature.

* :mod:`ivr.calls.variables` — every dialplan variable name the product sets or reads;
* :mod:`ivr.calls.steps` — what the per-call IVR reports (:class:`IvrStep`), by call id.
"""
