"""TAEHV's tiny Wan2.1 decoder: the public file's layout, streaming == one-shot, frame counts, errors.

No downloads: `wan_fixtures.taew2_1_layout` states the public taew2_1.pth names and shapes by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
import wan_fixtures as fx  # noqa: E402

from longvid import loading  # noqa: E402
from longvid.api import _decoder  # noqa: E402
from longvid.errors import ConfigError, WeightsError  # noqa: E402
from longvid.taehv import TAEHVDecoder, TAEHVStreamingDecoder  # noqa: E402


@pytest.fixture(scope="module")
def decoder() -> TAEHVDecoder:
    torch.manual_seed(0)  # PyTorch's default init: outputs spread over (0, 1), not clamped flat
    return TAEHVDecoder().eval()


def latents(frames: int, seed: int = 1, hw: tuple[int, int] = (3, 4)) -> torch.Tensor:
    return torch.randn(1, 16, frames, *hw, generator=torch.Generator().manual_seed(seed))  # (B, C, F, h, w)


# --- the public layout ---------------------------------------------------------------------------


def test_parameter_names_and_shapes_are_the_public_decoder(decoder):
    public = {k: v for k, v in fx.taew2_1_layout().items() if k.startswith("decoder.")}
    ours = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    assert ours == public


@pytest.mark.parametrize("tgrow0_rows", [256, 512])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_public_file_loads_every_decoder_tensor(tmp_path, tgrow0_rows, suffix):
    state = fx.taew2_1_state(tgrow0_rows)
    path = tmp_path / f"taew2_1{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    loaded = loading.load_taehv(path).state_dict()
    expected = {k: v for k, v in state.items() if k.startswith("decoder.")}
    expected["decoder.7.conv.weight"] = state["decoder.7.conv.weight"][-256:]  # the last time step's rows
    assert set(loaded) == set(expected)
    for k, v in expected.items():
        assert torch.equal(loaded[k], v), k


# --- streaming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [[7], [1, 3, 3], [4, 3], [1] * 7])
def test_streaming_equals_one_shot(decoder, split):
    z = latents(sum(split))
    one_shot = TAEHVStreamingDecoder(decoder).decode(z)
    stream = TAEHVStreamingDecoder(decoder)
    parts, start = [], 0
    for n in split:
        parts.append(stream.decode(z[:, :, start:start + n]))
        start += n
    streamed = torch.cat(parts, dim=2)
    assert streamed.shape == one_shot.shape
    torch.testing.assert_close(streamed, one_shot, rtol=0, atol=1e-5)
    inside = ((one_shot > -1) & (one_shot < 1)).float().mean()
    assert inside > 0.2  # the comparison is not between two clamped-flat videos


def test_frame_count_and_size_follow_the_wan_vae(decoder):
    dec = TAEHVStreamingDecoder(decoder)
    t = 5
    video = dec.decode(latents(t, hw=(2, 3)))
    assert video.shape == (1, 3, 4 * (t - 1) + 1, 16, 24)
    assert video.min() >= -1 and video.max() <= 1
    assert dec.decode(latents(2, seed=2, hw=(2, 3))).shape[2] == 8  # later blocks: 4 per latent frame
    dec.reset()
    assert dec.decode(latents(2, seed=2, hw=(2, 3))).shape[2] == 5  # a new stream starts with one frame


def test_state_is_causal(decoder):
    """Changing a later latent frame never changes earlier frames; reset forgets the stream."""
    z = latents(4)
    z2 = z.clone()
    z2[:, :, 3] += 1.0
    a, b = TAEHVStreamingDecoder(decoder).decode(z), TAEHVStreamingDecoder(decoder).decode(z2)
    assert torch.equal(a[:, :, :9], b[:, :, :9])  # frames of latents 0..2: 1 + 4 + 4
    assert not torch.equal(a[:, :, 9:], b[:, :, 9:])
    dec = TAEHVStreamingDecoder(decoder)
    first = dec.decode(z[:, :, :2])
    dec.decode(z[:, :, 2:])
    dec.reset()
    assert torch.equal(dec.decode(z[:, :, :2]), first)


# --- errors --------------------------------------------------------------------------------------


def test_wan_vae_file_is_not_taehv(tmp_path):
    vae = fx.tiny_vae()
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save({fx.original_vae_name(k): v for k, v in vae.state_dict().items()}, path)
    with pytest.raises(WeightsError, match=r"Wan2.1_VAE.pth is not a TAEHV checkpoint.*taew2_1.pth"):
        loading.load_taehv(path)


def test_generator_checkpoint_is_not_taehv(tmp_path):
    path = tmp_path / "lora.pt"
    torch.save({"generator_lora": {"base_model.model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(2, 2)},
                "step": 3}, path)
    with pytest.raises(WeightsError, match="lora.pt is not a TAEHV checkpoint"):
        loading.load_taehv(path)


def test_taehv_for_another_model_is_named(tmp_path):
    state = fx.taew2_1_state()
    state["decoder.1.weight"] = torch.zeros(256, 48, 3, 3)  # taew2_2: Wan 2.2's 48-channel latents
    torch.save(state, tmp_path / "taew2_2.pth")
    with pytest.raises(WeightsError, match="48-channel latents, not Wan2.1's 16"):
        loading.load_taehv(tmp_path / "taew2_2.pth")


def test_missing_tensor_and_truncated_file(tmp_path):
    state = fx.taew2_1_state()
    del state["decoder.16.conv.2.weight"]
    torch.save(state, tmp_path / "taew2_1.pth")
    with pytest.raises(WeightsError, match=r"taew2_1.pth does not match.*missing keys: decoder.16.conv.2.weight"):
        loading.load_taehv(tmp_path / "taew2_1.pth")
    torch.save(fx.taew2_1_state(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cut.pth.*truncated"):
        loading.load_taehv(tmp_path / "cut.pth")
    with pytest.raises(WeightsError, match="is a directory"):
        loading.load_taehv(tmp_path)


# --- the config switch ---------------------------------------------------------------------------


def test_vae_kind_taehv_builds_the_decoder(tmp_path):
    torch.save(fx.taew2_1_state(), tmp_path / "taew2_1.pth")
    cfg = tiny_config(vae={"kind": "taehv", "latent_channels": 16}, weights={"vae": str(tmp_path / "taew2_1.pth")})
    dec = _decoder(cfg, torch.device("cpu"))
    assert isinstance(dec, TAEHVStreamingDecoder)
    assert dec.decode(latents(2, hw=(4, 4))).shape == (1, 3, 5, 32, 32)
    wrong = tiny_config(vae={"kind": "taehv"}, weights={"vae": str(tmp_path / "taew2_1.pth")})  # 4 channels
    with pytest.raises(ConfigError, match="decodes Wan2.1 latents"):
        _decoder(wrong, torch.device("cpu"))


def test_cli_generate_with_taehv(tmp_path, monkeypatch):
    """`longvid generate --set vae.kind=taehv --set weights.vae=...taew2_1.pth` end to end (tiny DiT
    with Wan2.1's 16 latent channels, random weights)."""
    import yaml
    from typer.testing import CliRunner

    from cli.app import app
    from longvid.config import config_to_dict

    monkeypatch.setenv("CI", "true")
    (tmp_path / "taehv").mkdir()
    torch.save(fx.taew2_1_state(), tmp_path / "taehv" / "taew2_1.pth")
    cfg = tiny_config(vae={"latent_channels": 16}, runtime={"threads": 1})
    cfg.model.in_channels = cfg.model.out_channels = 16
    (tmp_path / "tiny16.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    out = tmp_path / "v.mp4"
    result = CliRunner().invoke(app, [
        "generate", "a ball", "--seconds", "0.5", "--config", str(tmp_path / "tiny16.yaml"),
        "--weights", str(tmp_path), "--set", "vae.kind=taehv", "--set", "weights.vae=taehv/taew2_1.pth",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
    result = CliRunner().invoke(app, [
        "generate", "a ball", "--seconds", "0.5", "--config", str(tmp_path / "tiny16.yaml"),
        "--weights", str(tmp_path), "--set", "vae.kind=taehv", "--set", "weights.vae=tiny16.yaml",
        "--out", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2 and "tiny16.yaml" in result.stderr
