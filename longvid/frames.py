"""The unit of the output stream: one decoded video frame and where it came from.

The pipeline yields `Frame`s; every consumer (MP4 / PNG / manifest writers, live preview,
evaluator) reads the same iterator and knows nothing of how the frames were made.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One RGB frame of the stream.

    index: position in the video (0-based, pixel frames at `fps`).
    image: uint8 array (H, W, 3), RGB.
    prompt_index: index into the run's prompt list of the prompt in effect for this frame.
    prompt: that prompt's text.
    block: the latent block this frame was decoded from.
    """

    index: int
    image: np.ndarray
    prompt_index: int = 0
    prompt: str = ""
    block: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
