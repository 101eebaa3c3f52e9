"""The built-in causal autoencoder: Wan's frame rule, causal streaming decode, save/load."""

from pathlib import Path

import pytest
import torch

from longvid.autoencoder import AutoencoderConfig, CausalAutoencoder
from longvid.errors import WeightsError
from longvid.loading import load_autoencoder, save_autoencoder
from longvid.vae import AutoencoderStreamingDecoder

CFG = AutoencoderConfig(latent_channels=4, encoder_channels=(4, 6, 8, 8), decoder_channels=(8, 6, 4, 4))


def tiny() -> CausalAutoencoder:
    torch.manual_seed(0)
    return CausalAutoencoder(CFG).eval()


def test_frame_rule_and_shapes():
    ae = tiny()
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1  # 4*3-3 frames
    with torch.no_grad():
        z = ae.encode(video)
        out = ae.decode(z)
    assert z.shape == (1, 4, 3, 4, 4)
    assert out.shape == video.shape and out.abs().max() <= 1


@pytest.mark.parametrize("split", [[1, 3, 2], [3, 3], [1, 1, 1, 1, 1, 1], [6]])
def test_streamed_decode_equals_one_shot(split):
    ae = tiny()
    z = torch.randn(1, 4, sum(split), 4, 4)
    with torch.no_grad():
        whole = ae.decode(z)
    dec = AutoencoderStreamingDecoder(ae)
    for _ in range(2):  # and again after reset
        dec.reset()
        parts, i = [], 0
        for n in split:
            parts.append(dec.decode(z[:, :, i : i + n]))
            i += n
        assert torch.allclose(torch.cat(parts, dim=2), whole, atol=1e-6)
    assert whole.shape[2] == 4 * sum(split) - 3


SPAN_CFG = AutoencoderConfig(latent_channels=4, encoder_channels=(4, 6, 8, 8), decoder_channels=(8, 6, 4, 4),
                             decoder_latent_span=3)


@pytest.mark.parametrize("split", [[1, 3, 2], [1, 1, 1, 1, 1, 1], [2, 4]])
def test_a_decoder_seeing_several_past_latents_streams_like_one_shot(split):
    torch.manual_seed(0)
    ae = CausalAutoencoder(SPAN_CFG).eval()
    z = torch.randn(1, 4, sum(split), 4, 4)
    with torch.no_grad():
        whole = ae.decode(z)
    dec = AutoencoderStreamingDecoder(ae)
    parts, i = [], 0
    for n in split:
        parts.append(dec.decode(z[:, :, i : i + n]))
        i += n
    assert torch.allclose(torch.cat(parts, dim=2), whole, atol=1e-6)


def test_a_decoder_seeing_several_past_latents_reaches_that_far_back_and_saves_it(tmp_path):
    torch.manual_seed(0)
    ae = CausalAutoencoder(SPAN_CFG).eval()
    # the first block sees latents t-3..t; the blocks above it one more (their own past frame):
    # a change to latent 1 reaches the frames of latent 5 and stops there
    z = torch.randn(1, 4, 7, 4, 4)
    z2 = z.clone()
    z2[:, :, 1] += 1.0
    with torch.no_grad():
        a, b = ae.decode(z), ae.decode(z2)
    frames_of = lambda t: slice(4 * t - 3, 4 * t + 1)  # noqa: E731  (latent t >= 1)
    assert not torch.allclose(a[:, :, frames_of(5)], b[:, :, frames_of(5)])
    assert torch.equal(a[:, :, frames_of(6)], b[:, :, frames_of(6)])
    narrow = CausalAutoencoder(CFG).eval()  # span 1: latent 1 stops at latent 3
    with torch.no_grad():
        assert torch.equal(narrow.decode(z)[:, :, frames_of(4)], narrow.decode(z2)[:, :, frames_of(4)])
    path = tmp_path / "span.safetensors"
    save_autoencoder(ae, path)
    assert load_autoencoder(path).cfg.decoder_latent_span == 3


def test_widening_a_memory_block_keeps_what_it_computes_until_trained():
    from longvid.autoencoder import Memory

    torch.manual_seed(0)
    old = Memory(6).eval()
    new = old.widened(3)
    x = torch.randn(2, 5, 6, 4, 4)
    s_old, s_new = [None], [None]
    with torch.no_grad():
        assert torch.allclose(new(x, s_new, 0), old(x, s_old, 0), atol=1e-6)
        assert torch.allclose(new(x[:, :2], s_new, 0), old(x[:, :2], s_old, 0), atol=1e-6)
    assert new.mix.weight.shape[1] == 4 * 6
    with torch.no_grad():  # the new inputs are live: training can use them
        new.mix.weight[:, 12:] = 0.1
        assert not torch.allclose(new(x, [None], 0), old(x, [None], 0))


