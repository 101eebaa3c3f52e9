"""The built-in model's causal video autoencoder: 4x in time, 8x8 in space, like Wan's VAE.

Wan's VAE takes seconds per block at 128x128 on a laptop CPU, so the built-in model has its own
light one: per-frame 2D convolutions, with time entering only through

- `Memory` blocks: a frame's features are mixed with the previous frame's (causal, one frame of
  state; streaming carries that one frame from block to block). The decoder's first block, at
  the latent rate, may see more past latent frames (`decoder_latent_span`, session 22), and
  then carries that many; and
- `TimePool` / `TimeGrow`: 4 consecutive frames <-> 1 latent frame, by channel stacking,

plus a colour path: each latent cell carries a linear map of its cell's mean colour, and the
decoder adds the latent's linear colour estimate (upsampled) under its output, so flat colours
are exact from the start and the convolutions only learn edges and motion.

SiLU activations throughout: with ReLU a first version lost whole colours (green, navy) to dead
units. Frame rule (Wan's): pixel frame p belongs to latent frame (p + 3) // 4. The encoder repeats the
first frame 3 times in front, so latent 0 holds frame 0 only; the decoder drops the 3 repeated
frames it makes for latent 0. A stream of T latent frames is 4T - 3 pixel frames.

All state lives in a `list` the caller passes in (one entry per `Memory` block), so a streaming
decoder is a loop over blocks with the same list, and decoding in blocks equals decoding at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


@dataclass(frozen=True)
class AutoencoderConfig:
    latent_channels: int = 8
    temporal_factor: int = 4
    encoder_channels: tuple[int, ...] = (16, 32, 48, 64)  # at 1, 1/2, 1/4, 1/8 resolution
    decoder_channels: tuple[int, ...] = (64, 48, 24, 12)  # at 1/8, 1/4, 1/2, 1 resolution
    decoder_latent_span: int = 1  # past latent frames the decoder's first Memory block sees
    # The last `shape_channels` latent channels hold, per world shape, each cell's coverage by
    # objects of that shape (scripts/train_autoencoder.py --shape-channels); 0: none
    shape_channels: int = 0
    # With shape channels: True if the other channels encode every shape as the circle on the
    # same path and the shape channels label the shape over the circle's coverage
    # (--shape-labels, session 32), so the decoder alone draws the outline
    shape_labels: bool = False
    # With shape channels: passes of a 3x3 binomial blur over the other (appearance) channels
    # before decoding, so the decoder takes an object's outline from the shape channels alone
    # and a generator's round blob in the appearance channels cannot round a square (session 29)
    appearance_blur: int = 0

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.encoder_channels) - 1)

    @property
    def appearance_channels(self) -> int:
        """The latent channels before the shape channels (all of them without shape channels)."""
        return self.latent_channels - self.shape_channels


def binomial_blur(x: Tensor) -> Tensor:
    """One pass of a 3x3 binomial blur ([1, 2, 1] / 4 each way, edges replicated) over each
    channel and frame of latents (B, C, F, h, w)."""
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (kernel[:, None] * kernel[None, :] / 16)[None, None]
    b, c, f = x.shape[:3]
    flat = rearrange(x, "b c f h w -> (b c f) 1 h w")
    out = F.conv2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), kernel)
    return rearrange(out, "(b c f) 1 h w -> b c f h w", b=b, c=c, f=f)


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2)


class Memory(nn.Module):
    """x_t + f([x_t, x_{t-1}, ..., x_{t-span}]): a residual block that sees the `span` previous
    frames (causal).

    Input (B, T, C, H, W) plus the state: the last frame of the previous call (B, C, H, W) for
    span 1, the last `span` frames (B, span, C, H, W) otherwise, or None at the start of a stream
    (the past is then zeros).
    """

    def __init__(self, c: int, span: int = 1) -> None:
        super().__init__()
        if span < 1:
            raise ValueError(f"a Memory block sees at least 1 past frame, got span={span}")
        self.span = span
        self.mix = _conv((span + 1) * c, c)
        self.out = _conv(c, c)

    def forward(self, x: Tensor, state: list, idx: int) -> Tensor:
        b, n = x.shape[:2]
        past = state[idx]
        if past is None:
            past = x.new_zeros((b, self.span, *x.shape[2:]))
        elif self.span == 1:
            past = past[:, None]
        seq = torch.cat([past, x], dim=1)  # (B, span + T, C, H, W)
        state[idx] = seq[:, -1] if self.span == 1 else seq[:, -self.span:]
        # frame t with its past, newest first: [x_t, x_{t-1}, ..., x_{t-span}] on channels
        h = torch.cat([seq[:, self.span - j : self.span - j + n] for j in range(self.span + 1)], dim=2)
        h = self.out(F.silu(self.mix(h.flatten(0, 1))))
        return F.silu(x + h.unflatten(0, (b, -1)))

    def widened(self, span: int) -> "Memory":
        """This block seeing `span` (>= its own) past frames, computing exactly what it computes
        now: the new frames' input weights start at zero."""
        new = Memory(self.out.in_channels, span).to(self.mix.weight)
        c = self.out.in_channels
        with torch.no_grad():
            new.mix.weight.zero_()
            new.mix.weight[:, : (self.span + 1) * c] = self.mix.weight
            new.mix.bias.copy_(self.mix.bias)
            new.out.load_state_dict(self.out.state_dict())
        return new


