"""Streaming video decoders: finished latent blocks in, pixel frames out.

The generator finishes latent frames a block at a time; each block is decoded at once, with the
decoder's causal cache carried from block to block, so frames stream out as they are made and the
result is the same as decoding the whole latent video in one call.

Frame counting (temporal factor T, 4 for Wan): the first latent frame of a stream decodes to one
pixel frame and every later latent frame to T, so a stream's first block of F latent frames gives
T*F - (T-1) frames and every later block T*F.

- `StreamingDecoder`: the interface (reset / decode) and the bookkeeping every decoder shares.
- `WanStreamingDecoder`: a diffusers `AutoencoderKLWan`, driven latent frame by latent frame;
  bit-identical to `vae.decode` of the whole video.
- `AutoencoderStreamingDecoder`: the built-in model's light causal autoencoder.
- `LatentPreviewDecoder`: a fixed linear latent -> RGB map; a cheap preview and a test double.
- `to_uint8`: decoder output -> uint8 RGB frames for the writers.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from einops import einsum, rearrange, repeat
from torch import Tensor

from longvid.autoencoder import CausalAutoencoder

if TYPE_CHECKING:
    from diffusers import AutoencoderKLWan

RGB_CHANNELS = 3


class StreamingDecoder(ABC):
    """Decodes one stream of latent blocks; `reset()` starts the next stream.

    Subclasses implement `_decode_block` (one block, knowing whether it opens the stream) and
    `_reset_state`; this class checks shapes, tracks the start of the stream, enforces the frame
    count rule and runs everything under `torch.inference_mode`.
    """

    temporal_factor: int  # pixel frames per latent frame (after the first)
    spatial_factor: int  # pixels per latent cell, along each of H and W
    latent_channels: int  # C of the latents the generator makes

    def __init__(self, *, temporal_factor: int, spatial_factor: int, latent_channels: int) -> None:
        self.temporal_factor = int(temporal_factor)
        self.spatial_factor = int(spatial_factor)
        self.latent_channels = int(latent_channels)
        self._stream_shape: tuple[int, int, int] | None = None  # (B, h, w) of the open stream

    # -- the interface ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new stream: forget the causal cache of the previous one."""
        self._stream_shape = None
        self._reset_state()

    def decode(self, latents: Tensor) -> Tensor:
        """Decode the next block of the stream.

        latents: (B, C, F, h, w), normalised latents as the generator makes them.
        Returns (B, 3, F', h*s, w*s) in [-1, 1], F' = T*F - (T-1) on the stream's first block and
        T*F afterwards. If this raises mid-block the cache is undefined: call `reset()`.
        """
        self._check_block(latents)
        first = self._stream_shape is None
        with torch.inference_mode():
            video = self._decode_block(latents, first=first)
        self._stream_shape = (latents.shape[0], latents.shape[3], latents.shape[4])
        assert video.shape[2] == self.num_pixel_frames(latents.shape[2], first=first), (
            f"{type(self).__name__} broke the frame count rule: {latents.shape[2]} latent frames "
            f"(first={first}) -> {video.shape[2]} pixel frames"
        )
        return video

    def num_pixel_frames(self, num_latent_frames: int, first: bool = True) -> int:
        """Pixel frames decoded from `num_latent_frames`; `first`: they open the stream."""
        if num_latent_frames <= 0:
            return 0
        return self.temporal_factor * num_latent_frames - (self.temporal_factor - 1 if first else 0)

    def get_state(self) -> dict:
        """A copy of the open stream's causal cache, for saving a stream (see `set_state`)."""
        return {"stream_shape": None if self._stream_shape is None else list(self._stream_shape),
                "cache": _clone(self._get_cache())}

    def set_state(self, state: dict) -> None:
        """Continue a stream from `get_state()`: the next block decodes as it would have."""
        shape = state["stream_shape"]
        self._stream_shape = None if shape is None else tuple(int(v) for v in shape)
        self._set_cache(_clone(state["cache"]))

    @property
    def in_stream(self) -> bool:
        """True once a block has been decoded since the last `reset()`."""
        return self._stream_shape is not None

    # -- for subclasses -----------------------------------------------------------------------------

    @abstractmethod
    def _decode_block(self, latents: Tensor, first: bool) -> Tensor:
        """(B, C, F, h, w) -> (B, 3, F', H, W); `first`: this block opens the stream."""

    @abstractmethod
    def _reset_state(self) -> None:
        """Drop whatever the previous stream left behind."""

    def _get_cache(self) -> Any:
        """The causal cache (tensors, None, strings in lists/dicts); stateless decoders: None."""
        return None

    def _set_cache(self, cache: Any) -> None:
        pass

    def _check_block(self, latents: Tensor) -> None:
        if latents.ndim != 5:
            raise ValueError(f"latents must be (B, C, F, h, w); got shape {tuple(latents.shape)}")
        b, c, f, h, w = latents.shape
        if c != self.latent_channels:
            raise ValueError(f"latents have {c} channels; this decoder expects {self.latent_channels}")
        if f == 0:
            raise ValueError("latents hold no frames: a block must have at least one latent frame")
        if self._stream_shape is not None and self._stream_shape != (b, h, w):
            raise ValueError(
                f"block shape (B, h, w) = {(b, h, w)} differs from the stream's {self._stream_shape}; "
                "call reset() before decoding a new stream"
            )


