"""The live preview page: watch the stream in a browser and steer it (standard library only).

`PreviewServer` serves one self-contained page and a few endpoints for a `LiveSession`:

    GET  /?token=T          the page (frames, active prompt, timeline, fps, frame count, controls)
    GET  /stream?token=T    the frames as MJPEG (latest frame only; a slow viewer skips frames)
    GET  /frame.jpg?token=T the latest frame as one JPEG
    GET  /status?token=T    the session's state as JSON
    POST /prompt            {"text": "..."}: switch prompt at the next block not yet started
    POST /pause, /resume, /stop      (stop = stop and save: the video is closed cleanly)

Security model (see docs/preview.md): bound to 127.0.0.1 unless asked otherwise; every request
must carry the per-run secret token (query `token=` or header `X-Longvid-Token`), compared in
constant time; the Host header must name this server (DNS rebinding) and an Origin or
Sec-Fetch-Site header from another site is refused (cross-origin requests); control requests
must be JSON POSTs of at most a few kilobytes; prompts are limited in length; no endpoint touches
a file: the page is a constant string, and the only data served are frames and the status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from longvid.errors import LongvidError
from longvid.live import LivePromptError, LiveSession

DEFAULT_HOST = "127.0.0.1"
MAX_BODY_BYTES = 16 * 1024  # a prompt of MAX_PROMPT_CHARS characters in JSON fits easily
MAX_STREAMS = 8  # concurrent MJPEG viewers; more get 503
STREAM_WAIT_SECONDS = 1.0  # a stream re-checks for the end of the run this often
REPEAT_AFTER_SECONDS = 0.2  # an idle stream repeats its last frame once after this long
DEFAULT_VIEW_FPS = 10  # frames a second sent to each viewer (--preview-fps), and never more than
# the video's own rate: a faster generator is sampled. Each frame costs the browser ~4 ms of CPU
# (decode, paint) on the cores that generate; docs/preview.md has the measurements.
MAX_VIEW_FPS = 60
VIEWER_NICENESS = 10  # Linux: the server's threads yield the CPU to the generating threads
TOKEN_HEADER = "X-Longvid-Token"
BOUNDARY = "longvidframe"
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")


class PreviewError(LongvidError):
    """The preview server cannot start (port in use, bad host)."""


def _sha256_csp(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


_STYLE = """
body{font:14px system-ui,sans-serif;margin:0;background:#111;color:#ddd}
main{display:flex;gap:20px;padding:16px;flex-wrap:wrap}
#video{width:512px;max-width:100%;height:auto;min-height:64px;align-self:flex-start;image-rendering:pixelated;background:#000;border:1px solid #333}
section{flex:1;min-width:300px}
h1{font-size:16px;margin:0 0 8px}
.row{margin:6px 0}
.label{color:#888}
#prompt{font-weight:bold;color:#fff}
#bar{position:relative;height:28px;background:#222;border:1px solid #444;margin:8px 0}
.seg{position:absolute;top:0;bottom:0;border-right:2px solid #111;overflow:hidden;
  white-space:nowrap;font-size:11px;padding:2px;box-sizing:border-box;color:#000}
#head{position:absolute;top:-3px;bottom:-3px;width:2px;background:#fff}
#list{font-size:12px;color:#aaa;max-height:160px;overflow:auto;padding-left:18px}
textarea{width:100%;box-sizing:border-box;background:#222;color:#eee;border:1px solid #555}
button{margin:4px 4px 0 0;padding:4px 10px}
#msg{color:#fc6;min-height:1.2em}
"""

_SCRIPT = """
const token = new URLSearchParams(location.search).get("token") || "";
const q = s => document.querySelector(s);
const colors = ["#e66","#6c6","#69f","#ec5","#c6c","#5cc","#f96","#9c6"];
// an endless MJPEG would keep the page "loading": start it once the page has loaded
window.addEventListener("load", () => { q("#video").src = "/stream?token=" + encodeURIComponent(token); });
async function post(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json",
    "X-Longvid-Token": token}, body: JSON.stringify(body || {})});
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function say(text) { q("#msg").textContent = text; }
q("#send").onclick = async () => {
  const text = q("#text").value.trim();
  if (!text) return;
  try {
    const e = await post("/prompt", {text});
    say("applied from frame " + e.first_frame + " (block " + e.block + ")");
    q("#text").value = "";
  } catch (err) { say("refused: " + err.message); }
};
q("#text").addEventListener("keydown", ev => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); q("#send").click(); }
});
q("#pause").onclick = async () => {
  try { await post(q("#pause").textContent === "Pause" ? "/pause" : "/resume"); }
  catch (err) { say(err.message); }
};
q("#stop").onclick = async () => {
  try { await post("/stop"); say("stopping after this block; the video is saved"); }
  catch (err) { say(err.message); }
};
// every poll only sets text and the play head; the timeline is rebuilt when its prompts change
// (a DOM rebuild twice a second costs the browser, and so the generator, CPU for nothing)
let shown = "";
function setText(sel, text) { const e = q(sel); if (e.textContent !== text) e.textContent = text; }
function render(s) {
  setText("#state", s.state);
  setText("#count", s.frame + " / " + s.total);
  setText("#fps", s.fps.toFixed(1));
  setText("#prompt", s.prompt);
  setText("#pause", s.state === "paused" ? "Resume" : "Pause");
  setText("#next", s.next_prompt_frame === null ? "none (last block)" : "frame " + s.next_prompt_frame);
  q("#text").maxLength = s.max_prompt_chars;
  const done = s.state === "finished";
  const key = JSON.stringify([s.total, s.prompts, done]);
  if (key !== shown) { shown = key; timeline(s, done); }
  q("#head").style.left = (100 * s.frame / s.total) + "%";
  return done;
}
function timeline(s, done) {
  const bar = q("#bar"); bar.replaceChildren();
  const list = q("#list"); list.replaceChildren();
  s.prompts.forEach((p, i) => {
    const end = i + 1 < s.prompts.length ? s.prompts[i + 1].first_frame : s.total;
    const seg = document.createElement("div");
    seg.className = "seg";
    seg.style.left = (100 * p.first_frame / s.total) + "%";
    seg.style.width = (100 * (end - p.first_frame) / s.total) + "%";
    seg.style.background = colors[i % colors.length];
    seg.style.opacity = p.fixed ? 1 : 0.5;
    seg.title = seg.textContent = p.text;
    bar.appendChild(seg);
    const li = document.createElement("li");
    li.textContent = "frame " + p.first_frame + ": " + p.text + (p.fixed ? "" : " (pending)");
    list.appendChild(li);
  });
  const head = document.createElement("div");
  head.id = "head";
  bar.appendChild(head);
  ["#send", "#pause", "#stop"].forEach(b => q(b).disabled = done);
}
async function poll() {
  try {
    const r = await fetch("/status?token=" + encodeURIComponent(token), {cache: "no-store"});
    if (!r.ok) throw new Error(r.statusText);
    if (render(await r.json())) return;
  } catch (err) { q("#state").textContent = "disconnected (the run has ended)"; return; }
  setTimeout(poll, 1000);
}
poll();
"""

_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>longvid live preview</title>
<meta name="referrer" content="no-referrer">
<style>{_STYLE}</style></head>
<body><main>
<img id="video" alt="live frames">
<section>
<h1>longvid live preview</h1>
<div class="row"><span class="label">state</span> <span id="state">connecting</span>
 &middot; <span class="label">frame</span> <span id="count">0</span>
 &middot; <span class="label">fps</span> <span id="fps">0</span></div>
<div class="row"><span class="label">prompt</span> <span id="prompt"></span></div>
<div id="bar"></div>
<ol id="list" start="0"></ol>
<div class="row"><span class="label">a new prompt starts at</span> <span id="next"></span></div>
<textarea id="text" rows="3" placeholder="next prompt (Enter to send)"></textarea>
<div><button id="send">Send prompt</button><button id="pause">Pause</button>
<button id="stop">Stop and save</button></div>
<div id="msg"></div>
</section></main>
<script>{_SCRIPT}</script></body></html>
"""

