"""Streaming decoders: streamed == one-shot, bit for bit, with tiny random Wan VAEs on CPU."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan

from longvid.vae import LatentPreviewDecoder, WanStreamingDecoder, to_uint8

LATENT_HW = 4  # latents 4x4 -> 32x32 pixels
Z_DIM = 4
MEAN = [0.3, -0.7, 1.1, 0.0]
STD = [1.7, 0.6, 2.3, 1.0]


def tiny_wan21() -> AutoencoderKLWan:
    """Wan 2.1 layout: 3 upsampling stages (x8), two of them temporal (x4)."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=8, z_dim=Z_DIM, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        latents_mean=MEAN, latents_std=STD,
    )  # fmt: skip
    return vae.eval()


def tiny_wan22() -> AutoencoderKLWan:
    """Wan 2.2 layout: residual up blocks (first_chunk trimming) and 2x2 patchified output."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=8, z_dim=Z_DIM, dim_mult=[1, 1, 1], num_res_blocks=1, temperal_downsample=[True, True],
        is_residual=True, patch_size=2, in_channels=12, out_channels=12,
        latents_mean=MEAN, latents_std=STD,
    )  # fmt: skip
    return vae.eval()


@pytest.fixture(scope="module", params=["wan21", "wan22"])
def vae(request: pytest.FixtureRequest) -> AutoencoderKLWan:
    return {"wan21": tiny_wan21, "wan22": tiny_wan22}[request.param]()


def latents(num_frames: int, seed: int = 1, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, Z_DIM, num_frames, LATENT_HW, LATENT_HW, generator=gen)


def pipeline_decode(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """What diffusers' WanPipeline does with finished latents, written out independently."""
    z = z.to(vae.dtype)
    mean = torch.tensor(MEAN).view(1, Z_DIM, 1, 1, 1).to(vae.dtype)
    inv_std = 1.0 / torch.tensor(STD).view(1, Z_DIM, 1, 1, 1).to(vae.dtype)
    with torch.no_grad():
        return vae.decode(z / inv_std + mean).sample


def stream(decoder: WanStreamingDecoder, z: torch.Tensor, split: list[int]) -> list[torch.Tensor]:
    assert sum(split) == z.shape[2]
    return [decoder.decode(block) for block in z.split(split, dim=2)]


SPLITS = [[1, 3, 3, 2], [3, 3, 3], [1] * 7, [9], [2, 2, 2, 1], [4, 1, 2]]


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: "-".join(map(str, s)))
def test_streamed_decode_equals_one_shot(vae: AutoencoderKLWan, split: list[int]) -> None:
    z = latents(sum(split))
    decoder = WanStreamingDecoder(vae)
    blocks = stream(decoder, z, split)

    # frame count rule: 4F - 3 for the stream's first block, 4F afterwards
    assert decoder.temporal_factor == 4
    assert [b.shape[2] for b in blocks] == [4 * split[0] - 3] + [4 * f for f in split[1:]]
    assert blocks[0].shape[-2:] == (LATENT_HW * 8, LATENT_HW * 8)

    assert torch.equal(torch.cat(blocks, dim=2), pipeline_decode(vae, z))


def test_reset_starts_a_new_stream(vae: AutoencoderKLWan) -> None:
    z1, z2 = latents(5, seed=1), latents(5, seed=2)
    decoder = WanStreamingDecoder(vae)
    first_run = stream(decoder, z1, [2, 3])
    assert decoder.in_stream
    decoder.reset()
    assert not decoder.in_stream
    second_run = stream(decoder, z1, [2, 3])
    assert all(torch.equal(a, b) for a, b in zip(first_run, second_run))

    # a stream after another equals a fresh decoder's: nothing of z1 leaks into z2
    decoder.reset()
    after_z1 = torch.cat(stream(decoder, z2, [1, 4]), dim=2)
    assert torch.equal(after_z1, torch.cat(stream(WanStreamingDecoder(vae), z2, [1, 4]), dim=2))


