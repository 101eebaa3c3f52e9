"""The preview page in a real browser (Debian's headless Chromium via chromedriver).

A real `longvid generate --preview` run in a subprocess (tiny config); the test opens the printed
URL, sees frames arrive, types a prompt, stops and saves from the page, then checks that the
manifest and the recorded timeline hold the switch at the frame the page announced. Skipped (with the reason) when chromium, chromedriver or selenium
is missing: `apt-get install -y chromium chromium-driver` and `pip install selenium`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from browser import missing, start_chromium
from conftest import write_weighted_config


REASON = missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no browser: {REASON}")

ROOT = Path(__file__).resolve().parents[1]
WAIT = 120  # seconds: generous upper bounds for a loaded CI machine, never expected timings


def wait_for(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class LiveRun:
    """`longvid generate ... --preview` in a subprocess; collects its stderr."""

    def __init__(self, cwd: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.app", "generate", *args], cwd=cwd,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self.out: list[str] = []
        for stream, sink in ((self.proc.stderr, self.err), (self.proc.stdout, self.out)):
            threading.Thread(target=lambda s=stream, k=sink: k.extend(s), daemon=True).start()

    def url(self) -> str:
        def find():
            if self.proc.poll() is not None:
                raise AssertionError("generate ended early: " + "".join(self.err))
            for line in list(self.err):
                if line.startswith("preview: "):
                    return line.split(" ", 1)[1].strip()
            return None

        return wait_for(find, "the preview URL")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def status_code(port: int, path: str, headers: dict) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers)
    code = conn.getresponse().status
    conn.close()
    return code


def test_page_shows_frames_takes_a_prompt_and_stops(tmp_path):
    config = write_weighted_config(tmp_path)
    # an hour of tiny video: far longer than the test, which ends it with "Stop and save"
    # 64x32 frames: the page must keep a video's aspect ratio
    run = LiveRun(tmp_path, "a red ball", "--seconds", "3600", "--config", config, "--out", "live.mp4",
                  "--set", "video.width=64", "--preview")
    browser = None
    try:
        url = run.url()
        port = int(re.search(r":(\d+)/", url).group(1))
        token = url.split("token=")[1]

        # refused: no token, a wrong token, another origin (with the right token)
        assert status_code(port, "/status", {}) == 403
        assert status_code(port, "/?token=nope", {}) == 403
        assert status_code(port, f"/status?token={token}", {"Origin": "http://evil.example"}) == 403

        browser = start_chromium(str(tmp_path / "profile"))
        browser.get(url)
        q = browser.find_element
        # frames arrive: the image is decoded and the frame counter moves
        wait_for(lambda: browser.execute_script(
            "const i = document.querySelector('#video'); return i.complete && i.naturalWidth == 64"),
            "the first frame")
        shown = browser.execute_script("const i = document.querySelector('#video');"
                                       "return [i.clientWidth, i.clientHeight]")
        assert shown[0] >= 256 and abs(shown[0] / shown[1] - 2) < 0.05  # scaled up, not squashed
        count = lambda: int(q("css selector", "#count").text.split("/")[0])  # noqa: E731
        first_count = wait_for(count, "the frame counter")
        wait_for(lambda: count() > first_count, "the frame counter to move")
        assert q("css selector", "#prompt").text == "a red ball"

        q("css selector", "#text").send_keys("a blue square")
        q("css selector", "#send").click()
        message = wait_for(lambda: q("css selector", "#msg").text, "the prompt to be applied")
        applied = int(re.search(r"applied from frame (\d+)", message).group(1))
        wait_for(lambda: q("css selector", "#prompt").text == "a blue square", "the new prompt on screen")
        assert "a blue square" in q("css selector", "#list").text

        q("css selector", "#pause").click()
        wait_for(lambda: q("css selector", "#state").text == "paused", "pause")
        q("css selector", "#pause").click()
        wait_for(lambda: q("css selector", "#state").text == "running", "resume")

        q("css selector", "#stop").click()
        assert run.proc.wait(WAIT) == 0, "".join(run.err)
    finally:
        if browser is not None:
            browser.quit()
        run.close()

    manifest = json.loads((tmp_path / "live.json").read_text())
    assert {"frame": applied, "prompt_index": 1, "prompt": "a blue square"} in manifest["switches"]
    live = manifest["info"]["live"]
    assert [e["action"] for e in live["events"]] == ["prompt", "pause", "resume", "stop"]
    assert live["events"][0]["first_frame"] == applied
    assert manifest["status"] == "finished" and live["stopped_at_frame"] == manifest["frames"]

    replay = yaml.safe_load((tmp_path / "live.timeline.yaml").read_text())
    assert replay["prompts"][1] == {"at": applied / 16, "text": "a blue square"}
    assert replay["seconds"] == manifest["frames"] / 16  # (replay equality: tests/test_preview.py)
