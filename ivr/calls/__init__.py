"""The live model of calls: what the bridge knows about each call, read by every feature.

* :mod:`ivr.calls.variables` — every dialplan variable name the product sets or reads;
* :mod:`ivr.calls.steps` — what the per-call IVR reports (:class:`IvrStep`), by call id;
* :mod:`ivr.calls.tracker` — the one Linkedid tracker: live channels and their calls;
* :mod:`ivr.calls.state` — one call in progress (:class:`CallState`), its checkpoint and
  the one path of its routing facts (:meth:`CallState.set_routing`);
* :mod:`ivr.calls.channels` — the live channels (state, caller, connected line, bridge,
  conference, queue, agent), bridges and conferences (:class:`LiveChannels`);
* :mod:`ivr.calls.model` — the live calls (:class:`CallModel`): calls by Linkedid, the
  tracker of their channels, the conferences they own, the live channels; bounded.

Nothing here does I/O or imports a feature package: the IVR runtime, the call-event
builder and the service-level figures import it, not the other way round.
"""