def test_streams_on_one_vae_do_not_interfere(vae: AutoencoderKLWan) -> None:
    """Each decoder owns its cache: interleaving two streams and calling vae.decode mid-stream
    (which clears diffusers' own cache) changes nothing."""
    za, zb = latents(6, seed=3), latents(6, seed=4)
    dec_a, dec_b = WanStreamingDecoder(vae), WanStreamingDecoder(vae)
    out_a, out_b = [], []
    for block_a, block_b in zip(za.split(3, dim=2), zb.split(3, dim=2)):
        out_a.append(dec_a.decode(block_a))
        pipeline_decode(vae, latents(2, seed=5))
        out_b.append(dec_b.decode(block_b))
    assert torch.equal(torch.cat(out_a, dim=2), pipeline_decode(vae, za))
    assert torch.equal(torch.cat(out_b, dim=2), pipeline_decode(vae, zb))


def test_denormalisation_is_applied(vae: AutoencoderKLWan) -> None:
    z = latents(3)
    decoder = WanStreamingDecoder(vae)
    # close to z * std + mean (exactness vs the pipeline is covered by the streamed test)
    expected = z * torch.tensor(STD).view(1, -1, 1, 1, 1) + torch.tensor(MEAN).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(decoder.denormalize(z), expected)
    # and it matters: decoding the raw latents gives a different video
    with torch.no_grad():
        raw = vae.decode(z).sample
    assert not torch.allclose(decoder.decode(z), raw)


def test_batch_and_bfloat16() -> None:
    vae = tiny_wan21().to(torch.bfloat16)
    z = latents(4, batch=2)
    out = torch.cat(stream(WanStreamingDecoder(vae), z, [1, 3]), dim=2)
    assert out.dtype == torch.bfloat16 and out.shape[:3] == (2, 3, 13)
    assert torch.equal(out, pipeline_decode(vae, z))


def test_bad_blocks_are_rejected() -> None:
    decoder = WanStreamingDecoder(tiny_wan21())
    with pytest.raises(ValueError, match="channels"):
        decoder.decode(torch.zeros(1, Z_DIM + 1, 1, LATENT_HW, LATENT_HW))
    with pytest.raises(ValueError, match="no frames"):
        decoder.decode(latents(0))
    decoder.decode(latents(1))
    with pytest.raises(ValueError, match="reset"):
        decoder.decode(torch.zeros(1, Z_DIM, 1, LATENT_HW * 2, LATENT_HW))


def test_missing_diffusers_internals_is_a_clear_error() -> None:
    fake = types.SimpleNamespace(config=tiny_wan21().config)  # no decoder, no post_quant_conv
    with pytest.raises(TypeError, match=r"diffusers version .*`decoder`"):
        WanStreamingDecoder(fake)  # type: ignore[arg-type]


def test_to_uint8() -> None:
    video = torch.tensor([-1.0, 1.0, 0.0, 2.0, -3.0, 0.5]).view(1, 1, 6, 1, 1).expand(1, 3, 6, 2, 5)
    frames = to_uint8(video)
    assert frames.shape == (6, 2, 5, 3) and frames.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == [0, 255, 128, 255, 0, 191]
    # channel order is kept: R, G, B of the input land in [..., 0], [..., 1], [..., 2]
    rgb = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1, 1)
    assert to_uint8(rgb)[0, 0, 0].tolist() == [0, 128, 255]
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(2, 3, 1, 4, 4))


def test_latent_preview_decoder() -> None:
    preview = LatentPreviewDecoder.default(Z_DIM, temporal_factor=4, spatial_factor=8)
    z = latents(5) * 0.1  # small, so the linear map is not clamped
    blocks = [preview.decode(block) for block in z.split([2, 3], dim=2)]
    assert [b.shape for b in blocks] == [(1, 3, 5, 32, 32), (1, 3, 12, 32, 32)]
    video = torch.cat(blocks, dim=2)
    assert video.min() >= -1 and video.max() <= 1

    # frame 0 and frames 1-4 come from latent frames 0 and 1; each cell is an 8x8 patch
    expected = torch.einsum("oc,bcfhw->bofhw", preview.weight, z)
    assert torch.allclose(video[:, :, 0, ::8, ::8], expected[:, :, 0])
    assert torch.equal(video[:, :, 1:5], video[:, :, 1:2].expand(-1, -1, 4, -1, -1))
    assert torch.equal(video[:, :, :, :8, :8], video[:, :, :, :1, :1].expand(-1, -1, -1, 8, 8))

    # deterministic default; reset reopens the stream (first frame single again)
    again = LatentPreviewDecoder.default(Z_DIM, temporal_factor=4, spatial_factor=8)
    assert torch.equal(again.weight, preview.weight)
    preview.reset()
    assert preview.decode(z[:, :, :1]).shape[2] == 1
