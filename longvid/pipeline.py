"""The streaming loop: prompt timeline in, frames out, one block at a time.

For every engine step of the schedule (see `schedule.py`):

1. pick the prompt of the newest block in flight; if it changed, switch: KV-recache (re-encode
   the cached window's clean latents at t = 0 under the new prompt) or a plain switch;
2. frames entering the step start as pure noise;
3. one forward of the causal transformer over the frames in flight, each at its own timestep,
   attending to the KV cache -> flow -> x0;
4. re-noise each frame's x0 to its next timestep, or keep it as final if it is finished;
5. decode each finished block at once (the decoder carries its causal cache) and yield frames;
6. on a commit step, one forward at t = 0 writes the block's clean keys/values into the cache.

All noise is a pure function of (seed, frame, step of that frame), so a run is reproducible
frame for frame whatever the schedule's layout or where it was resumed. Everything else the loop
carries from step to step lives in one `StreamState` (cache, frames in flight, clean latents,
prompt, position in the schedule): saved between two blocks (`snapshot`, `state.save_state`) and
passed back to `stream`, it continues the video exactly (see `resume.py`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice

import numpy as np
import torch

from .cache import KVCache
from .errors import ConfigError
from .frames import Frame
from .model import TextContext
from .schedule import FlowMatch, Schedule, make_schedule
from .state import StreamState
from .vae import to_uint8

_MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """A stable 63-bit seed from integers (splitmix64 over the sequence)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


def frame_noise(seed: int, frame: int, index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Gaussian noise for one latent frame's `index`-th use (0 = initial noise), on the CPU."""
    g = torch.Generator().manual_seed(_mix(seed, frame, index))
    return torch.randn(shape, generator=g)


@dataclass
class StreamStats:
    """Per-stage wall-clock seconds and counts of one stream."""

    text_s: float = 0.0
    generator_s: float = 0.0
    recache_s: float = 0.0
    decode_s: float = 0.0
    forwards: int = 0
    recaches: int = 0
    blocks: int = 0
    frames: int = 0
    block_seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "text_s": round(self.text_s, 4),
            "generator_s": round(self.generator_s, 4),
            "recache_s": round(self.recache_s, 4),
            "decode_s": round(self.decode_s, 4),
            "forwards": self.forwards,
            "recaches": self.recaches,
            "blocks": self.blocks,
            "frames": self.frames,
        }


