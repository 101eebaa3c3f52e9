"""TAEHV's tiny decoder for Wan2.1 latents, streaming block by block.

TAEHV (madebyollin/taehv, "Tiny AutoEncoder for Hunyuan Video") ships `taew2_1.pth`, a small
encoder + decoder trained to mimic the Wan2.1 VAE: the decoder is 9.8 M parameters of 2D
convolutions (no 3D convs, no attention), for a fast live preview at some cost in quality. This module is our own implementation of its decoder, laid out so that the
public file's `decoder.*` tensors load by name (`loading.load_taehv`). Facts it follows (from the
public taehv.py; no code copied):

- input: the latents the DiT makes, as they are. TAEHV applies no latent mean / std (unlike the
  Wan VAE); its first layer squashes values softly into (-3, 3): 3 tanh(x / 3).
- all convolutions are 2D, per frame. Time enters only through
  - MemBlocks: conv3x3(2C -> C), ReLU, conv3x3, ReLU, conv3x3 on [x_t, x_{t-1}], plus x_t, ReLU;
    x_{t-1} is the block's input one frame earlier (zeros before the first frame), and
  - TGrow: a bias-free 1x1 conv C -> s*C whose channel groups become s consecutive frames.
- layout (`decoder.N`, N the position in an nn.Sequential; channels 256, 128, 64, 64):
    0 clamp, 1 conv 16->256, 2 ReLU,
    3-5 MemBlock 256, 6 upsample x2 (nearest), 7 TGrow 256 stride 1, 8 conv 256->128 (no bias),
    9-11 MemBlock 128, 12 upsample x2, 13 TGrow 128 stride 2, 14 conv 128->64 (no bias),
    15-17 MemBlock 64, 18 upsample x2, 19 TGrow 64 stride 2, 20 conv 64->64 (no bias),
    21 ReLU, 22 conv 64->3.
  So 8x in space and 4x in time (strides 1, 2, 2); output RGB in [0, 1].
- time layout: every latent frame becomes 4 frames; the first 3 frames of a stream are dropped, so
  T latent frames give 4T - 3 frames, the Wan VAE's count (its first latent frame is one frame).
- public checkpoints may store the stride-1 TGrow (decoder.7) with more output rows than 256 (a
  stride-2 kernel); the public loader keeps the last 256 rows (the last time step). So do we.

Streaming: each MemBlock keeps the last frame it saw, so decoding a stream block by block gives the
same frames as decoding all its latents at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longvid.vae import RGB_CHANNELS, StreamingDecoder

LATENT_CHANNELS = 16  # Wan2.1's z_dim
CHANNELS = (256, 128, 64, 64)
TIME_STRIDES = (1, 2, 2)  # TGrow strides of the three stages
TEMPORAL_FACTOR = 4  # product of TIME_STRIDES
SPATIAL_FACTOR = 8  # three nearest x2 upsamples
STATE_PREFIX = "decoder."


def _conv(c_in: int, c_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


class SoftClamp(nn.Module):
    """3 tanh(x / 3): keeps latents in (-3, 3), identity near 0."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """relu(x_t + f([x_t, past])), f three 3x3 convs; `past` is x_{t-1} (zeros at the start)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(2 * channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
            _conv(channels, channels),
        )

    def forward(self, x: Tensor, past: Tensor) -> Tensor:  # (N, C, H, W) each
        return F.relu(self.conv(torch.cat([x, past], dim=1)) + x)


