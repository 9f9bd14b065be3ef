"""12345 hotline telephony control server: an Asterisk AMI/FastAGI bridge."""

__version__ = "0.1.0"
