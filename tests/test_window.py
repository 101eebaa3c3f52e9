"""The preview window (Tk) on a virtual X display (Xvfb), driven through its own widgets.
Skipped with the reason when Tk or Xvfb is missing (`apt-get install -y xvfb`)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import tiny_pipeline

from longvid.live import LiveSession, LiveTimeline
from longvid.timeline import single
from longvid.window import DISPLAY_SIZE

tkinter = pytest.importorskip("tkinter", reason="Python was built without Tk")


@pytest.fixture
def display(monkeypatch):
    """A private Xvfb display for the test (DISPLAY points at it)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not found (apt-get install -y xvfb)")
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "800x700x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()  # Xvfb writes its display number once it is ready
    if not number:
        proc.kill()
        pytest.skip("Xvfb did not start")
    monkeypatch.setenv("DISPLAY", f":{number}")
    yield
    proc.terminate()
    proc.wait()


def test_window_shows_frames_takes_a_prompt_and_stops(display):
    from longvid.window import run_in_window

    pipe = tiny_pipeline()
    # long enough that the stream cannot end on its own before the window stops it, even on a
    # loaded machine (at 30 s it once did: stopped_at was None)
    session = LiveSession(LiveTimeline(single("a red ball", 600.0, 16, 4), 3))
    session.pause("test")  # hold at the first frame until the window has shown it
    frames, steps = [], []

    def work():
        for frame in session.wrap(pipe.stream(session.timeline)):
            frames.append(frame)
        return len(frames)

    sizes = []

    def drive(window):  # runs on the Tk thread at every refresh, like a person at the window
        if not sizes:  # before the first frame: the window's own size, not thousands of pixels
            sizes.append((window.image.winfo_reqwidth(), window.image.winfo_reqheight()))
        if window.shown >= 1 and not steps:
            window.entry.insert(0, "a blue square")
            window.send_button.invoke()
            steps.append(window.message.cget("text"))
            window.pause_button.invoke()  # resume
        elif len(steps) == 1 and "a blue square" in window.info.cget("text"):
            steps.append("seen")
            window.stop_button.invoke()

    count = run_in_window(session, work, on_window=drive)
    assert all(DISPLAY_SIZE <= side < 2 * DISPLAY_SIZE for side in sizes[0]), sizes
    assert steps[0].startswith("prompt from frame 9") and steps[1] == "seen"
    assert count == len(frames) == session.stopped_at < session.total
    assert [e["action"] for e in session.events] == ["pause", "prompt", "resume", "stop"]
    assert frames[9].prompt == "a blue square" and frames[8].prompt == "a red ball"
