"""longvid: stream long AI-generated video, chunk by chunk, while the prompt changes."""

from .api import DEFAULT_CONFIG, load_pipeline, make_timeline, stream
from .frames import Frame

__all__ = ["DEFAULT_CONFIG", "Frame", "load_pipeline", "make_timeline", "stream"]
__version__ = "0.1.0"
