"""Asterisk 20 emulator: an AMI server and FastAGI client peer for tests, demo and
benchmarks (see docs/emulator.md)."""

from ivr.sim.app_queue import AgentScript
from ivr.sim.callers import CallerScript, CallHandle, CallSummary
from ivr.sim.emulator import Emulator, EmulatorConfig

__all__ = ["AgentScript", "CallHandle", "CallSummary", "CallerScript", "Emulator",
           "EmulatorConfig"]
