"""Stopping a stream on SIGINT / SIGTERM without losing a frame.

    with StopOnSignal() as stop:
        for frame in pipeline.stream(timeline, on_block=lambda state: stop.check()):
            ...

- The first SIGINT (Ctrl-C) or SIGTERM only sets a flag: the stream finishes the block it is
  making, and at the block's end `check()` raises `Interrupted`, which ends the stream the way
  Ctrl-C always does (the writers close the video and the manifest; see `write_stream`).
- A second one raises `Interrupted` at once, wherever the program is (the current block is
  dropped; the writers still close, which takes milliseconds).
- Any later one gets the system's default action (the process dies; the fragmented MP4 still
  plays up to its last fragment).

`Interrupted` is a KeyboardInterrupt, so code that already handles Ctrl-C handles it; its
`exit_code` is the shell's convention, 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal. str(): the signal's name."""

    def __init__(self, signum: int, immediate: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.immediate = immediate

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopOnSignal:
    """Context manager: SIGINT / SIGTERM ask for a clean stop (see the module docstring).

    on_request(signum, count) is called from the handler (e.g. to print "stopping after this
    block"). Handlers are only installed in the main thread; elsewhere this does nothing.
    """

    def __init__(self, on_request: Callable[[int, int], None] | None = None) -> None:
        self.on_request = on_request
        self.signum: int | None = None  # the first signal received
        self.count = 0
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise `Interrupted` if a stop was requested: call it where stopping is clean."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def _handle(self, signum: int, frame) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self.on_request is not None:
            try:
                self.on_request(signum, self.count)
            except Exception:  # noqa: BLE001 - a message must never break the stop
                pass
        if self.count == 2:
            for sig in SIGNALS:  # a third signal: the default action, no more cleanup
                signal.signal(sig, signal.SIG_DFL)
            raise Interrupted(self.signum, immediate=True)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def describe(signum: int, count: int) -> str:
    """The line to show when a stop signal arrives."""
    name = signal.Signals(signum).name
    if count == 1:
        again = "Ctrl-C" if signum == signal.SIGINT else name
        return f"{name}: stopping after the current block ({again} again to stop at once)"
    return f"{name} again: stopping now"


def echo(signum: int, count: int) -> None:
    print(describe(signum, count), file=sys.stderr, flush=True)
