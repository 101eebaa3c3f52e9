"""Fake public checkpoints at tiny sizes, with the exact names and dict structure of the real files.

Layouts (see docs/models.md and longvid/loading.py):
- the Wan2.1-T2V-1.3B base directory, original layout: `config.json`,
  `diffusion_pytorch_model.safetensors` (original names), `Wan2.1_VAE.pth` (original VAE names);
- the same in diffusers' layout: `transformer/` (sharded, with an index), `vae/`;
- generator checkpoints (.pt): `generator` / `generator_ema` (Self-Forcing, Rolling / Reward
  Forcing: names prefixed `model.`, EMA copies with `_fsdp_wrapped_module.`), `model`, raw;
- LongLive's `lora.pt`: {'generator_lora': peft names, 'critic_lora': ..., 'step': int}.

Original transformer names come from our own table (checked against a hand-written list from
reference.md and against diffusers' converter in test_checkpoints); original VAE names from
`original_vae_name`, checked against diffusers' converter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import save_file

from longvid import keymap

# A tiny VAE with Wan2.1's structure (4 stages, 2 res blocks, 2 temporal downsamples): the
# original-layout converter assumes it.
TINY_VAE = dict(base_dim=4, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.7, 2.0, 1.0])

_RES = {"norm1.gamma": "residual.0.gamma", "conv1.weight": "residual.2.weight", "conv1.bias": "residual.2.bias",
        "norm2.gamma": "residual.3.gamma", "conv2.weight": "residual.6.weight", "conv2.bias": "residual.6.bias",
        "conv_shortcut.weight": "shortcut.weight", "conv_shortcut.bias": "shortcut.bias"}


def original_vae_name(name: str) -> str:
    """diffusers' AutoencoderKLWan name -> the original Wan2.1 VAE name (Wan2.1_VAE.pth)."""
    top = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
    head, _, rest = name.partition(".")
    if head in top:
        return f"{top[head]}.{rest}"
    part, sub = head, rest  # encoder / decoder
    for old, new in (("conv_in.", "conv1."), ("norm_out.gamma", "head.0.gamma"), ("conv_out.", "head.2.")):
        if sub.startswith(old):
            return f"{part}.{new}{sub[len(old):]}"
    m = re.match(r"mid_block\.resnets\.(\d)\.(.+)$", sub)
    if m:
        return f"{part}.middle.{2 * int(m.group(1))}.{_RES[m.group(2)]}"
    m = re.match(r"mid_block\.attentions\.0\.(.+)$", sub)
    if m:
        return f"{part}.middle.1.{m.group(1)}"
    m = re.match(r"down_blocks\.(\d+)\.(.+)$", sub)
    if m:
        return f"{part}.downsamples.{m.group(1)}.{_RES.get(m.group(2), m.group(2))}"
    m = re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", sub)
    if m:
        return f"{part}.upsamples.{4 * int(m.group(1)) + int(m.group(2))}.{_RES[m.group(3)]}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)$", sub)
    if m:
        return f"{part}.upsamples.{4 * int(m.group(1)) + 3}.{m.group(2)}"
    raise KeyError(name)


def tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**TINY_VAE).eval()
    with torch.no_grad():
        for p in vae.parameters():  # distinct values everywhere, so a misplaced tensor shows
            p.copy_(torch.randn_like(p) * 0.1)
    return vae


def random_state(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state dict for `model` with seeded random values (distinct per tensor)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen, dtype=torch.float32) * 0.05
            for k, v in model.state_dict().items()}


def original_config(model) -> dict:
    c = model.config
    dim = c.num_attention_heads * c.attention_head_dim
    return {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "model_type": "t2v",
            "dim": dim, "ffn_dim": c.ffn_dim, "freq_dim": c.freq_dim, "in_dim": c.in_channels,
            "out_dim": c.out_channels, "num_heads": c.num_attention_heads, "num_layers": c.num_layers,
            "text_len": 512, "eps": 1e-6}


def write_original_base(root: Path, model, state: dict, vae: AutoencoderKLWan) -> Path:
    """Wan2.1-T2V-1.3B/ as released: original names, safetensors transformer, .pth VAE."""
    d = root / "Wan2.1-T2V-1.3B"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(original_config(model)))
    save_file({k: v.contiguous() for k, v in keymap.state_to_original(state).items()},
              str(d / "diffusion_pytorch_model.safetensors"))
    torch.save({original_vae_name(k): v for k, v in vae.state_dict().items()}, d / "Wan2.1_VAE.pth")
    return d


