"""The curious non-label party: taps every exchange, logs it, and runs label inference attacks."""

from adversary.tap import Tap, build_tap

__all__ = ["Tap", "build_tap"]
