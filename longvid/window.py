"""The live preview in a desktop window (Tk, from the standard library).

Same stream and controls as the web page: the latest frame, scaled up; the active prompt, frame
count and fps; a prompt box applied at the next block; pause / resume; stop and save. Tk must run
on the main thread, so the caller runs generation in another thread (`run_in_window`). The window
polls the session's `FrameHub` on a timer and converts the newest frame on its own thread, so it
never holds up generation; closing the window lets the stream carry on to the end.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from longvid.errors import LongvidError
from longvid.live import LiveSession, handle_command

POLL_MS = 40  # check for a new frame 25 times a second
DISPLAY_SIZE = 512  # frames are scaled up by an integer factor to about this many pixels


class WindowError(LongvidError):
    """The preview window cannot open (no display, no Tk)."""


def ppm(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> binary PPM, which Tk's PhotoImage reads without any extra library."""
    h, w = image.shape[:2]
    return f"P6 {w} {h} 255\n".encode() + np.ascontiguousarray(image).tobytes()


def open_tk() -> Any:
    """A Tk root, or WindowError saying why there cannot be one."""
    if os.name == "posix" and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise WindowError("--preview window needs a display (DISPLAY is not set); use --preview "
                          "for the browser page instead")
    try:
        import tkinter
    except ImportError:
        raise WindowError("--preview window needs Tk (the python3-tk package); use --preview for "
                          "the browser page instead") from None
    try:
        return tkinter.Tk(className="longvid")
    except tkinter.TclError as error:
        raise WindowError(f"cannot open the preview window ({error}); use --preview for the "
                          "browser page instead") from None


class PreviewWindow:
    """A Tk window showing `session`'s stream with its controls."""

    def __init__(self, session: LiveSession, root: Any, title: str = "longvid live preview") -> None:
        import tkinter as tk

        self.session = session
        self.root = root
        self.seen = 0
        self.shown = 0  # frames displayed (a slow window skips frames)
        self.closed = False
        # Until the first frame, a blank image: a Label without one counts width and height in
        # characters, and the window would open thousands of pixels wide.
        self._photo = tk.PhotoImage(width=DISPLAY_SIZE, height=DISPLAY_SIZE)
        root.title(title)
        root.configure(background="#111")
        self.image = tk.Label(root, background="#000", image=self._photo)
        self.image.pack(padx=8, pady=8)
        self.info = tk.Label(root, text="starting", anchor="w", justify="left",
                             background="#111", foreground="#ddd")
        self.info.pack(fill="x", padx=8)
        self.entry = tk.Entry(root, width=60)
        self.entry.pack(fill="x", padx=8, pady=4)
        self.entry.bind("<Return>", lambda _event: self.send())
        buttons = tk.Frame(root, background="#111")
        buttons.pack(fill="x", padx=8, pady=(0, 8))
        self.send_button = tk.Button(buttons, text="Send prompt", command=self.send)
        self.send_button.pack(side="left")
        self.pause_button = tk.Button(buttons, text="Pause", command=self.toggle_pause)
        self.pause_button.pack(side="left", padx=4)
        self.stop_button = tk.Button(buttons, text="Stop and save", command=lambda: session.stop("window"))
        self.stop_button.pack(side="left")
        self.message = tk.Label(root, text="", anchor="w", background="#111", foreground="#fc6")
        self.message.pack(fill="x", padx=8, pady=(0, 8))
        root.protocol("WM_DELETE_WINDOW", self.close)

    def send(self) -> None:
        text = self.entry.get()
        if text.strip():
            self.message.configure(text=handle_command(self.session, text, source="window"))
            self.entry.delete(0, "end")

    def toggle_pause(self) -> None:
        if self.session.paused:
            self.session.resume("window")
        else:
            self.session.pause("window")

    def close(self) -> None:
        """Close the window; the stream carries on (stop it with "Stop and save" or Ctrl-C)."""
        self.closed = True
        self.root.destroy()

    def refresh(self) -> None:
        """Show the newest frame and status (called on the Tk thread)."""
        import tkinter as tk

        seq, frame = self.session.hub.latest()
        if frame is not None and seq != self.seen:
            self.seen = seq
            scale = max(1, DISPLAY_SIZE // max(frame.height, frame.width))
            photo = tk.PhotoImage(data=ppm(frame.image), format="PPM")
            self._photo = photo.zoom(scale, scale) if scale > 1 else photo
            self.image.configure(image=self._photo, width=frame.width * scale, height=frame.height * scale)
            self.shown += 1
        s = self.session.status()
        self.info.configure(text=f"{s['state']}  ·  frame {s['frame']} / {s['total']}  ·  "
                                 f"{s['fps']:.1f} fps\nprompt: {s['prompt']}")
        self.pause_button.configure(text="Resume" if s["state"] == "paused" else "Pause")


def run_in_window(session: LiveSession, work: Callable[[], Any], root: Any = None,
                  on_window: Callable[[PreviewWindow], None] | None = None) -> Any:
    """Run `work` (the generation) in a thread while a window shows `session`; return its result.

    The window closes itself when the stream finishes. Ctrl-C in the terminal interrupts the
    stream as it would without a window (the writers close and keep the frames). An exception
    from `work` is re-raised here.
    """
    root = root if root is not None else open_tk()
    window = PreviewWindow(session, root)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="longvid-generate", daemon=True)

    def tick() -> None:
        if window.closed:
            return
        window.refresh()
        if on_window is not None:
            on_window(window)
        if thread.is_alive():
            root.after(POLL_MS, tick)
        else:
            window.close()

    def report(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):  # Ctrl-C lands in a Tk callback
            session.interrupt()
            window.close()
        else:
            root.__class__.report_callback_exception(root, exc_type, exc, tb)

    root.report_callback_exception = report
    thread.start()
    root.after(0, tick)
    try:
        root.mainloop()
    except KeyboardInterrupt:
        session.interrupt()
    if not window.closed:
        window.close()
    # The window is gone (closed by the user or the stream ended): wait for the stream.
    try:
        while thread.is_alive():
            thread.join(0.25)
    except KeyboardInterrupt:
        session.interrupt()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")