def test_a_widened_decoder_draws_the_same_video_until_trained_and_its_new_channels_can_learn():
    from longvid.autoencoder import Decoder

    torch.manual_seed(0)
    cfg = AutoencoderConfig(latent_channels=5, decoder_channels=(8, 6, 4, 4), decoder_latent_span=2)
    old = Decoder(cfg).eval()
    new = old.widened((12, 6, 7, 5)).eval()
    assert [c.out_channels for c in [new.inp, *new.up]] == [12, 6, 7, 5] and new.memory[0].span == 2
    z = torch.randn(2, 4, 5, 4, 4)
    s_old, s_new = [None] * 3, [None] * 3
    with torch.no_grad():  # twice: the causal memory (the state) must match as well
        for part in (z[:, :3], z[:, 3:]):
            assert torch.allclose(new(part, s_new), old(part, s_old), atol=1e-5)
    new.train()
    loss = new(z, [None] * 3).square().mean()
    loss.backward()
    # the new channels' outgoing weights start at zero, and get a gradient
    assert new.out.weight[:, 4:].abs().max() == 0 and new.out.weight.grad[:, 4:].abs().max() > 0
    assert new.up[0].weight.grad[:, 8:].abs().max() > 0
    with pytest.raises(ValueError, match="at least the current"):
        old.widened((8, 6, 3, 4))
    with pytest.raises(ValueError, match="4 widths"):
        old.widened((8, 6, 4))


def test_decode_is_causal():
    ae = tiny()
    z = torch.randn(1, 4, 4, 4, 4)
    z2 = z.clone()
    z2[:, :, 3] += 1.0  # change the last latent frame only
    with torch.no_grad():
        a, b = ae.decode(z), ae.decode(z2)
    assert torch.equal(a[:, :, : 4 * 3 - 3], b[:, :, : 4 * 3 - 3])  # earlier frames unchanged
    assert not torch.allclose(a[:, :, -4:], b[:, :, -4:])


