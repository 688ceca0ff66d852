"""Keep Flower's own console output out of fedpeft's rich progress display.

Flower logs every round to its own console handler at INFO; during a fedpeft run its records
still reach `run.log` (and warnings the terminal) through the root logger, while the terminal
shows fedpeft's progress and tables instead of Flower's lines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from flwr.supercore.logger import LOGGER_NAME, ConsoleHandler


@contextmanager
def quiet_flower_console(level: int = logging.CRITICAL + 1) -> Iterator[None]:
    handlers = [h for h in logging.getLogger(LOGGER_NAME).handlers if isinstance(h, ConsoleHandler)]
    previous = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(level)
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous):
            handler.setLevel(old)
