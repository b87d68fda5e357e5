"""Ctrl-C and SIGTERM (a scheduler's stop) for experiments.py and sweep.py.

Both programs end a stopped block with KeyboardInterrupt, including when started as a background job,
and hold the signals back while a file that must be written whole is being written.
"""
from __future__ import annotations

import signal
import threading
from contextlib import AbstractContextManager, contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def signal_handlers(handlers: dict) -> Iterator[None]:
    """Install `handlers` (by signal) for the block, then put back the previous ones. Only the main
    thread can handle signals; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interrupts_stop_the_run() -> AbstractContextManager[None]:
    """Let Ctrl-C and SIGTERM end the block with KeyboardInterrupt.

    Installed explicitly: a shell starts background jobs with SIGINT ignored, and Python would keep
    ignoring it.
    """
    return signal_handlers({signal.SIGINT: signal.default_int_handler,
                            signal.SIGTERM: raise_keyboard_interrupt})


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block has run, then raise KeyboardInterrupt."""
    received = []
    with signal_handlers({signum: lambda number, frame: received.append(number)
                          for signum in STOP_SIGNALS}):
        yield
    if received:
        raise KeyboardInterrupt
