"""LoRA adapters on the transformer's Linear layers: merged into the weights, or kept separate.

A LoRA pair for a Linear W (out, in) is A (r, in) and B (out, r); the layer computes
W x + b + s * B A x with s = alpha / r. LongLive ships one (peft, r = alpha = 256) over every
Linear inside the attention blocks.

- `merge_lora`: W <- W + s * B A, once at load (default): no cost per forward.
- `attach_lora`: keep A and B as `lora` submodules of each Linear and add s * B A x in a forward
  hook: the base weights stay untouched (to compare, swap or drop the adapter).

Both take pairs keyed by diffusers module paths (`blocks.0.attn1.to_q`); `longvid.loading`
reads the file and renames peft's keys. The two give the same output (tested).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from longvid.errors import WeightsError

LoraPairs = Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # module path -> (A (r, in), B (out, r))


def _linear(model: nn.Module, path: str, source: str) -> nn.Linear:
    try:
        module = model.get_submodule(path)
    except AttributeError:
        module = None
    if not isinstance(module, nn.Linear):
        raise WeightsError(f"{source}: LoRA targets {path}, which is not a Linear layer of the model; "
                           "check that the LoRA belongs to this checkpoint and config")
    return module


def check_pairs(model: nn.Module, pairs: LoraPairs, source: str) -> None:
    """Every pair targets a Linear of the model, with shapes that fit it."""
    wrong = []
    for path, (a, b) in pairs.items():
        layer = _linear(model, path, source)
        out_f, in_f = layer.weight.shape
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != in_f or b.shape[0] != out_f or a.shape[0] != b.shape[1]:
            wrong.append(f"{path} A {tuple(a.shape)} B {tuple(b.shape)} for a {in_f}->{out_f} layer")
    if wrong:
        shown = ", ".join(wrong[:3]) + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else "")
        raise WeightsError(f"{source}: LoRA shapes do not fit the model: {shown}")


def lora_scale(pairs: LoraPairs, alpha: float | None) -> float:
    """alpha / r (1 when alpha is None, i.e. alpha = r)."""
    ranks = {a.shape[0] for a, _ in pairs.values()}
    if len(ranks) != 1:
        raise WeightsError(f"LoRA pairs have mixed ranks {sorted(ranks)}; give one adapter at a time")
    rank = ranks.pop()
    return 1.0 if alpha is None else float(alpha) / rank


@torch.no_grad()
def merge_lora(model: nn.Module, pairs: LoraPairs, scale: float, source: str = "LoRA") -> None:
    """W <- W + scale * B A for every pair, computed in float32 and cast back."""
    check_pairs(model, pairs, source)
    for path, (a, b) in pairs.items():
        layer = _linear(model, path, source)
        delta = scale * (b.float() @ a.float())
        layer.weight.copy_((layer.weight.float() + delta.to(layer.weight.device)).to(layer.weight.dtype))


class LoraAdapter(nn.Module):
    """x -> scale * B A x, in the layer's dtype."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.down = nn.Parameter(a.clone(), requires_grad=False)  # (r, in)
        self.up = nn.Parameter(b.clone(), requires_grad=False)  # (out, r)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * nn.functional.linear(nn.functional.linear(x, self.down), self.up)


def _add_adapter(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output + layer.lora(inputs[0])


def attach_lora(model: nn.Module, pairs: LoraPairs, scale: float, source: str = "LoRA") -> int:
    """Keep the LoRA separate: each target Linear gets a `lora` submodule and a forward hook.
    Returns the number of layers adapted."""
    check_pairs(model, pairs, source)
    for path, (a, b) in pairs.items():
        layer = _linear(model, path, source)
        if hasattr(layer, "lora"):
            raise WeightsError(f"{source}: {path} already carries a LoRA; attach one adapter at a time")
        w = layer.weight
        layer.lora = LoraAdapter(a.to(w.device, w.dtype), b.to(w.device, w.dtype), scale)
        layer.register_forward_hook(_add_adapter)
    return len(pairs)
