"""FastAGI: a sans-I/O codec (:mod:`ivr.agi.codec`), a hardened server
(:mod:`ivr.agi.server`) and the typed channel API IVR code uses
(:mod:`ivr.agi.channel`)."""