def test_save_load_roundtrip_and_errors(tmp_path):
    ae = tiny()
    ae.latents_std.fill_(2.0)
    path = tmp_path / "ae.safetensors"
    save_autoencoder(ae, path)
    loaded = load_autoencoder(path)
    assert loaded.cfg == CFG and torch.equal(loaded.latents_std, ae.latents_std)
    z = torch.randn(1, 4, 2, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), ae.decode(z))
    with pytest.raises(WeightsError, match="not found"):
        load_autoencoder(tmp_path / "missing.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError, match="truncated|corrupt"):
        load_autoencoder(path)


BLUR_CFG = AutoencoderConfig(latent_channels=7, encoder_channels=(4, 6, 8, 8), decoder_channels=(8, 6, 4, 4),
                             shape_channels=3, appearance_blur=2)


def test_appearance_blur_softens_only_the_appearance_channels_and_streams_like_one_shot(tmp_path):
    """With shape channels, `appearance_blur` passes of a 3x3 binomial blur reach the decoder's
    appearance channels (a point spreads to a 5x5 binomial after two passes; flat latents stay
    flat); the shape channels pass through untouched; the setting travels in the weight file; and
    streamed decoding equals one-shot decoding (the blur is per frame)."""
    torch.manual_seed(0)
    ae = CausalAutoencoder(BLUR_CFG).eval()
    z = torch.zeros(1, 7, 2, 8, 8)
    z[0, :, :, 4, 4] = 16.0
    low = ae._low_pass(z)
    row = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    torch.testing.assert_close(low[0, 0, 0, 2:7, 2:7], torch.outer(row, row) / 16)
    assert low[0, :4].sum(dim=(-1, -2)).allclose(torch.full((4, 2), 16.0))  # mass kept
    assert torch.equal(low[:, 4:], z[:, 4:])
    torch.testing.assert_close(ae._low_pass(torch.full_like(z, 0.7)), torch.full_like(z, 0.7))
    plain = CausalAutoencoder(AutoencoderConfig(**{**BLUR_CFG.__dict__, "appearance_blur": 0})).eval()
    plain.load_state_dict(ae.state_dict())
    assert torch.equal(plain._low_pass(z), z)
    z = torch.randn(1, 7, 5, 8, 8)
    with torch.no_grad():
        whole = ae.decode(z)
        assert not torch.allclose(whole, plain.decode(z), atol=1e-4)  # the decoder sees the blur
        torch.testing.assert_close(whole, plain.decode(ae._low_pass(z)))
    dec = AutoencoderStreamingDecoder(ae)
    parts = [dec.decode(z[:, :, :1]), dec.decode(z[:, :, 1:4]), dec.decode(z[:, :, 4:])]
    assert torch.allclose(torch.cat(parts, dim=2), whole, atol=1e-6)
    save_autoencoder(ae, tmp_path / "ae.safetensors")
    assert load_autoencoder(tmp_path / "ae.safetensors").cfg.appearance_blur == 2


def _builtin_decoder(monkeypatch, native: bool, *overrides: str):
    from longvid import api
    from longvid.config import load_config

    monkeypatch.setattr(api, "cpu_has_native_bf16", lambda: native)
    return api._decoder(load_config("longvid-shapes", overrides), torch.device("cpu"))


def test_decoder_dtype_setting(monkeypatch, recwarn):
    dtype = lambda dec: next(dec.autoencoder.parameters()).dtype  # noqa: E731
    assert dtype(_builtin_decoder(monkeypatch, True, "runtime.decoder_dtype=null")) == torch.float32
    assert dtype(_builtin_decoder(monkeypatch, True, "runtime.decoder_dtype=bfloat16")) == torch.bfloat16
    assert not recwarn.list
    # a CPU that would only emulate bf16 (slowly) decodes in float32, and says so
    with pytest.warns(UserWarning, match="not native on this CPU"):
        dec = _builtin_decoder(monkeypatch, False, "runtime.decoder_dtype=bfloat16")
    assert dtype(dec) == torch.float32


def test_bfloat16_decode_matches_float32_on_the_built_in_weights(monkeypatch):
    """The built-in config decodes in bf16 where the CPU has it: the pictures must stay those of
    float32 (within a few grey levels, same detections), streamed in blocks as in a run."""
    import numpy as np

    from longvid.evaluate import detect_frame
    from longvid.vae import from_uint8, to_uint8
    from longvid.world import SceneSpec, make_clip

    full = _builtin_decoder(monkeypatch, True, "runtime.decoder_dtype=float32")
    half = _builtin_decoder(monkeypatch, True, "runtime.decoder_dtype=bfloat16")
    clip, _ = make_clip(SceneSpec(shape="square", colour="orange", background="navy", motion="right",
                                  size="large"), 21, np.random.default_rng(0), 128)
    video = from_uint8(clip[None])
    with torch.no_grad():
        z = full.autoencoder.encode(video)
    a = to_uint8(torch.cat([full.decode(z[:, :, i : i + 2]) for i in range(0, 6, 2)], dim=2))
    b = to_uint8(torch.cat([half.decode(z[:, :, i : i + 2]) for i in range(0, 6, 2)], dim=2))
    diff = np.abs(a.astype(int) - b.astype(int))
    assert a.shape == b.shape == (21, 128, 128, 3)
    assert diff.mean() < 0.5 and diff.max() <= 16
    same = []
    for fa, fb in zip(a, b):
        da, db = detect_frame(fa), detect_frame(fb)
        big_a, big_b = (max(d.objects, key=lambda o: o.area) for d in (da, db))
        assert np.allclose(big_a.centroid, big_b.centroid, atol=1.0)
        same.append(len(da.objects) == len(db.objects) and da.shape == db.shape and da.colour == db.colour)
    assert np.mean(same) >= 0.9


def test_the_16_channel_autoencoder_keeps_circling_smooth_and_corners_square():
    """`autoencoder.safetensors` (the built-in latent space since session 15, docs/training.md): what
    the evaluator reads on its round trips bounds what any generator on it can score. The 8-channel
    one lurches inside a latent frame, so circles become polygons read as bouncing (~26 % of
    circling frames right) and rounds squares; this one must not."""
    import numpy as np

    from longvid import evaluate
    from longvid.vae import from_uint8, to_uint8
    from longvid.world import SceneSpec, make_clip

    ae = load_autoencoder(Path(__file__).resolve().parents[1] / "longvid" / "weights" / "shapes"
                          / "autoencoder.safetensors")
    assert ae.cfg.latent_channels == 16
    clip, _ = make_clip(SceneSpec(shape="square", colour="yellow", background="navy", motion="circling",
                                  size="large"), 49, np.random.default_rng(0), 128)
    with torch.no_grad():
        frames = to_uint8(ae.decode(ae.encode(from_uint8(clip[None]))))
    report = evaluate.evaluate(frames, [(0, "a large yellow square circling on a navy background")], fps=16)
    assert report["adherence"]["motion"] >= 0.8
    assert report["adherence"]["shape"] >= 0.8
    assert report["adherence"]["colour"] >= 0.95


def test_the_motion_retrained_autoencoder_keeps_low_contrast_motion_on_gray():
    """`autoencoder-16ch-m3.safetensors` (session 7, `--motion-weight 3`): a green circle (luma 136)
    moving right on gray (luma 110) must still move inside each latent frame after a round trip;
    `autoencoder-16ch` holds it still for 4 frames and then jumps (motion read right: 0.00)."""
    import numpy as np

    from longvid import evaluate
    from longvid.vae import from_uint8, to_uint8
    from longvid.world import SceneSpec, make_clip

    ae = load_autoencoder(Path(__file__).resolve().parents[1] / "longvid" / "weights" / "shapes"
                          / "autoencoder-16ch-m3.safetensors")
    clip, _ = make_clip(SceneSpec(shape="circle", colour="green", background="gray", motion="right",
                                  size="medium"), 65, 0, 128)
    with torch.no_grad():
        frames = to_uint8(ae.decode(ae.encode(from_uint8(clip[None]))))
    report = evaluate.evaluate(frames, [(0, "a green circle moving right on a gray background")], fps=16)
    assert report["adherence"]["motion"] >= 0.9
    assert report["adherence"]["colour"] >= 0.95 and report["adherence"]["shape"] >= 0.9
