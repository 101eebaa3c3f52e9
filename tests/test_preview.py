"""The preview server's protocol and security rules, over real HTTP on 127.0.0.1 (no browser),
and `generate --interactive / --preview` through the CLI runner."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_pipeline, write_weighted_config
from typer.testing import CliRunner

from cli.app import app
from longvid.live import LiveSession, LiveTimeline
from longvid import preview
from longvid.frames import Frame
from longvid.preview import MAX_BODY_BYTES, PreviewServer
from longvid.timeline import MAX_PROMPT_CHARS, single

FPS, TF, K = 16, 4, 3


@pytest.fixture
def server():
    session = LiveSession(LiveTimeline(single("a red ball", 4.0, FPS, TF), K))
    with PreviewServer(session, port=0) as srv:
        yield srv


def request(srv, method, path, *, token=True, body=None, headers=None):
    """One HTTP request to `srv`; returns (status, parsed JSON or raw bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    hdrs = dict(headers or {})
    if token is True:
        hdrs.setdefault("X-Longvid-Token", srv.token)
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=hdrs)
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    kind = response.getheader("Content-Type", "")
    return response.status, (json.loads(raw) if kind.startswith("application/json") else raw)


def test_page_and_status_need_the_token(server):
    status, page = request(server, "GET", f"/?token={server.token}", token=False)
    assert status == 200 and b"longvid live preview" in page
    status, data = request(server, "GET", "/status")  # token in the header
    assert status == 200 and data["prompt"] == "a red ball" and data["total"] == 64
    for path in ("/", "/status", "/stream", "/frame.jpg"):
        assert request(server, "GET", path, token=False)[0] == 403
        assert request(server, "GET", path + "?token=wrong", token=False)[0] == 403
    assert request(server, "POST", "/prompt", token=False, body={"text": "x"})[0] == 403
    assert request(server, "POST", "/stop", token=False, body={})[0] == 403
    assert not server.session.stop_requested


