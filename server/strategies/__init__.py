"""Server-side strategies: Flower's own, configured by name and wrapped for recording."""

from fedpeft.server.strategies.instrumented import InstrumentedStrategy
from fedpeft.server.strategies.registry import build_strategy

__all__ = ["InstrumentedStrategy", "build_strategy"]