_CSP = (f"default-src 'none'; img-src 'self'; connect-src 'self'; style-src {_sha256_csp(_STYLE)}; "
        f"script-src {_sha256_csp(_SCRIPT)}; form-action 'none'; "
        "frame-ancestors 'none'; base-uri 'none'")
# Inline style="" attributes set by the script go through the CSSOM, which CSP does not block.


def _yield_cpu() -> None:
    """Lower this thread's scheduling priority (Linux only: there a thread id names one thread;
    elsewhere the same call would renice the whole process, generation included)."""
    if sys.platform.startswith("linux"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, max(VIEWER_NICENESS, os.getpriority(os.PRIO_PROCESS, tid)))
        except OSError:
            pass  # not allowed here: the preview still works, at normal priority


class PreviewServer:
    """Serve the preview of `session` on http://host:port (port 0: any free port).

    A fresh secret token is made per server unless one is given. Each viewer gets at most
    `view_fps` frames a second (never more than the video's rate). `start()` serves in a daemon
    thread; `close()` stops serving (viewers see the end of the stream).
    """

    def __init__(self, session: LiveSession, host: str = DEFAULT_HOST, port: int = 0,
                 token: str | None = None, view_fps: float = DEFAULT_VIEW_FPS) -> None:
        if not 0 < view_fps <= MAX_VIEW_FPS:
            raise PreviewError(f"preview frame rate {view_fps} is out of range: give --preview-fps "
                               f"between 1 and {MAX_VIEW_FPS}")
        self.session = session
        self.view_fps = min(float(view_fps), float(session.timeline.fps))
        self.token = token or secrets.token_urlsafe(24)
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        handler = type("Handler", (_Handler,), {"preview": self})
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            raise PreviewError(f"cannot serve the preview on {host}:{port} ({error.strerror or error}); "
                               "choose another --preview-port (0 picks a free one)") from None
        self._httpd.daemon_threads = True
        self.host = host
        self.port = self._httpd.server_address[1]
        url_host = f"[{host}]" if ":" in host else host
        if host in ("0.0.0.0", "::", ""):
            url_host = "127.0.0.1"
        self.allowed_hosts = {f"{name}:{self.port}" for name in (*LOCAL_NAMES, url_host)}
        self.url = f"http://{url_host}:{self.port}/?token={self.token}"
        self._thread: threading.Thread | None = None

    def start(self) -> "PreviewServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="longvid-preview",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.session.hub.close()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "PreviewServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