# ---------------------------------------------------------------------------------------------------
# diffusers internals. `AutoencoderKLWan.decode()` clears its causal cache on every call, so to
# stream we drive its decoder ourselves, exactly as its private `_decode` does. Everything that
# touches private diffusers API lives in this block (written against diffusers 0.42):
#   - `vae.post_quant_conv`, `vae.decoder(x, feat_cache=, feat_idx=, first_chunk=)`;
#   - the cache: a list with one slot per `WanCausalConv3d` in the decoder, None when fresh
#     (the temporal upsamplers mark their first frame with the string "Rep"); `feat_idx` is a
#     one-element list the decoder advances as it walks its convolutions;
#   - `unpatchify` for VAEs with `patch_size` (Wan 2.2).
# We keep our own cache list instead of `vae._feat_map`, so `vae.decode()` or a second decoder on the
# same VAE cannot clobber an open stream.


def _wan_module() -> Any:
    from diffusers.models.autoencoders import autoencoder_kl_wan

    return autoencoder_kl_wan


def _check_wan_internals(vae: Any) -> None:
    """Fail at construction, naming the diffusers version, if the internals we drive moved."""
    import diffusers

    problems = []
    wan = _wan_module()
    for name in ("WanCausalConv3d", "unpatchify"):
        if not hasattr(wan, name):
            problems.append(f"diffusers' autoencoder_kl_wan has no `{name}`")
    for name in ("config", "decoder", "post_quant_conv"):
        if not hasattr(vae, name):
            problems.append(f"the VAE has no `{name}`")
    if hasattr(vae, "decoder"):
        params = inspect.signature(vae.decoder.forward).parameters
        for name in ("feat_cache", "feat_idx", "first_chunk"):
            if name not in params:
                problems.append(f"`vae.decoder.forward` takes no `{name}`")
    if hasattr(vae, "config"):
        for name in ("z_dim", "dim_mult", "temperal_downsample", "latents_mean", "latents_std"):
            if name not in vae.config:
                problems.append(f"the VAE config has no `{name}`")
    if problems:
        raise TypeError(
            f"WanStreamingDecoder needs a diffusers AutoencoderKLWan and drives its causal cache "
            f"through private API that this diffusers version ({diffusers.__version__}) lacks: "
            + "; ".join(problems)
            + ". It was written against diffusers 0.42; install a compatible version."
        )


def _wan_new_cache(vae: AutoencoderKLWan) -> list[Any]:
    """A fresh causal cache: one empty slot per causal conv of the decoder."""
    conv = _wan_module().WanCausalConv3d
    return [None] * sum(isinstance(m, conv) for m in vae.decoder.modules())


