"""A two-stage pipeline: the decoder works on block b in a second thread while the transformer
makes block b+1 (`--set runtime.overlap=true`).

Order of work in the main thread, per block b:

1. generate block b's latents (the decoder thread is decoding block b-1 meanwhile);
2. wait for block b-1's frames and hand them out (the consumer writes them);
3. call `on_block` for block b-1: the state then holds block b's latents as `pending` (made,
   not yet decoded) and the decoder's causal cache after block b-1, so a checkpoint taken here
   resumes exactly (the resumed stream decodes the pending block first);
4. give block b to the decoder thread.

Frames come out in order and are the same as without overlap (the same decoder, fed the same
blocks in the same order; the decoder thread is the only one touching it). A stop requested
during block b ends after block b-1's frames; an exception or Ctrl-C waits for the decoder
thread's current block (tens of milliseconds) before the stream closes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from .frames import Frame
from .state import StreamState


def overlapped_stream(pipe, timeline, s: StreamState, on_block: Callable[[StreamState], None] | None,
                      ) -> Iterator[Frame]:
    """`StreamPipeline.stream`'s loop with decoding in a second thread (see the module docstring)."""
    total = timeline.num_pixel_frames
    stats = pipe.stats

    pending = list(s.pending)  # made before a resume: decode these first
    s.pending = []
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="longvid-decode")
    inflight: tuple[int, int, Future] | None = None

    def hand_out(block: int, prompt_index: int, future: Future) -> Iterator[Frame]:
        images, seconds = future.result()
        stats.decode_s += seconds
        yield from pipe.hand_out(timeline, s, block, prompt_index, images)

    def source():
        while pending:
            yield pending.pop(0)
        yield from pipe.latents(timeline, s.seed, s)

    try:
        for block, lat, prompt_index in source():
            s.pending = [(block, lat, prompt_index)]
            if inflight is not None:
                yield from hand_out(*inflight)
                inflight = None
                if s.frames >= total:
                    return
                if on_block is not None:
                    on_block(s)
            s.pending = []
            inflight = (block, prompt_index, pool.submit(pipe.decode_block, lat))
        if inflight is not None:
            yield from hand_out(*inflight)
            inflight = None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
