"""FastAGI: a sans-I/O codec (:mod:`ivr.agi.codec`), a hardened server
(:mod:`ivr.agi.server`) and the typed channel API IVR code uses
(:mod:`ivr.agi.channel`), plus the process-AGI fallback script
(:mod:`ivr.agi.local`) Asterisk runs itself when the server is unreachable."""
