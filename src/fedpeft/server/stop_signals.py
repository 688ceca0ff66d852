"""SIGTERM and SIGINT as a request to stop the run, not as an instant death.

The first signal sets an event that the coordinator's grid checks between polls (0.1 to
0.5 s apart), so the run ends within about a poll interval, leaving the checkpoint of its last
complete round. A second signal is the impatient one: the previous handlers come back and
the signal is delivered again (SIGINT then raises KeyboardInterrupt, SIGTERM terminates).
Signal handlers can only be installed from the main thread; elsewhere this does nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT set `stop`; the handlers before are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in _SIGNALS}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    def on_signal(number: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            restore()
            os.kill(os.getpid(), number)
            return
        logger.warning("%s received: stopping the run; it can be resumed from its last "
                       "complete round (send it again to stop at once)",
                       signal.Signals(number).name)
        stop.set()

    for number in _SIGNALS:
        signal.signal(number, on_signal)
    try:
        yield
    finally:
        restore()