def _wan_decode_frames(vae: AutoencoderKLWan, z: Tensor, cache: list[Any], first: bool) -> Tensor:
    """Decode (B, C, F, h, w) VAE latents one latent frame at a time, as `_decode` does.

    Frame by frame (not the block at once) because that is what makes the result bit-identical:
    the same convolutions see the same shapes. Only the stream's very first frame is a
    `first_chunk` (Wan 2.2's residual upsamplers trim their output on it).
    """
    x = vae.post_quant_conv(z)  # 1x1x1 conv: per frame, so per block is exact
    frames = []
    for i in range(x.shape[2]):
        frame = vae.decoder(
            x[:, :, i : i + 1], feat_cache=cache, feat_idx=[0], first_chunk=first and i == 0
        )
        frames.append(frame)
    out = torch.cat(frames, dim=2)
    if vae.config.get("patch_size") is not None:
        out = _wan_module().unpatchify(out, patch_size=vae.config.patch_size)
    return out.clamp(-1.0, 1.0)


# ---------------------------------------------------------------------------------------------------


class WanStreamingDecoder(StreamingDecoder):
    """Streams a diffusers `AutoencoderKLWan` (Wan 2.1; Wan 2.2's patchified VAE too).

    Latents are de-normalised exactly as diffusers' `WanPipeline` does, then decoded with the causal
    cache carried across blocks: any split of a latent video into blocks gives output bit-identical
    to `vae.decode(denormalize(z)).sample` of the whole video. Spatial tiling (`enable_tiling`) and
    diffusers' offload hooks on `decode` are not used; move the VAE to its device yourself.
    """

    def __init__(self, vae: AutoencoderKLWan) -> None:
        _check_wan_internals(vae)
        cfg = vae.config
        # Each temporally downsampling stage of the encoder is a x2 temporal upsampler in the
        # decoder; each stage after the first is x2 spatially, times the patch size if patchified.
        super().__init__(
            temporal_factor=2 ** sum(bool(t) for t in cfg.temperal_downsample),
            spatial_factor=2 ** (len(cfg.dim_mult) - 1) * (cfg.get("patch_size") or 1),
            latent_channels=cfg.z_dim,
        )
        self.vae = vae
        # (1, C, 1, 1, 1), float32 on CPU; cast per call to the VAE's device and dtype
        self._latents_mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1)
        self._latents_std = torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1)
        self._cache: list[Any] = []

    def denormalize(self, latents: Tensor) -> Tensor:
        """Generator latents -> the VAE's latent space, on the VAE's device and dtype.

        Written as WanPipeline writes it, `z / (1 / std) + mean` with the reciprocal taken in the
        VAE's dtype, not `z * std + mean`: the two differ in the last bit.
        """
        device, dtype = self.vae.device, self.vae.dtype
        latents = latents.to(device, dtype)
        mean = self._latents_mean.to(device, dtype)
        inv_std = 1.0 / self._latents_std.to(device, dtype)
        return latents / inv_std + mean

    def _reset_state(self) -> None:
        self._cache = []

    def _get_cache(self) -> Any:
        return self._cache

    def _set_cache(self, cache: Any) -> None:
        device = self.vae.device
        self._cache = [c.to(device) if isinstance(c, Tensor) else c for c in cache]

    def _decode_block(self, latents: Tensor, first: bool) -> Tensor:
        if first:
            self._cache = _wan_new_cache(self.vae)
        return _wan_decode_frames(self.vae, self.denormalize(latents), self._cache, first)


