"""Server-side strategies: Flower's own, configured by name and wrapped for recording."""

from fedpeft.server.strategies.instrumented import InstrumentedStrategy
from fedpeft.server.strategies.private import PrivateStrategy
from fedpeft.server.strategies.registry import build_strategy
from fedpeft.server.strategies.sealed import SealedStrategy
from fedpeft.server.strategies.secure_aggregation import SecureAggregationStrategy

__all__ = [
    "InstrumentedStrategy",
    "PrivateStrategy",
    "SealedStrategy",
    "SecureAggregationStrategy",
    "build_strategy",
]