class TGrow(nn.Module):
    """One frame -> `stride` frames: a 1x1 conv to stride*C channels, group g = frame g."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (N*T, C, H, W) -> (N*T*stride, C, H, W)
        n, c, h, w = x.shape
        return self.conv(x).reshape(n * self.stride, c, h, w)


class TAEHVDecoder(nn.Module):
    """The decoder of `taew2_1.pth`; parameters named `decoder.N...` as in the public file."""

    def __init__(self) -> None:
        super().__init__()
        c0, c1, c2, c3 = CHANNELS
        layers: list[nn.Module] = [SoftClamp(), _conv(LATENT_CHANNELS, c0), nn.ReLU()]
        for c_in, c_out, stride in zip((c0, c1, c2), (c1, c2, c3), TIME_STRIDES):
            layers += [MemBlock(c_in), MemBlock(c_in), MemBlock(c_in), nn.Upsample(scale_factor=2),
                       TGrow(c_in, stride), _conv(c_in, c_out, bias=False)]
        layers += [nn.ReLU(), _conv(c3, RGB_CHANNELS)]
        self.decoder = nn.Sequential(*layers)

    def new_state(self) -> list[Tensor | None]:
        """Causal state of a fresh stream: one slot per layer (MemBlocks fill theirs)."""
        return [None] * len(self.decoder)

    def forward(self, latents: Tensor, state: list[Tensor | None]) -> Tensor:
        """latents (B, T, 16, h, w) -> frames (B, 4T, 3, 8h, 8w) in [0, 1], untrimmed.

        `state` (from `new_state`) carries each MemBlock's last input frame to the next call and
        is updated in place.
        """
        b = latents.shape[0]
        x = latents.flatten(0, 1)  # (B*T, C, h, w), frames of one sample consecutive
        for i, layer in enumerate(self.decoder):
            if isinstance(layer, MemBlock):
                frames = x.unflatten(0, (b, -1))  # (B, t, C, H, W)
                prev = state[i] if state[i] is not None else torch.zeros_like(frames[:, 0])
                past = torch.cat([prev[:, None], frames[:, :-1]], dim=1).flatten(0, 1)
                state[i] = frames[:, -1].clone()
                x = layer(x, past)
            else:
                x = layer(x)
        return x.unflatten(0, (b, -1)).clamp(0.0, 1.0)

    def fit_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The `decoder.*` tensors of a TAEHV checkpoint, with TGrow kernels cut to this model.

        Other entries (the `encoder.*` half of the file) are dropped. A TGrow kernel stored with
        more output rows than ours (a multiple of them) keeps its last rows, as the public loader
        does. Anything else is left as it is, for `load_into` to report.
        """
        own = self.state_dict()
        out = {k: v for k, v in state.items() if k.startswith(STATE_PREFIX)}
        for i, layer in enumerate(self.decoder):
            key = f"{STATE_PREFIX}{i}.conv.weight"
            if isinstance(layer, TGrow) and key in out:
                rows, want = out[key].shape[0], own[key].shape[0]
                if rows > want and rows % want == 0 and out[key].shape[1:] == own[key].shape[1:]:
                    out[key] = out[key][-want:]
        return out


class TAEHVStreamingDecoder(StreamingDecoder):
    """`TAEHVDecoder` behind the streaming interface: a fast, approximate Wan2.1 VAE.

    Takes the generator's latents as they are (TAEHV uses no latent mean / std), returns
    (B, 3, F', 8h, 8w) in [-1, 1] with the Wan VAE's frame count; the causal state is carried from
    block to block, so any split of a stream into blocks gives the same frames.
    """

    def __init__(self, decoder: TAEHVDecoder) -> None:
        super().__init__(temporal_factor=TEMPORAL_FACTOR, spatial_factor=SPATIAL_FACTOR,
                         latent_channels=LATENT_CHANNELS)
        self.decoder = decoder.eval()
        self._state: list[Tensor | None] = decoder.new_state()

    def _reset_state(self) -> None:
        self._state = self.decoder.new_state()

    def _decode_block(self, latents: Tensor, first: bool) -> Tensor:
        p = next(self.decoder.parameters())
        z = latents.to(p.device, p.dtype).transpose(1, 2)  # (B, F, C, h, w)
        frames = self.decoder(z, self._state)  # (B, 4F, 3, H, W) in [0, 1]
        if first:
            frames = frames[:, TEMPORAL_FACTOR - 1 :]  # the stream's first latent frame is one frame
        return (frames * 2.0 - 1.0).transpose(1, 2)  # (B, 3, F', H, W) in [-1, 1]