class LatentPreviewDecoder(StreamingDecoder):
    """A fixed linear map latent channels -> RGB, upsampled by repetition: fast, rough, stateless.

    Each latent cell becomes an s x s patch and each latent frame T frames (the stream's first
    latent frame one), so the preview has the shape and frame count of the real decoder's output.
    """

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None = None,
        *,
        temporal_factor: int,
        spatial_factor: int,
    ) -> None:
        if weight.ndim != 2 or weight.shape[0] != RGB_CHANNELS:
            raise ValueError(f"weight must be (3, C); got shape {tuple(weight.shape)}")
        if bias is not None and bias.shape != (RGB_CHANNELS,):
            raise ValueError(f"bias must be (3,); got shape {tuple(bias.shape)}")
        super().__init__(
            temporal_factor=temporal_factor,
            spatial_factor=spatial_factor,
            latent_channels=weight.shape[1],
        )
        self.weight = weight.detach().float()  # (3, C)
        self.bias = torch.zeros(RGB_CHANNELS) if bias is None else bias.detach().float()  # (3,)

    @classmethod
    def default(
        cls, latent_channels: int, *, temporal_factor: int, spatial_factor: int, seed: int = 0
    ) -> LatentPreviewDecoder:
        """A seeded random projection, scaled so unit-variance latents give unit-variance RGB."""
        gen = torch.Generator().manual_seed(seed)
        weight = torch.randn(RGB_CHANNELS, latent_channels, generator=gen) / latent_channels**0.5
        return cls(weight, temporal_factor=temporal_factor, spatial_factor=spatial_factor)

    def _reset_state(self) -> None:
        pass  # stateless: only the first-frame rule depends on the stream, and the base class owns it

    def _decode_block(self, latents: Tensor, first: bool) -> Tensor:
        weight = self.weight.to(latents.device)
        bias = self.bias.to(latents.device)
        rgb = einsum(weight, latents.float(), "o c, b c f h w -> b o f h w")
        rgb = rgb + rearrange(bias, "o -> 1 o 1 1 1")
        s, t = self.spatial_factor, self.temporal_factor
        video = repeat(rgb, "b o f h w -> b o (f t) (h s1) (w s2)", t=t, s1=s, s2=s)
        if first:
            video = video[:, :, t - 1 :]  # the stream's first latent frame is a single frame
        return video.clamp(-1.0, 1.0)


def _clone(value: Any) -> Any:
    """Deep copy of a decoder cache: tensors cloned, lists / dicts rebuilt, the rest kept."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return [_clone(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def from_uint8(frames: np.ndarray) -> Tensor:
    """(B, F, H, W, 3) uint8 RGB -> (B, 3, F, H, W) float in [-1, 1]: the inverse of `to_uint8`."""
    x = torch.from_numpy(frames).float().div_(127.5).sub_(1.0)
    return x.permute(0, 4, 1, 2, 3).contiguous()


def to_uint8(video: Tensor) -> np.ndarray:
    """(1, 3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8 RGB, rounded and clamped."""
    if video.ndim != 5 or video.shape[0] != 1 or video.shape[1] != RGB_CHANNELS:
        raise ValueError(f"video must be (1, 3, F, H, W); got shape {tuple(video.shape)}")
    scaled = ((video[0].detach().float() + 1.0) * 127.5).round().clamp(0, 255)
    return rearrange(scaled.to(torch.uint8), "c f h w -> f h w c").cpu().numpy()


class AutoencoderStreamingDecoder(StreamingDecoder):
    """The built-in model's `CausalAutoencoder`, decoding block by block with its causal memory
    carried across blocks (equal to decoding the whole latent video at once)."""

    def __init__(self, autoencoder: CausalAutoencoder) -> None:
        super().__init__(
            temporal_factor=autoencoder.temporal_factor,
            spatial_factor=autoencoder.spatial_factor,
            latent_channels=autoencoder.cfg.latent_channels,
        )
        self.autoencoder = autoencoder.eval()
        self._state: list = autoencoder.new_state("decoder")

    def _reset_state(self) -> None:
        self._state = self.autoencoder.new_state("decoder")

    def _get_cache(self) -> Any:
        return self._state

    def _set_cache(self, cache: Any) -> None:
        p = next(self.autoencoder.parameters())
        self._state = [c.to(p.device, p.dtype) if isinstance(c, Tensor) else c for c in cache]

    def _decode_block(self, latents: Tensor, first: bool) -> Tensor:
        p = next(self.autoencoder.parameters())
        return self.autoencoder.decode(latents.to(p.device, p.dtype), self._state, first)
