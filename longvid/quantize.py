"""int8 inference on the CPU: dynamic quantization of the transformer blocks' Linear layers.

`--set runtime.quantize=int8` stores the weights of every Linear layer inside the transformer
blocks (self- and cross-attention projections, feed-forward) as int8 with one scale per tensor,
and quantizes their inputs on the fly per forward (PyTorch's dynamic quantization, the fbgemm /
x86 int8 kernels). The embedders, the output head, the norms and attention itself stay in float32.
The quality cost is measured with `longvid eval` (docs/benchmarks.md); the resume fingerprint of
the weights is taken from the float weights before quantizing, so a quantized run resumes like
any other.
"""

from __future__ import annotations

import warnings

import torch

from .errors import ConfigError
from .state import weights_fingerprint

MODES = ("none", "int8")


def quantize_transformer(model: torch.nn.Module, mode: str, device: torch.device) -> torch.nn.Module:
    """Quantize `model`'s blocks in place (mode 'int8'); 'none' returns it unchanged."""
    if mode == "none":
        return model
    if mode != "int8":
        raise ConfigError(f"runtime.quantize={mode!r}: use one of {', '.join(MODES)}")
    if device.type != "cpu" or model.compute_dtype != torch.float32:
        raise ConfigError("runtime.quantize=int8 runs on the CPU in float32: use --set runtime.device=cpu "
                          "--set runtime.dtype=float32, or --set runtime.quantize=none")
    from torch.ao.quantization import quantize_dynamic

    model._weights_fingerprint = weights_fingerprint(model)  # of the float weights (resume)
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        for block in model.blocks:
            quantize_dynamic(block, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    model._quantized = mode
    return model


def is_quantized(model: torch.nn.Module) -> bool:
    return getattr(model, "_quantized", "none") != "none"
