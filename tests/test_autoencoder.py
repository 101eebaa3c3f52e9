"""The built-in causal autoencoder: Wan's frame rule, causal streaming decode, save/load."""

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
