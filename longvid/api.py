"""The public Python API: build a pipeline from a config, stream frames.

    import longvid
    for frame in longvid.stream("a red ball bouncing on black", seconds=5):
        ...  # frame.image is (H, W, 3) uint8

Component construction lives here (config -> objects); weight files are opened by `loading`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence

import torch

from . import loading
from .config import DEFAULT_CONFIG, Config, RuntimeConfig, load_config, validate, weight_path
from .errors import ConfigError
from .frames import Frame
from .lora import attach_lora, lora_scale, merge_lora
from .model import build_transformer
from .pipeline import StreamPipeline
from .quantize import quantize_transformer
from .text import CachedTextEncoder, HashTextEncoder, HFTextEncoder
from .timeline import Timeline, make_timeline
from .taehv import TAEHVStreamingDecoder
from .vae import AutoencoderStreamingDecoder, LatentPreviewDecoder, WanStreamingDecoder

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device is {name!r} but no CUDA GPU is available: use --set runtime.device=cpu")
    return torch.device(name)


def _text_encoder(config: Config, device: torch.device):
    tc = config.text
    text_device = resolve_device(tc.device) if tc.device != "auto" else device
    if tc.kind == "hash":
        enc = HashTextEncoder(dim=config.model.text_dim, max_length=tc.max_length)
    elif tc.kind == "minilm":
        model, tok = loading.load_minilm(device=text_device)
        enc = HFTextEncoder(model, tok, tc.max_length)
    else:  # umt5
        if config.weights.text is None:
            raise ConfigError("text.kind 'umt5' needs weights.text: the directory holding umT5-XXL "
                              "(see docs/models.md)")
        dtype = torch.bfloat16 if text_device.type == "cuda" else torch.float32
        model, tok = loading.load_umt5(weight_path(config, "text"), device=text_device, dtype=dtype)
        enc = HFTextEncoder(model, tok, tc.max_length)
    if enc.dim != config.model.text_dim:
        raise ConfigError(f"text encoder gives {enc.dim}-dim embeddings but model.text_dim is "
                          f"{config.model.text_dim}: fix one of them in the config")
    return CachedTextEncoder(enc)


def _decoder(config: Config, device: torch.device, allow_random: bool = False):
    vc = config.vae

    def preview() -> LatentPreviewDecoder:
        return LatentPreviewDecoder.default(vc.latent_channels, temporal_factor=vc.temporal_factor,
                                            spatial_factor=vc.spatial_factor)

    if vc.kind == "preview":
        return preview()
    if config.weights.vae is None:
        raise ConfigError(f"vae.kind {vc.kind!r} needs weights.vae (a weight file or directory)")
    path = weight_path(config, "vae")
    if allow_random and not path.exists():
        warnings.warn(f"{path} not found: decoding with the latent preview decoder", stacklevel=3)
        return preview()
    dtype = decoder_dtype(config.runtime, device)
    if vc.kind == "builtin":
        autoencoder = loading.load_autoencoder(path, device).to(dtype)
        if config.runtime.channels_last and device.type == "cpu":  # oneDNN: ~18% faster decode
            autoencoder = autoencoder.to(memory_format=torch.channels_last)
        return AutoencoderStreamingDecoder(autoencoder)
    if vc.kind == "taehv":
        return _taehv_decoder(config, loading.load_taehv(path, device, dtype))
    return WanStreamingDecoder(loading.load_wan_vae(path, device, dtype))


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 convolutions natively here (AVX512-BF16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and check is not None and check())


def decoder_dtype(rt: RuntimeConfig, device: torch.device) -> torch.dtype:
    """The decoder's dtype: `runtime.decoder_dtype` if set, else `runtime.dtype` on CUDA and
    float32 on the CPU. Half precision on a CPU that would only emulate it falls back to float32."""
    if rt.decoder_dtype is None:
        return DTYPES[rt.dtype] if device.type == "cuda" else torch.float32
    dtype = DTYPES[rt.decoder_dtype]
    if device.type == "cpu" and dtype != torch.float32 and not (dtype == torch.bfloat16 and cpu_has_native_bf16()):
        warnings.warn(f"runtime.decoder_dtype {rt.decoder_dtype} is not native on this CPU: decoding in float32 "
                      f"(set runtime.decoder_dtype=float32 to silence this)", stacklevel=3)
        return torch.float32
    return dtype


def _taehv_decoder(config: Config, decoder) -> TAEHVStreamingDecoder:
    """TAEHV decodes Wan2.1's latent space only: the config's vae factors must be Wan2.1's."""
    out = TAEHVStreamingDecoder(decoder)
    vc = config.vae
    have = (vc.latent_channels, vc.temporal_factor, vc.spatial_factor)
    want = (out.latent_channels, out.temporal_factor, out.spatial_factor)
    if have != want:
        raise ConfigError(f"vae.kind 'taehv' decodes Wan2.1 latents ({want[0]} channels, x{want[1]} in time, "
                          f"x{want[2]} in space) but the config says {have}: use a Wan2.1 config")
    return out


def apply_lora(model: torch.nn.Module, config: Config) -> int:
    """Apply `weights.lora` (if any): merged into the weights, or attached unmerged when
    `weights.lora_merge` is false. Returns the number of layers adapted."""
    path = weight_path(config, "lora")
    if path is None:
        return 0
    pairs = loading.read_lora(path)
    scale = lora_scale(pairs, config.weights.lora_alpha)
    if config.weights.lora_merge:
        merge_lora(model, pairs, scale, str(path))
        return len(pairs)
    return attach_lora(model, pairs, scale, str(path))


def load_pipeline(config: Config | str = DEFAULT_CONFIG, overrides: Sequence[str] = (), *,
                  allow_random: bool = False) -> StreamPipeline:
    """Build the text encoder, transformer (with its weights) and decoder a config names.

    `weights.transformer: null` in a config means random initialisation (for tests and for
    trying the engine); a named file that is missing is an error unless `allow_random`.
    """
    if isinstance(config, str):
        config = load_config(config, overrides)
    validate(config)
    rt = config.runtime
    if rt.threads:
        torch.set_num_threads(rt.threads)
    device, dtype = resolve_device(rt.device), DTYPES[rt.dtype]
    model = build_transformer(config.model, device, dtype)
    model.attention_backend = rt.attention
    if config.weights.transformer is not None:
        path = weight_path(config, "transformer")
        if path.exists() or not allow_random:
            loading.load_transformer_weights(model, path, config.weights.checkpoint_key)
            apply_lora(model, config)
        else:
            warnings.warn(f"{path} not found: using random weights (the video will be noise)", stacklevel=2)
    model.eval().requires_grad_(False)
    quantize_transformer(model, rt.quantize, device)
    if rt.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    decoder = _decoder(config, device, allow_random)
    return StreamPipeline(model, _text_encoder(config, device), decoder, config)


def stream(prompt: str | None = None, *, timeline: str | os.PathLike | Timeline | None = None,
           seconds: float | None = None, seed: int = 0, config: Config | str = DEFAULT_CONFIG,
           overrides: Sequence[str] = ()) -> Iterator[Frame]:
    """Generate a video and yield its frames as they are made."""
    pipe = load_pipeline(config, overrides)
    tl = make_timeline(pipe.config, prompt, timeline, seconds)
    yield from pipe.stream(tl, seed=seed)