class TimePool(nn.Module):
    """(B, T*s, C, H, W) -> (B, T, C, H, W): s frames stacked on channels, 1x1 conv."""

    def __init__(self, c: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.proj = nn.Conv2d(c * stride, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        h = rearrange(x, "b (t s) c h w -> (b t) (s c) h w", s=self.stride)
        return self.proj(h).unflatten(0, (b, -1))


class TimeGrow(nn.Module):
    """(B, T, C, H, W) -> (B, T*s, C, H, W): 1x1 conv to s*C channels, unstacked in time."""

    def __init__(self, c: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.proj = nn.Conv2d(c, c * stride, 1)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        h = self.proj(x.flatten(0, 1))
        return rearrange(h, "(b t) (s c) h w -> b (t s) c h w", b=b, s=self.stride)


def _per_frame(layer: nn.Module, x: Tensor) -> Tensor:
    return layer(x.flatten(0, 1)).unflatten(0, (x.shape[0], -1))


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        ch = cfg.encoder_channels
        n_time = cfg.temporal_factor.bit_length() - 1  # halvings of time (2 for a factor of 4)
        self.inp = _conv(3, ch[0])
        self.memory = nn.ModuleList([Memory(c) for c in ch])
        self.down = nn.ModuleList([_conv(a, b, stride=2) for a, b in zip(ch, ch[1:])])
        # time is pooled by 2 after the first `n_time` downsamplings
        self.pool = nn.ModuleList([TimePool(c, 2) for c in ch[1 : 1 + n_time]])
        self.out = _conv(ch[-1], cfg.latent_channels)
        # colour path: each latent cell also gets a linear map of its cell's mean colour
        self.factor, self.tf = cfg.spatial_factor, cfg.temporal_factor
        self.colour = nn.Conv2d(3, cfg.latent_channels, 1)

    def forward(self, x: Tensor, state: list) -> Tensor:
        """(B, T*4, 3, H, W) in [-1, 1] -> (B, T, C_lat, H/8, W/8)."""
        h = F.silu(_per_frame(self.inp, x))
        for i, mem in enumerate(self.memory):
            h = mem(h, state, i)
            if i < len(self.down):
                h = F.silu(_per_frame(self.down[i], h))
                if i < len(self.pool):
                    h = self.pool[i](h)
        last = x[:, self.tf - 1 :: self.tf]  # the newest frame of each group of 4
        mean = _per_frame(lambda f: F.avg_pool2d(f, self.factor), last)
        return _per_frame(self.out, h) + _per_frame(self.colour, mean)


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        ch = cfg.decoder_channels
        n_time = cfg.temporal_factor.bit_length() - 1
        self.inp = _conv(cfg.latent_channels, ch[0])
        spans = [cfg.decoder_latent_span] + [1] * (len(ch) - 2)
        self.memory = nn.ModuleList([Memory(c, span) for c, span in zip(ch[:-1], spans)])
        self.grow = nn.ModuleList([TimeGrow(c, 2) for c in ch[:n_time]])
        self.up = nn.ModuleList([_conv(a, b) for a, b in zip(ch, ch[1:])])
        self.out = _conv(ch[-1], 3)
        # colour path: the latent's own linear colour estimate, upsampled, under the conv output
        self.factor, self.tf = 2 ** (len(ch) - 1), cfg.temporal_factor
        self.colour = nn.Conv2d(cfg.latent_channels, 3, 1)

    def forward(self, z: Tensor, state: list) -> Tensor:
        """(B, T, C_lat, h, w) -> (B, T*4, 3, 8h, 8w), before dropping the first frames."""
        base = _per_frame(lambda f: F.interpolate(self.colour(f), scale_factor=float(self.factor),
                                                  mode="bilinear", align_corners=False), z)
        base = base.repeat_interleave(self.tf, dim=1)  # (B, T*4, 3, H, W)
        h = F.silu(_per_frame(self.inp, z))
        for i, mem in enumerate(self.memory):
            h = mem(h, state, i)
            if i < len(self.grow):
                h = self.grow[i](h)
            h = F.interpolate(h.flatten(0, 1), scale_factor=2.0, mode="nearest")
            h = F.silu(self.up[i](h)).unflatten(0, (z.shape[0], -1))
        return torch.tanh(_per_frame(self.out, h) + base)

    def widened(self, channels: tuple[int, ...]) -> "Decoder":
        """This decoder with wider layers (`channels`, each >= its own width), computing exactly
        what it computes now (Net2Net-style): every old weight is kept, the new channels' inputs
        start random and their outgoing weights at zero, so training can put the room to use."""
        old_ch = tuple(conv.out_channels for conv in [self.inp, *self.up])
        if len(channels) != len(old_ch) or any(n < o for n, o in zip(channels, old_ch)):
            raise ValueError(f"a widened decoder needs {len(old_ch)} widths, each at least the current "
                             f"{list(old_ch)}; got {list(channels)}")
        cfg = AutoencoderConfig(latent_channels=self.inp.in_channels, temporal_factor=self.tf,
                                decoder_channels=tuple(channels), decoder_latent_span=self.memory[0].span)
        new = Decoder(cfg).to(self.inp.weight)

        def keep(dst: nn.Conv2d, src: nn.Conv2d, rows: Tensor, cols: Tensor | None) -> None:
            """dst[rows, cols] = src (input columns outside `cols` zeroed for the old rows)."""
            if cols is not None:
                dst.weight[rows] = 0.0
                dst.weight[rows[:, None], cols] = src.weight
            else:
                dst.weight[rows] = src.weight
            dst.bias[rows] = src.bias

        def first(c_new: int, c_old: int, slots: int = 1) -> Tensor:
            """Indices of the old channels in a layout of `slots` stacked groups of c_new."""
            return torch.cat([torch.arange(c_old) + s * c_new for s in range(slots)])

        with torch.no_grad():
            keep(new.inp, self.inp, first(channels[0], old_ch[0]), None)
            for i, (mem, nmem) in enumerate(zip(self.memory, new.memory)):
                c, n = old_ch[i], channels[i]
                keep(nmem.mix, mem.mix, first(n, c), first(n, c, mem.span + 1))
                keep(nmem.out, mem.out, first(n, c), first(n, c))
            for i, (grow, ngrow) in enumerate(zip(self.grow, new.grow)):
                c, n = old_ch[i], channels[i]
                keep(ngrow.proj, grow.proj, first(n, c, grow.stride), first(n, c))
            for i, (up, nup) in enumerate(zip(self.up, new.up)):
                keep(nup, up, first(channels[i + 1], old_ch[i + 1]), first(channels[i], old_ch[i]))
            keep(new.out, self.out, torch.arange(3), first(channels[-1], old_ch[-1]))
            new.colour.load_state_dict(self.colour.state_dict())
        return new


class CausalAutoencoder(nn.Module):
    """Encoder + decoder, with latent normalisation (per-channel mean/std) as buffers."""

    def __init__(self, cfg: AutoencoderConfig = AutoencoderConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.register_buffer("latents_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latents_std", torch.ones(cfg.latent_channels))

    @property
    def temporal_factor(self) -> int:
        return self.cfg.temporal_factor

    @property
    def spatial_factor(self) -> int:
        return self.cfg.spatial_factor

    def new_state(self, part: str) -> list:
        return [None] * len(getattr(self, part).memory)

    def _norm(self, z: Tensor) -> Tensor:
        return (z - self.latents_mean[:, None, None]) / self.latents_std[:, None, None]

    def _denorm(self, z: Tensor) -> Tensor:
        return z * self.latents_std[:, None, None] + self.latents_mean[:, None, None]

    def encode(self, video: Tensor, state: list | None = None, first: bool = True) -> Tensor:
        """(B, 3, F, H, W) in [-1, 1], F = 4T-3 when `first` (else 4T) -> normalised latents
        (B, C, T, H/8, W/8)."""
        x = rearrange(video, "b c f h w -> b f c h w")
        if first:
            pad = self.temporal_factor - 1
            x = torch.cat([x[:, :1].expand(-1, pad, -1, -1, -1), x], dim=1)
        state = state if state is not None else self.new_state("encoder")
        z = self.encoder(x, state)
        return rearrange(self._norm(z), "b t c h w -> b c t h w")

    def _low_pass(self, latents: Tensor) -> Tensor:
        """`cfg.appearance_blur` passes of a 3x3 binomial blur (edges replicated, per channel and
        frame) over the appearance channels of normalised latents (B, C, T, h, w); shape channels
        pass through. Spatial only, so streaming decode stays causal."""
        passes, c = self.cfg.appearance_blur, self.cfg.appearance_channels
        if not passes:
            return latents
        x = latents[:, :c]
        for _ in range(passes):
            x = binomial_blur(x)
        return torch.cat([x, latents[:, c:]], dim=1)

    def decode(self, latents: Tensor, state: list | None = None, first: bool = True) -> Tensor:
        """Normalised latents (B, C, T, h, w) -> video (B, 3, F, H, W) in [-1, 1]; F = 4T-3 if
        `first` (the stream's start) else 4T. `state` carries the causal memory across calls."""
        z = self._denorm(rearrange(self._low_pass(latents), "b c t h w -> b t c h w"))
        state = state if state is not None else self.new_state("decoder")
        x = self.decoder(z, state)
        if first:
            x = x[:, self.temporal_factor - 1 :]
        return rearrange(x, "b f c h w -> b c f h w")
