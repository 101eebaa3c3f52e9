"""`longvid generate --preview / --preview-window / --interactive`: the glue between the command
and the live modules (`longvid.live`, `longvid.preview`, `longvid.window`).

`LiveRun.prepare` checks the options before any model is loaded; with no live option it is a
pass-through (`wrap` and `run` change nothing), so `generate` reads the same either way.
"""

from __future__ import annotations

import sys
import webbrowser
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from longvid.errors import OutputError
from longvid.frames import Frame
from longvid.live import STDIN_HELP, LiveSession, LiveTimeline, read_commands
from longvid.preview import DEFAULT_VIEW_FPS
from longvid.timeline import Timeline
from longvid.writers import ManifestWriter

REPLAY_SUFFIX = ".timeline.yaml"


@dataclass(frozen=True)
class LiveOptions:
    page: bool = False  # --preview
    window: bool = False  # --preview-window
    interactive: bool = False  # --interactive
    host: str = "127.0.0.1"
    port: int = 0
    open_browser: bool = False
    record: Optional[Path] = None  # --live-timeline
    view_fps: float = DEFAULT_VIEW_FPS  # --preview-fps

    @property
    def on(self) -> bool:
        return self.page or self.window or self.interactive


def _say(message: str) -> None:
    typer.echo(message, err=True)


class LiveRun:
    """One run's live session and its viewers; a context manager around the stream."""

    def __init__(self, options: LiveOptions, timeline: Timeline, session: Optional[LiveSession],
                 root: Any = None, server: Any = None) -> None:
        self.options = options
        self.session = session
        self.timeline = session.timeline if session is not None else timeline
        self._root = root  # the Tk root, opened early so a missing display fails fast
        self._server = server  # bound early too, so a busy port fails before the model loads

    @classmethod
    def prepare(cls, options: LiveOptions, timeline: Timeline, *, block_frames: int, video: Path,
                manifest: Path, seed: int, overwrite: bool, replay_hint: str = "") -> "LiveRun":
        """Check the live options (no model loaded yet); raises LongvidError for bad ones."""
        if not options.on:
            return cls(options, timeline, None)
        record = (options.record or video.with_name(video.stem + REPLAY_SUFFIX)).resolve()
        if record in (video, manifest):
            raise OutputError(f"the live timeline {record} would overwrite the video or manifest; "
                              "pass another --live-timeline PATH")
        if record.suffix.lower() not in (".yaml", ".yml"):
            raise OutputError(f"the live timeline {record} must be a .yaml file (it is replayed "
                              "with --timeline)")
        if not record.parent.is_dir():
            raise OutputError(f"cannot write the live timeline {record}: directory {record.parent} "
                              "does not exist")
        if record.exists() and not overwrite:
            raise OutputError(f"{record} already exists; pass --overwrite to replace it, or "
                              "choose another --live-timeline")
        root = None
        if options.window:
            from longvid.window import open_tk

            root = open_tk()
        session = LiveSession(LiveTimeline(timeline, block_frames), seed=seed, record_path=record,
                              replay_hint=replay_hint)
        server = None
        if options.page:
            from longvid.preview import PreviewServer

            server = PreviewServer(session, options.host, options.port, view_fps=options.view_fps)
        return cls(options, timeline, session, root, server)

    def __enter__(self) -> "LiveRun":
        if self.session is None:
            return self
        opts = self.options
        if self._server is not None:
            self._server.start()
            _say(f"preview: {self._server.url}")
            if opts.host not in ("127.0.0.1", "localhost", "::1"):
                _say(f"warning: the preview listens on {opts.host}: anyone who can reach this "
                     "machine and has the URL (with its token) can watch and steer the run")
            if opts.open_browser:
                webbrowser.open(self._server.url)
        if opts.interactive:
            _say(STDIN_HELP)
            read_commands(self.session, sys.stdin, _say)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.session is not None:
            session = self.session
            if session.stopped_at is not None:
                _say(f"stopped and saved at frame {session.stopped_at}")
            _say(f"live timeline (replays this video): {session.record_path}")

    @property
    def live_typing(self) -> bool:
        """Someone types on the terminal: no live progress bar over their input."""
        return self.options.interactive

    def wrap(self, frames: Iterable[Frame], writers: list) -> Iterable[Frame]:
        """The stream with the live controls applied (unchanged without a live option)."""
        if self.session is None:
            return frames
        manifest = next((w for w in writers if isinstance(w, ManifestWriter)), None)
        return self.session.wrap(frames, manifest)

    def run(self, work: Callable[[], Any]) -> Any:
        """Run the stream: here, or in a thread while the preview window owns the main thread."""
        if self._root is None:
            return work()
        from longvid.window import run_in_window

        return run_in_window(self.session, work, self._root)