def write_diffusers_base(root: Path, model, state: dict, vae: AutoencoderKLWan) -> Path:
    """Wan2.1-T2V-1.3B-Diffusers/: transformer/ in two shards with an index, vae/."""
    d = root / "Wan2.1-T2V-1.3B-Diffusers"
    t = d / "transformer"
    t.mkdir(parents=True)
    cfg = {"_class_name": "WanTransformer3DModel", **{k: v for k, v in model.config.items() if not k.startswith("_")}}
    (t / "config.json").write_text(json.dumps(cfg, default=list))
    keys = list(state)
    half = len(keys) // 2
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[:half],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[half:]}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: state[k].contiguous() for k in ks}, str(t / name))
        weight_map.update({k: name for k in ks})
    (t / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    vae.save_pretrained(d / "vae", safe_serialization=True)
    return d


def generator_checkpoint(state: dict, ema: dict | None = None) -> dict:
    """Self-Forcing-style training checkpoint: original names under `model.`; the EMA copy
    carries FSDP's `_fsdp_wrapped_module.` as well."""
    orig = keymap.state_to_original(state)
    out = {"generator": {f"model.{k}": v for k, v in orig.items()}}
    if ema is not None:
        out["generator_ema"] = {f"_fsdp_wrapped_module.model.{k}": v for k, v in keymap.state_to_original(ema).items()}
    return out


def lora_targets(model) -> list[str]:
    """Original module paths of every Linear inside the blocks: LongLive's trainer/distillation.py
    targets every nn.Linear inside each CausalWanAttentionBlock (self_attn q/k/v/o, cross_attn
    q/k/v/o, ffn.0, ffn.2)."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("blocks."):
            names.append(keymap.to_original(name))
    return names


def _peft_lora(model, rank: int, gen: torch.Generator, adapter: str = "") -> dict[str, torch.Tensor]:
    lora = {}
    for path in lora_targets(model):
        layer = model.get_submodule(keymap.to_diffusers(path))
        out_f, in_f = layer.weight.shape
        lora[f"base_model.model.{path}.lora_A{adapter}.weight"] = torch.randn(rank, in_f, generator=gen) * 0.1
        lora[f"base_model.model.{path}.lora_B{adapter}.weight"] = torch.randn(out_f, rank, generator=gen) * 0.1
    return lora


def lora_checkpoint(model, rank: int, seed: int = 0, adapter: str = "") -> dict:
    """LongLive's lora.pt as trainer/distillation.py saves it: {"generator_lora": ..., "critic_lora":
    ..., "step": int}, each LoRA being peft.get_peft_model_state_dict of a peft.get_peft_model
    wrapper: `base_model.model.<original module path>.lora_{A,B}.weight` (peft drops the adapter
    name `.default`; `adapter=".default"` writes the un-dropped form a raw PeftModel.state_dict()
    has). The critic's LoRA (on the fake-score model) is there too and must be ignored."""
    gen = torch.Generator().manual_seed(seed)
    generator = _peft_lora(model, rank, gen, adapter)
    critic = _peft_lora(model, rank, gen, adapter)
    return {"generator_lora": generator, "critic_lora": critic, "step": 600}


# --- TAEHV's taew2_1.pth --------------------------------------------------------------------------
# The public file's names and shapes, written out by hand from madebyollin/taehv's taehv.py (TAEHV
# with patch_size 1, 16 latent channels, encoder time downscale (2, 2, 1), decoder time upscale
# (1, 2, 2), space upscale x2 x3; channels 64 in the encoder, 256 / 128 / 64 / 64 in the decoder).
# Not derived from longvid.taehv, so a layout change there shows up as a mismatch here.


def _memblock(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    # conv3x3(2c -> c), ReLU, conv3x3, ReLU, conv3x3 (Sequential indices 0, 2, 4); skip is Identity
    return {f"{prefix}.conv.0.weight": (c, 2 * c, 3, 3), f"{prefix}.conv.0.bias": (c,),
            f"{prefix}.conv.2.weight": (c, c, 3, 3), f"{prefix}.conv.2.bias": (c,),
            f"{prefix}.conv.4.weight": (c, c, 3, 3), f"{prefix}.conv.4.bias": (c,)}


def taew2_1_layout(tgrow0_rows: int = 256) -> dict[str, tuple[int, ...]]:
    """{name: shape} of taew2_1.pth. `tgrow0_rows`: rows of decoder.7 (the stride-1 TGrow); the
    public loader accepts a file that stores more (it keeps the last 256)."""
    enc: dict[str, tuple[int, ...]] = {"encoder.0.weight": (64, 3, 3, 3), "encoder.0.bias": (64,)}
    for tpool, conv, mbs, stride in ((2, 3, (4, 5, 6), 2), (7, 8, (9, 10, 11), 2), (12, 13, (14, 15, 16), 1)):
        enc[f"encoder.{tpool}.conv.weight"] = (64, 64 * stride, 1, 1)
        enc[f"encoder.{conv}.weight"] = (64, 64, 3, 3)
        for i in mbs:
            enc.update(_memblock(f"encoder.{i}", 64))
    enc |= {"encoder.17.weight": (16, 64, 3, 3), "encoder.17.bias": (16,)}

    dec: dict[str, tuple[int, ...]] = {"decoder.1.weight": (256, 16, 3, 3), "decoder.1.bias": (256,)}
    stages = ((256, 128, (3, 4, 5), 7, 8, tgrow0_rows), (128, 64, (9, 10, 11), 13, 14, 256),
              (64, 64, (15, 16, 17), 19, 20, 128))
    for c_in, c_out, mbs, tgrow, conv, rows in stages:
        for i in mbs:
            dec.update(_memblock(f"decoder.{i}", c_in))
        dec[f"decoder.{tgrow}.conv.weight"] = (rows, c_in, 1, 1)
        dec[f"decoder.{conv}.weight"] = (c_out, c_in, 3, 3)  # no bias
    dec |= {"decoder.22.weight": (3, 64, 3, 3), "decoder.22.bias": (3,)}
    return enc | dec


def taew2_1_state(tgrow0_rows: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fake taew2_1.pth state dict: the public names and shapes, seeded small random values."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) * 0.05 for k, shape in taew2_1_layout(tgrow0_rows).items()}