class _Handler(BaseHTTPRequestHandler):
    preview: PreviewServer  # set on the subclass each server makes
    server_version = "longvid-preview"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        _yield_cpu()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # a request log would scroll the terminal under the progress output

    # --- checks shared by every request ----------------------------------------------------------
    def _refuse(self) -> str | None:
        """Why this request is refused (None: it may go on)."""
        host = self.headers.get("Host", "")
        if host not in self.preview.allowed_hosts:
            return "unknown Host header"
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc not in self.preview.allowed_hosts:
            return "cross-origin request"
        if origin is not None and urlsplit(origin).scheme != "http":
            return "cross-origin request"
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return "cross-site request"
        query = parse_qs(urlsplit(self.path).query)
        token = self.headers.get(TOKEN_HEADER) or (query.get("token") or [None])[0]
        if not self.preview.token_ok(token):
            return "missing or wrong token"
        return None

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # --- methods -----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        refused = self._refuse()
        if refused:
            return self._error(HTTPStatus.FORBIDDEN, refused)
        path = urlsplit(self.path).path
        session = self.preview.session
        if path == "/":
            return self._send(HTTPStatus.OK, _PAGE.encode(), "text/html; charset=utf-8",
                              {"Content-Security-Policy": _CSP})
        if path == "/status":
            return self._json(HTTPStatus.OK, session.status())
        if path == "/frame.jpg":
            _, jpeg = session.hub.jpeg()
            if jpeg is None:
                return self._error(HTTPStatus.SERVICE_UNAVAILABLE, "no frame yet")
            return self._send(HTTPStatus.OK, jpeg, "image/jpeg")
        if path == "/stream":
            return self._stream()
        return self._error(HTTPStatus.NOT_FOUND, "no such page")

    def do_POST(self) -> None:  # noqa: N802
        refused = self._refuse()
        if refused:
            return self._error(HTTPStatus.FORBIDDEN, refused)
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON (Content-Type: application/json)")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, UnicodeDecodeError):
            return self._error(HTTPStatus.BAD_REQUEST, "body is not valid JSON")
        if not isinstance(body, dict):
            return self._error(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        session = self.preview.session
        path = urlsplit(self.path).path
        if path == "/prompt":
            try:
                event = session.submit_prompt(body.get("text"), source="page")
            except LivePromptError as error:
                return self._error(HTTPStatus.CONFLICT, str(error))
            return self._json(HTTPStatus.OK, event)
        actions = {"/pause": session.pause, "/resume": session.resume, "/stop": session.stop}
        if path in actions:
            actions[path](source="page")
            return self._json(HTTPStatus.OK, session.status())
        return self._error(HTTPStatus.NOT_FOUND, "no such action")

    def _not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _stream(self) -> None:
        """MJPEG: each part is the latest frame; frames made while this viewer was busy sending
        are skipped. Ends when the run ends or the viewer goes away."""
        preview = self.preview
        if not preview._streams.acquire(blocking=False):
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"at most {MAX_STREAMS} viewers")
        hub = preview.session.hub
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self._common_headers()
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(f"--{BOUNDARY}\r\n".encode())
            seen, sent_at, repeated = 0, 0.0, True
            period = 1.0 / preview.view_fps
            while True:
                # at most one part per video frame period: a fast generator is sampled, not mirrored
                time.sleep(max(0.0, sent_at + period - time.monotonic()))
                seq = hub.wait(seen, REPEAT_AFTER_SECONDS if not repeated else STREAM_WAIT_SECONDS)
                if seq > seen:
                    seq, jpeg = hub.jpeg()
                    seen, repeated = seq, False
                elif not repeated:
                    # browsers show a part only once the next one begins: when the stream
                    # pauses or ends, send the last frame again so that it is shown
                    repeated = True
                elif hub.closed:
                    break
                else:
                    continue
                self.wfile.write(b"Content-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg
                                 + f"\r\n--{BOUNDARY}\r\n".encode())
                self.wfile.flush()
                sent_at = time.monotonic()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the viewer left; the stream goes on without it
        finally:
            preview._streams.release()
