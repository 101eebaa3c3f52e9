"""The `longvid` command line: the Typer app is `cli.app`; `main` is the console script.

`main` imports the app behind a guard. Importing torch, diffusers and the app takes seconds, and a
Ctrl-C (or SIGTERM) in that time would otherwise end in a long traceback, or be lost when Python
happens to be running a destructor (it prints "Exception ignored" and carries on). Here it ends the
run before anything is written, with one line and the shell's exit code (130 for SIGINT, 143 for
SIGTERM). Once the app is imported, `longvid.signals.StopOnSignal` takes over during generation.
This module imports only the standard library, so the guard is in place at once.
"""

from __future__ import annotations

import signal
import sys

STARTUP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def main() -> None:
    received: list[int] = []

    def on_signal(signum: int, frame) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    def unraisable(info) -> None:  # the signal swallowed by a destructor: noted, not printed
        if not isinstance(info.exc_value, KeyboardInterrupt):
            previous_hook(info)

    previous = {sig: signal.signal(sig, on_signal) for sig in STARTUP_SIGNALS}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        from cli.app import main as run_app
    except KeyboardInterrupt:
        received = received or [signal.SIGINT]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = previous_hook
    if received:  # raised, or swallowed by a destructor during the import
        name = signal.Signals(received[0]).name
        print(f"{name} while starting: stopped before anything was written", file=sys.stderr, flush=True)
        raise SystemExit(128 + received[0])
    run_app()