class StreamPipeline:
    """Ties text encoder, causal transformer, KV cache, schedule and streaming decoder.

    model: a `CausalWanTransformer`; text_encoder: `encode(list[str]) -> (B, L, text_dim)`;
    decoder: a `StreamingDecoder`; config: a `Config` (its cache / schedule / switch / video).
    """

    def __init__(self, model, text_encoder, decoder, config) -> None:
        self.model = model
        self.text_encoder = text_encoder
        self.decoder = decoder
        self.config = config
        sc = config.schedule
        self.schedule: Schedule = make_schedule(
            sc.kind, list(sc.timesteps), sc.block_frames, sc.shift, sc.ar_step, sc.num_train_timesteps
        )
        self.flow = FlowMatch(sc.num_train_timesteps)
        vc = config.video
        self.latent_hw = (vc.height // config.vae.spatial_factor, vc.width // config.vae.spatial_factor)
        self.latent_channels = config.model.in_channels
        self.stats = StreamStats()
        self._contexts: OrderedDict[tuple, TextContext] = OrderedDict()
        if config.switch.sink == "rewrite" and config.cache.ema_alpha is not None:
            raise ConfigError("switch.sink 'rewrite' cannot rebuild an EMA sink (cache.ema_alpha is set): "
                              "use --set switch.sink=keep")

    # -------------------------------------------------------------------------- components
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.compute_dtype

    def new_cache(self, batch_size: int = 1) -> KVCache:
        cfg, m = self.config, self.model.config
        return KVCache(
            num_layers=m.num_layers,
            num_heads=m.num_attention_heads,
            head_dim=m.attention_head_dim,
            tokens_per_frame=self.model.tokens_per_frame(*self.latent_hw),
            sink_frames=cfg.cache.sink_frames,
            window_frames=cfg.cache.window_frames,
            max_chunk_frames=self.schedule.max_chunk_frames,
            block_frames=self.schedule.block_frames,
            batch_size=batch_size,
            ema_alpha=cfg.cache.ema_alpha,
            rope=cfg.cache.rope,
            dtype=self.dtype,
            device=self.device,
        )

    def _embed(self, text: str) -> torch.Tensor:
        t0 = time.perf_counter()
        emb = self.text_encoder.encode([text])
        self.stats.text_s += time.perf_counter() - t0
        return emb

    def context(self, prompts: tuple[str, ...], weight: float = 1.0) -> TextContext:
        """Cross-attention context of a prompt, or of a blend of two (weight on the second)."""
        key = (prompts, round(weight, 6))
        if key not in self._contexts:
            if len(prompts) == 1 or weight >= 1.0:
                emb = self._embed(prompts[-1])
            else:
                emb = torch.lerp(self._embed(prompts[0]), self._embed(prompts[1]), weight)
            t0 = time.perf_counter()
            with torch.no_grad():
                self._contexts[key] = self.model.text_context(emb)
            self.stats.text_s += time.perf_counter() - t0
            while len(self._contexts) > 16:
                self._contexts.popitem(last=False)
        self._contexts.move_to_end(key)
        return self._contexts[key]

    def _block_context(self, timeline, block: int) -> tuple[tuple, TextContext]:
        """The prompt context for a block, blending over `switch.blend_blocks` after a switch."""
        k, blend = self.schedule.block_frames, self.config.switch.blend_blocks
        idx = timeline.prompt_index_at(block * k)
        text = timeline.prompts[idx].text
        if blend and idx > 0:
            first = -(-timeline.prompts[idx].start_frame // k)  # first block under this prompt
            j = block - first
            prev = timeline.prompts[timeline.prompt_index_at(max(first - 1, 0) * k)].text
            if 0 <= j < blend and prev != text:
                w = (j + 1) / (blend + 1)
                return ((prev, text), w), self.context((prev, text), w)
        return ((text,), 1.0), self.context((text,))

    # --------------------------------------------------------------------------------- loop
    def _forward(self, x, t, ctx, cache, frames, commit):
        plan = cache.plan(frames, commit=commit)
        t0 = time.perf_counter()
        with torch.no_grad():
            flow = self.model(x.to(self.device, self.dtype), t.to(self.device), ctx, cache=cache, plan=plan)
        self.stats.forwards += 1
        if commit:
            cache.commit(plan)
        return flow.float(), time.perf_counter() - t0

    def _guided(self, flow, xt, t, cache, frames) -> torch.Tensor:
        """Classifier-free guidance: the unconditional flow from a second forward over the same
        frames in flight (it rewrites their uncommitted keys/values, which the next forward writes
        anew), then uncond + guidance * (cond - uncond)."""
        sc = self.config.schedule
        uncond, dt = self._forward(xt, t, self.context((sc.negative_prompt,)), cache, frames, commit=False)
        self.stats.generator_s += dt
        return torch.lerp(uncond, flow, sc.guidance)

    def _recache(self, cache: KVCache, clean: dict[int, torch.Tensor], ctx: TextContext) -> None:
        """KV-recache (LongLive): rewrite the cached frames' keys/values under the new prompt."""
        redo = cache.rewind(rewrite_sink=self.config.switch.sink == "rewrite")
        if len(redo) == 0:
            return
        x = torch.stack([clean[int(f)] for f in redo], dim=1)[None]  # (1, C, F, h, w)
        _, dt = self._forward(x, torch.zeros(len(redo)), ctx, cache, redo, commit=True)
        self.stats.recache_s += dt
        self.stats.recaches += 1

    def new_state(self, seed: int = 0) -> StreamState:
        """The state of a stream that has not started: empty cache, nothing in flight."""
        return StreamState(seed=seed, cache=self.new_cache())

    def snapshot(self, state: StreamState) -> StreamState:
        """A copy of `state` (taken between blocks) with the decoder's causal cache, for
        `state.save_state`. The live stream is not touched."""
        cache = self.new_cache()
        cache.load_state_dict(state.cache.state_dict())
        return replace(state, cache=cache, x={f: t.clone() for f, t in state.x.items()},
                       clean={f: t.clone() for f, t in state.clean.items()},
                       decoder=self.decoder.get_state(),
                       pending=[(b, lat.clone(), p) for b, lat, p in state.pending])

    def latents(self, timeline, seed: int = 0, state: StreamState | None = None,
                ) -> Iterator[tuple[int, torch.Tensor, int]]:
        """Yield (block index, clean latents (1, C, k, h, w), prompt index) as blocks finish.

        `state` (see `StreamState`): the loop's state, updated in place; pass a loaded one to
        continue a stream where it was saved (its seed wins over `seed`)."""
        s = state if state is not None else self.new_state(seed)
        sched, k = self.schedule, self.schedule.block_frames
        shape = (self.latent_channels, *self.latent_hw)
        ctx = None if s.prompt_key is None else self.context(*s.prompt_key)
        block_t0 = time.perf_counter()
        for step in islice(sched.steps(timeline.num_latent_frames), s.step, None):
            s.step += 1
            frames = torch.arange(step.start, step.stop)
            if step.commit:
                xc = torch.stack([s.clean[f] for f in step.frames], dim=1)[None]
                _, dt = self._forward(xc, step.t, ctx, s.cache, frames, commit=True)
                self.stats.generator_s += dt
                keep = set(s.cache.visible_committed().tolist()) | set(s.x)
                for f in [f for f in s.clean if f not in keep]:
                    del s.clean[f]
                continue

            # 1. the prompt of the newest block in flight; switch if it changed
            key, new_ctx = self._block_context(timeline, (step.stop - 1) // k)
            if key != s.prompt_key:
                if ctx is not None and self.config.switch.mode == "recache":
                    self._recache(s.cache, s.clean, new_ctx)
                s.prompt_key, ctx = key, new_ctx

            # 2. frames entering start as pure noise
            for f, level in zip(step.frames, step.denoise_index.tolist()):
                if level == 0:
                    s.x[f] = frame_noise(s.seed, f, 0, shape)

            # 3. one forward over the frames in flight -> x0
            xt = torch.stack([s.x[f] for f in step.frames], dim=1)[None]  # (1, C, F, h, w)
            flow, dt = self._forward(xt, step.t, ctx, s.cache, frames, commit=False)
            self.stats.generator_s += dt
            if self.config.schedule.guidance != 1.0:  # classifier-free guidance, same cache
                flow = self._guided(flow, xt, step.t, s.cache, frames)
            x0 = self.flow.to_x0(xt, flow, step.t)
            predicted = self.flow.to_noise(xt, flow, step.t) if self.config.schedule.renoise == "predicted" else None

            # 4. re-noise to the next level (fresh or predicted noise), or keep as final
            for i, f in enumerate(step.frames):
                t_next = step.t_next[i : i + 1]
                if float(t_next) > 0:
                    if predicted is not None:
                        noise = predicted[:, :, i : i + 1]
                    else:
                        noise = frame_noise(s.seed, f, int(step.denoise_index[i]) + 1, shape)[None, :, None]
                    s.x[f] = self.flow.add_noise(x0[:, :, i : i + 1], noise, t_next)[0, :, 0]
                else:
                    s.clean[f] = x0[0, :, i]
                    del s.x[f]

            # 5. hand over each finished block
            done = step.finished
            if len(done):
                block = done.start // k
                self.stats.blocks += 1
                self.stats.block_seconds.append(time.perf_counter() - block_t0)
                block_t0 = time.perf_counter()
                lat = torch.stack([s.clean[f] for f in done], dim=1)[None]
                yield block, lat, timeline.prompt_index_at(block * k)

    def blocks(self, timeline, state: StreamState) -> Iterator[tuple[int, torch.Tensor, int]]:
        """`latents`, after the state's pending blocks (generated, not yet handed out)."""
        while state.pending:
            yield state.pending.pop(0)
        yield from self.latents(timeline, state.seed, state)

    def stream(self, timeline, seed: int = 0, state: StreamState | None = None,
               on_block: Callable[[StreamState], None] | None = None) -> Iterator[Frame]:
        """Yield the video's frames as they are made. `timeline` gives prompts and length.

        state: continue from a saved `StreamState` (see `latents`). on_block: called with the
        live state after the consumer has taken each block's last frame (the loop is between
        blocks: the moment to save the state, or to stop cleanly by raising)."""
        self.stats = StreamStats()
        self._contexts.clear()
        self.decoder.reset()
        s = state if state is not None else self.new_state(seed)
        if s.decoder is not None:
            self.decoder.set_state(s.decoder)
            s.decoder = None
        total = timeline.num_pixel_frames
        if self.config.runtime.overlap:  # decode in a second thread, one block behind
            from .stages import overlapped_stream

            yield from overlapped_stream(self, timeline, s, on_block)
            return
        for block, lat, prompt_index in self.blocks(timeline, s):
            images, seconds = self.decode_block(lat)
            self.stats.decode_s += seconds
            if not (yield from self.hand_out(timeline, s, block, prompt_index, images)):
                return
            if on_block is not None and s.frames < total:
                on_block(s)

    def decode_block(self, lat: torch.Tensor) -> tuple[np.ndarray, float]:
        """One block's latents -> its uint8 frames, and the seconds the decode took (the decoder
        carries its causal cache from block to block, so blocks go in order, one at a time)."""
        t0 = time.perf_counter()
        with torch.no_grad():
            images = to_uint8(self.decoder.decode(lat))
        return images, time.perf_counter() - t0

    def hand_out(self, timeline, s: StreamState, block: int, prompt_index: int,
                 images: np.ndarray) -> Generator[Frame, None, bool]:
        """Yield a decoded block's frames, counting them in the state. Returns False if the video
        ended inside the block (its last frames fall past `timeline.num_pixel_frames`)."""
        prompt = timeline.prompts[prompt_index].text
        for img in images:
            if s.frames >= timeline.num_pixel_frames:
                return False
            yield Frame(index=s.frames, image=img, prompt_index=prompt_index, prompt=prompt, block=block)
            s.frames += 1
            self.stats.frames += 1
        s.blocks += 1
        return True
