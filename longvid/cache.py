"""The KV cache: attention sinks, a local window, the frames in flight, and every index rule.

Layout. One fixed buffer per layer, written in place, never copied or grown:

    slots:  [ sink (S) | ring (W + C) ]

- sink: the first S latent frames of the stream, kept for its whole length (an attention sink).
  With `ema_alpha`, frames leaving the window are folded into the sink instead of dropped
  (Reward Forcing): S <- a*S + (1-a)*K_evicted, frame by frame, for K and V.
- ring: the last W committed frames plus room for C frames in flight (being denoised). Frame f
  (f >= S) lives in slot S + (f - S) mod (W + C). Frames in flight only ever overwrite slots of
  frames already evicted, so nothing moves when the window slides.

Keys are stored before RoPE. Each forward asks the cache for the frame positions of its keys and
queries and the model rotates at attention time, so positions never hit a table's end. Position
rule "absolute": a frame's position is its index in the stream. Rule "compact": sink frames are
re-placed just before the oldest window frame (Rolling Forcing / Reward Forcing), so the distance
between a query and the sink stays bounded however long the stream runs.

Visibility for a query frame q in a forward over frames `frames` (all > committed frames, or a
recache): committed sink frames, committed frames of the window, and frames of the forward in
blocks up to q's own block (block-causal). `dense_mask` states the same rule for a full-sequence
forward without a cache (the reference the cached engine must equal, and the training mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionPlan:
    """What one forward needs from the cache.

    frames: (F,) stream indices of the frames in the forward (sorted).
    write_slots: (F,) slot of each frame.
    num_read: keys are read from slots [0, num_read).
    query_positions: (F,) RoPE frame position of each query frame.
    key_positions: (num_read,) RoPE frame position of each key slot.
    mask: (F, num_read) bool, True where a query frame may attend to a key slot; None = all.
    commit: whether the forward's keys/values become part of the cache.
    """

    frames: torch.Tensor
    write_slots: torch.Tensor
    num_read: int
    query_positions: torch.Tensor
    key_positions: torch.Tensor
    mask: torch.Tensor | None
    commit: bool
    contiguous_write: tuple[int, int] | None = None


class KVCache:
    """Per-layer K/V for a stream: S sink frames + W window frames + C frames in flight.

    Memory is fixed at construction: num_layers * 2 * B * heads * (S + W + C) * tokens * head_dim,
    whatever the length of the video.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        tokens_per_frame: int,
        sink_frames: int,
        window_frames: int,
        max_chunk_frames: int,
        block_frames: int,
        batch_size: int = 1,
        ema_alpha: float | None = None,
        rope: str = "absolute",
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if rope not in ("absolute", "compact"):
            raise ValueError(f"rope must be 'absolute' or 'compact', got {rope!r}")
        if ema_alpha is not None and sink_frames == 0:
            raise ValueError("an EMA sink needs sink_frames > 0")
        self.num_layers = num_layers
        self.tokens_per_frame = tokens_per_frame
        self.sink = sink_frames
        self.window = window_frames
        self.ring = window_frames + max_chunk_frames
        self.block_frames = block_frames
        self.ema_alpha = ema_alpha
        self.rope = rope
        self.num_slots = self.sink + self.ring
        shape = (num_layers, batch_size, num_heads, self.num_slots, tokens_per_frame, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        # Which stream frame each slot holds (-1: empty). Index bookkeeping stays on the CPU.
        self.slot_frame = torch.full((self.num_slots,), -1, dtype=torch.long)
        self.committed = 0  # frames [0, committed) are final
        self.floor = 0  # non-sink frames below this were evicted (or dropped by a recache)
        self._max_slot_used = 0

    # ----------------------------------------------------------------------------- index maths
    def slot_of(self, frames: torch.Tensor) -> torch.Tensor:
        """(F,) stream frame indices -> (F,) slots."""
        ring_slot = self.sink + (frames - self.sink).remainder(self.ring)
        return torch.where(frames < self.sink, frames, ring_slot)

    def _window_start(self, committed: int) -> int:
        """First committed non-sink frame still in the window."""
        return max(self.sink, committed - self.window, self.floor)

    def visible_committed(self) -> torch.Tensor:
        """Stream indices of the committed frames a new forward can see, in order."""
        sink = torch.arange(min(self.sink, self.committed))
        start = self._window_start(self.committed)
        window = torch.arange(start, max(start, self.committed))
        return torch.cat([sink, window])

    def _positions(self, slot_frames: torch.Tensor) -> torch.Tensor:
        """RoPE positions of the frames held in slots (see the module docstring)."""
        pos = slot_frames.clone()
        # Read from the window's start, not from `committed`: a recache's `rewind` lowers
        # `committed` to the window it rewrites, and the sink must sit where generation put it.
        oldest = self._window_start(self.committed)
        if self.rope == "compact" and oldest > self.sink:
            is_sink = (slot_frames >= 0) & (slot_frames < self.sink)
            pos[is_sink] = oldest - self.sink + slot_frames[is_sink]
        return pos

    def plan(self, frames: torch.Tensor, commit: bool) -> AttentionPlan:
        """Plan a forward over `frames` (sorted stream indices). Frames must start at the first
        uncommitted frame, or be a recache set prepared by `rewind`."""
        frames = frames.to(torch.long).cpu()
        assert int((frames >= self.sink).sum()) <= self.ring, "more frames in flight than ring slots"
        slots = self.slot_of(frames)
        self.slot_frame[slots] = frames
        self._max_slot_used = max(self._max_slot_used, int(slots.max()) + 1)
        num_read = self._max_slot_used
        key_frames = self.slot_frame[:num_read]
        # Which slots each query may see: committed & visible, or in-forward & block-causal.
        visible = torch.zeros(num_read, dtype=torch.bool)
        vis = self.visible_committed()
        visible[self.slot_of(vis)] = True
        in_forward = torch.zeros(num_read, dtype=torch.bool)
        in_forward[slots] = True
        q_block = frames // self.block_frames
        k_block = key_frames // self.block_frames
        causal = in_forward[None, :] & (k_block[None, :] <= q_block[:, None])
        mask = (visible & ~in_forward)[None, :] | causal
        full = bool(mask.all())
        lo, hi = int(slots[0]), int(slots[-1]) + 1
        contiguous = (lo, hi) if hi - lo == len(slots) and bool((slots.diff() == 1).all()) else None
        return AttentionPlan(
            frames=frames,
            write_slots=slots,
            num_read=num_read,
            query_positions=self._positions(frames),
            key_positions=self._positions(key_frames),
            mask=None if full else mask,
            commit=commit,
            contiguous_write=contiguous,
        )

    # ----------------------------------------------------------------------- per-layer storage
    def update(self, layer: int, plan: AttentionPlan, k: torch.Tensor, v: torch.Tensor):
        """Write this forward's keys/values (B, H, F*T, D), before RoPE, into their slots and
        return views of all readable keys/values (B, H, num_read*T, D). No copy of the cache."""
        B, H, _, D = k.shape
        k = k.view(B, H, -1, self.tokens_per_frame, D)
        v = v.view(B, H, -1, self.tokens_per_frame, D)
        if plan.contiguous_write is not None:
            lo, hi = plan.contiguous_write
            self.k[layer, :, :, lo:hi] = k
            self.v[layer, :, :, lo:hi] = v
        else:
            self.k[layer, :, :, plan.write_slots] = k
            self.v[layer, :, :, plan.write_slots] = v
        n = plan.num_read
        return self.k[layer, :, :, :n].flatten(2, 3), self.v[layer, :, :, :n].flatten(2, 3)

    # ------------------------------------------------------------------------ stream progress
    def commit(self, plan: AttentionPlan) -> None:
        """After a committing forward: its frames become final; frames pushed out of the window
        are folded into the EMA sink (if enabled) before their slots can be reused."""
        assert plan.commit
        new_committed = max(self.committed, int(plan.frames.max()) + 1)
        if self.ema_alpha is not None:
            leaving = torch.arange(self._window_start(self.committed), self._window_start(new_committed))
            self._fold_into_sink(leaving)
        self.committed = new_committed

    def _fold_into_sink(self, frames: torch.Tensor) -> None:
        a = self.ema_alpha
        for f in frames.tolist():
            src, dst = int(self.slot_of(torch.tensor([f]))), f % self.sink
            for buf in (self.k, self.v):
                buf[:, :, :, dst].mul_(a).add_(buf[:, :, :, src], alpha=1 - a)

    def rewind(self, rewrite_sink: bool) -> torch.Tensor:
        """Prepare a KV-recache: forget the committed window (and the sink if `rewrite_sink`) so
        that a committing forward over the returned frames rewrites their keys/values. Returns
        the stream indices to re-encode (the caller supplies their clean latents)."""
        vis = self.visible_committed()
        if rewrite_sink:
            if self.ema_alpha is not None:
                raise ValueError("an EMA sink cannot be rewritten from latents: use sink 'keep'")
            redo = vis
            self.floor = self._window_start(self.committed)
            self.committed = 0
        else:
            redo = vis[vis >= self.sink]
            if len(redo):  # keep the committed sink visible, forget the window
                self.floor = self.committed = int(redo[0])
        return redo

    def state_dict(self) -> dict:
        """Everything the cache holds (copies), for saving a stream's state; see `load_state_dict`."""
        return {"k": self.k.clone(), "v": self.v.clone(), "slot_frame": self.slot_frame.clone(),
                "committed": self.committed, "floor": self.floor, "max_slot_used": self._max_slot_used}

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict` into this cache (same layout: layers, slots, tokens, heads)."""
        if tuple(state["k"].shape) != tuple(self.k.shape):
            raise ValueError(f"saved KV cache has shape {tuple(state['k'].shape)}, this cache "
                             f"{tuple(self.k.shape)}")
        self.k.copy_(state["k"])
        self.v.copy_(state["v"])
        self.slot_frame.copy_(state["slot_frame"])
        self.committed, self.floor = int(state["committed"]), int(state["floor"])
        self._max_slot_used = int(state["max_slot_used"])

    def memory_bytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()
        self.slot_frame.fill_(-1)
        self.committed = 0
        self.floor = 0
        self._max_slot_used = 0


def frame_mask(frames: torch.Tensor, block_frames: int, sink_frames: int, window_frames: int,
               in_flight_from: int | None = None) -> torch.Tensor:
    """(F, F) mask of a forward without a cache over the stream frames `frames` (sorted indices,
    any subset): True where frame `frames[q]` may attend to frame `frames[k]`.

    A committed frame q (in block b) saw, when its block was committed: its own block, the sink
    frames, and the `window_frames` frames before its block. Frames from `in_flight_from` on are
    being denoised together: they see the committed sink and window before `in_flight_from`, and
    frames in flight in blocks up to their own. Under this mask a single uncached forward equals
    cached generation (absolute positions, no EMA), and training sees what inference sees.
    """
    f = frames.to(torch.long)
    q_start = ((f // block_frames) * block_frames)[:, None]  # first frame of each query's block
    if in_flight_from is not None:
        q_start = torch.where(f[:, None] >= in_flight_from, torch.tensor(in_flight_from), q_start)
    k = f[None, :]
    q_block = (f // block_frames)[:, None]
    same_or_earlier_in_flight = (k >= q_start) & (k // block_frames <= q_block)
    sink = (k < sink_frames) & (k < q_start)
    window = (k < q_start) & (k >= torch.clamp(q_start - window_frames, min=sink_frames))
    return same_or_earlier_in_flight | sink | window


def dense_mask(num_frames: int, block_frames: int, sink_frames: int, window_frames: int,
               in_flight_from: int | None = None) -> torch.Tensor:
    """`frame_mask` over the whole stream [0, num_frames)."""
    return frame_mask(torch.arange(num_frames), block_frames, sink_frames, window_frames, in_flight_from)