def test_cross_origin_and_foreign_host_refused(server):
    evil = {"Origin": "http://evil.example"}
    assert request(server, "GET", "/status", headers=evil) == (403, {"error": "cross-origin request"})
    assert request(server, "POST", "/prompt", headers=evil, body={"text": "x"})[0] == 403
    assert request(server, "GET", "/status", headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    rebound = {"Host": f"evil.example:{server.port}"}  # DNS rebinding: a foreign name for us
    assert request(server, "GET", "/status", headers=rebound)[0] == 403
    same = {"Origin": f"http://127.0.0.1:{server.port}", "Sec-Fetch-Site": "same-origin"}
    assert request(server, "POST", "/pause", headers=same, body={})[0] == 200
    assert len(server.session.timeline.prompts) == 1 and server.session.paused


def test_prompt_and_controls(server):
    status, event = request(server, "POST", "/prompt", body={"text": "a blue square"})
    assert status == 200 and event["first_frame"] == 9 and event["source"] == "page"
    assert [p.text for p in server.session.timeline.prompts] == ["a red ball", "a blue square"]
    status, state = request(server, "POST", "/pause", body={})
    assert status == 200 and state["state"] == "paused"
    assert request(server, "POST", "/resume", body={})[1]["state"] != "paused"
    status, state = request(server, "POST", "/stop", body={})
    assert status == 200 and server.session.stop_requested


def test_bad_requests(server):
    too_long = {"text": "x" * (MAX_PROMPT_CHARS + 1)}
    status, data = request(server, "POST", "/prompt", body=too_long)
    assert status == 409 and "over the limit" in data["error"]
    assert request(server, "POST", "/prompt", body={"text": 5})[0] == 409
    assert request(server, "POST", "/prompt", body=b"not json")[0] == 400
    assert request(server, "POST", "/prompt", body=b"x" * (MAX_BODY_BYTES + 1))[0] == 413
    form = {"Content-Type": "application/x-www-form-urlencoded"}  # what a cross-site form sends
    assert request(server, "POST", "/prompt", body=b"text=x", headers=form)[0] == 415
    assert request(server, "PUT", "/prompt", body={"text": "x"})[0] == 405
    assert request(server, "GET", "/../../etc/passwd")[0] == 404  # no file is ever served
    assert request(server, "GET", "/frame.jpg")[0] == 503  # no frame yet
    assert len(server.session.timeline.prompts) == 1


def test_stream_serves_frames_and_generation_survives_a_viewer_leaving(server):
    session = server.session
    pipe = tiny_pipeline()
    session.pause("test")  # hold the stream at its first frame while the viewer connects
    frames = []
    worker = threading.Thread(target=lambda: frames.extend(session.wrap(pipe.stream(session.timeline))))
    worker.start()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(f"GET /stream?token={server.token} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    data = b""
    while data.count(b"\xff\xd9") < 1:  # the end of the first JPEG
        data += sock.recv(65536)
    assert b"multipart/x-mixed-replace" in data and b"Content-Type: image/jpeg" in data
    sock.close()  # the viewer goes away mid-stream
    session.resume("test")
    worker.join(60)
    assert len(frames) == 64 and session.state == "finished"
    status, jpeg = request(server, "GET", "/frame.jpg")
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    assert session.hub.encoded <= 64


def test_viewer_gets_at_most_view_fps_frames_a_second_at_lower_priority():
    """A generator far faster than the viewer's rate is sampled: parts arrive no faster than
    `view_fps`, and the thread serving them runs niced (Linux) so generation keeps the CPU."""
    session = LiveSession(LiveTimeline(single("a red ball", 60.0, FPS, TF), K))
    with PreviewServer(session, port=0, view_fps=5) as srv:
        assert srv.view_fps == 5
        nice = []
        orig = preview._yield_cpu

        def spy():
            orig()
            if sys.platform.startswith("linux"):
                nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        preview._yield_cpu = spy
        try:
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            sock.sendall(f"GET /stream?token={srv.token} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
            stop = threading.Event()

            def publish():  # ~200 frames a second, like the built-in model on this CPU
                i = 0
                while not stop.is_set():
                    session.hub.publish(Frame(index=i, image=np.zeros((8, 8, 3), np.uint8)))
                    i += 1
                    time.sleep(0.005)
            producer = threading.Thread(target=publish)
            producer.start()
            data, t0 = b"", time.monotonic()
            while time.monotonic() - t0 < 1.5:
                data += sock.recv(65536)
            stop.set()
            producer.join()
            sock.close()
        finally:
            preview._yield_cpu = orig
    parts = data.count(b"Content-Type: image/jpeg")
    assert 3 <= parts <= 10  # 5 a second for 1.5 s, give or take start-up
    if sys.platform.startswith("linux"):
        assert nice and min(nice) >= preview.VIEWER_NICENESS
    with pytest.raises(preview.PreviewError, match="--preview-fps"):
        PreviewServer(session, port=0, view_fps=0)
    fast = PreviewServer(session, port=0, view_fps=60)
    fast.close()
    assert fast.view_fps == FPS  # never above the video's own rate


# --- the CLI ---------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def tiny_weighted(tmp_path, monkeypatch) -> str:
    """A tiny config with its random weights saved to a file, so that two runs use one model."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CI", "true")
    threads = torch.get_num_threads()
    yield write_weighted_config(tmp_path)
    torch.set_num_threads(threads)


def pngs(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(directory.glob("frame_*.png"))]


def test_interactive_prompts_are_recorded_and_replay(tiny_weighted, tmp_path):
    result = runner.invoke(app, ["generate", "a red ball", "--seconds", "4", "--config", tiny_weighted,
                                 "--out", "live.mp4", "--png-dir", "live", "--interactive"],
                           input="a blue square\n:pause\n:resume\n")
    assert result.exit_code == 0, result.output
    assert "prompt from frame" in result.stderr
    manifest = json.loads((tmp_path / "live.json").read_text())
    live = manifest["info"]["live"]
    event = live["events"][0]
    assert event["text"] == "a blue square" and event["source"] == "stdin"
    assert [a["action"] for a in live["events"]] == ["prompt", "pause", "resume"]
    assert {"frame": event["first_frame"], "prompt_index": 1, "prompt": "a blue square"} in manifest["switches"]
    assert live["replay_timeline"] == str(tmp_path / "live.timeline.yaml")
    replay = runner.invoke(app, ["generate", "--timeline", "live.timeline.yaml", "--config", tiny_weighted,
                                 "--out", "replay.mp4", "--png-dir", "replay"])
    assert replay.exit_code == 0, replay.output
    live_frames = pngs(tmp_path / "live")
    assert len(live_frames) == 64 and pngs(tmp_path / "replay") == live_frames
    assert json.loads((tmp_path / "replay.json").read_text())["switches"] == manifest["switches"]


def test_interactive_stop_saves_a_shorter_video_that_replays(tiny_weighted, tmp_path):
    result = runner.invoke(app, ["generate", "a red ball", "--seconds", "60", "--config", tiny_weighted,
                                 "--out", "cut.mp4", "--png-dir", "cut", "-i"], input=":stop\n")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "cut.json").read_text())
    stopped = manifest["info"]["live"]["stopped_at_frame"]
    assert manifest["status"] == "finished" and stopped == manifest["frames"] < 960
    assert (stopped - 9) % 12 == 0  # whole blocks: 9 frames, then 12 per block
    replay = runner.invoke(app, ["generate", "--timeline", "cut.timeline.yaml", "--config", tiny_weighted,
                                 "--out", "replay.mp4", "--png-dir", "replay"])
    assert replay.exit_code == 0, replay.output
    assert pngs(tmp_path / "replay") == pngs(tmp_path / "cut")


def one_error_line(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr


def test_live_option_errors(tiny_weighted, tmp_path, monkeypatch):
    (tmp_path / "taken.timeline.yaml").write_text("seconds: 1\n")
    base = ["generate", "a ball", "--seconds", "1", "--config", tiny_weighted]
    one_error_line(runner.invoke(app, [*base, "--out", "taken.mp4", "-i"], input=""), "already exists")
    one_error_line(runner.invoke(app, [*base, "--out", "x.mp4", "-i", "--live-timeline", "t.txt"]),
                   "must be a .yaml")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    one_error_line(runner.invoke(app, [*base, "--out", "w.mp4", "--preview-window"]), "needs a display")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        one_error_line(runner.invoke(app, [*base, "--out", "p.mp4", "--preview", "--preview-port", port]),
                       "cannot serve the preview")
    one_error_line(runner.invoke(app, [*base, "--out", "f.mp4", "--preview", "--preview-fps", "0"]),
                   "--preview-fps")
    for name in ("w.mp4", "p.mp4", "f.mp4"):
        assert not (tmp_path / name).exists()
