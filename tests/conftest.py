"""Tiny seeded components shared by the engine tests (CPU, milliseconds per forward)."""

from __future__ import annotations

import os

import pytest
import torch
import yaml
from safetensors.torch import save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from longvid.config import (  # noqa: E402
    CacheConfig, Config, ModelConfig, ScheduleConfig, SwitchConfig, TextConfig, VaeConfig, VideoConfig,
    config_to_dict,
)
from longvid.model import build_transformer  # noqa: E402
from longvid.pipeline import StreamPipeline  # noqa: E402
from longvid.text import HashTextEncoder  # noqa: E402
from longvid.vae import LatentPreviewDecoder  # noqa: E402

TEXT_DIM, TEXT_LEN, LATENT_CH = 16, 6, 4

# Tiny models run fastest on one thread (and a busy 2-core machine makes 2 threads far slower).
torch.set_num_threads(1)


def tiny_config(**sections) -> Config:
    """A few-thousand-parameter Wan config at 32x32 pixels (4x4 latents, 4 tokens per frame)."""
    cfg = Config(
        name="tiny",
        model=ModelConfig(num_heads=2, head_dim=12, num_layers=2, ffn_dim=48, text_dim=TEXT_DIM,
                          freq_dim=32, in_channels=LATENT_CH, out_channels=LATENT_CH),
        text=TextConfig(kind="hash", max_length=TEXT_LEN),
        vae=VaeConfig(kind="preview", latent_channels=LATENT_CH),
        video=VideoConfig(height=32, width=32, fps=16),
        cache=CacheConfig(sink_frames=3, window_frames=6),
        schedule=ScheduleConfig(),
        switch=SwitchConfig(),
    )
    for name, values in sections.items():
        for k, v in values.items():
            setattr(getattr(cfg, name), k, v)
    return cfg


def tiny_pipeline(cfg: Config | None = None, seed: int = 0) -> StreamPipeline:
    cfg = cfg or tiny_config()
    torch.manual_seed(seed)
    model = build_transformer(cfg.model).eval()
    text = HashTextEncoder(dim=TEXT_DIM, max_length=TEXT_LEN)
    decoder = LatentPreviewDecoder.default(LATENT_CH, temporal_factor=4, spatial_factor=8)
    return StreamPipeline(model, text, decoder, cfg)


@pytest.fixture
def pipeline_factory():
    return tiny_pipeline


def write_weighted_config(tmp_path) -> str:
    """A tiny config (1 thread) whose random transformer weights (seed 0) are saved to a file, so
    that two runs, or a subprocess, use one model; returns the config file's path."""
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in build_transformer(tiny_config().model).state_dict().items()},
              str(weights))
    config = tmp_path / "tiny.yaml"
    data = config_to_dict(tiny_config(weights={"transformer": str(weights)}, runtime={"threads": 1}))
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(config)
