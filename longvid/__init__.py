"""longvid: stream long AI-generated video, chunk by chunk, while the prompt changes.

The streaming API (`stream`, `load_pipeline`) is imported on first use: it brings in torch and
diffusers, which take seconds, and the light modules (config, evaluate, timeline, writers) should
not wait for them.
"""

from .config import DEFAULT_CONFIG
from .frames import Frame
from .timeline import make_timeline

__all__ = ["DEFAULT_CONFIG", "Frame", "load_pipeline", "make_timeline", "stream"]
__version__ = "0.1.0"

_API = ("load_pipeline", "stream")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'longvid' has no attribute {name!r}")
