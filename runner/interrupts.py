"""Ctrl-C and SIGTERM (a scheduler's stop) for experiments.py and sweep.py, and how both end.

Both programs end a stopped block with KeyboardInterrupt, including when started as a background job,
and hold the signals back while a file that must be written whole is being written. An error of the
user's (bad input, a run another process holds) or a stop before the work started ends either with
one line and its exit code (`one_line_errors`).
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Iterator

from runner.errors import INTERRUPTED, USAGE
from runner.safe_files import LockHeld

def stop_signals() -> tuple[int, ...]:
    """The signals that stop a run or a sweep: Ctrl-C (SIGINT), SIGTERM, and a hang-up (SIGHUP: the
    terminal closed), unless the program was started to ignore hang-ups (`nohup`)."""
    hang_up = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGINT, signal.SIGTERM, *hang_up)


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
    """Let Ctrl-C, SIGTERM and SIGHUP (see `stop_signals`) end the block with KeyboardInterrupt.

    Installed explicitly: a shell starts background jobs with SIGINT ignored, and Python would keep
    ignoring it.
    """
    return signal_handlers({signum: raise_keyboard_interrupt for signum in stop_signals()})


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold the signals that stop a run back until the block has run, then raise KeyboardInterrupt."""
    received = []
    with signal_handlers({signum: lambda number, frame: received.append(number)
                          for signum in stop_signals()}):
        yield
    if received:
        raise KeyboardInterrupt


@dataclass
class Outcome:
    """The exit code of a program whose block `one_line_errors` ended."""

    exit_code: int = 0


@contextmanager
def one_line_errors(program: str, errors: tuple[type[Exception], ...], lock_held: str,
                    interrupted: str) -> Iterator[Outcome]:
    """Run the block with Ctrl-C and SIGTERM stopping it; where it raises one of `errors`, finds a
    lock held by another process (`lock_held` says what that means, `{error}` naming the holder) or
    is stopped (`interrupted` says what that left), print one line to stderr and set the outcome's
    exit code (USAGE or INTERRUPTED) instead of raising."""
    outcome = Outcome()
    try:
        with interrupts_stop_the_run():
            yield outcome
    except errors as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        outcome.exit_code = USAGE
    except LockHeld as error:
        print(f"{program}: error: {lock_held.format(error=error)}", file=sys.stderr)
        outcome.exit_code = USAGE
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        outcome.exit_code = INTERRUPTED
