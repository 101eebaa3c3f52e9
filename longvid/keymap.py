"""Parameter names of the Wan2.1 transformer: the original release's <-> diffusers'.

The public checkpoints (the Wan2.1 base release and every streaming generator built on it:
Self-Forcing, CausVid, LongLive, Rolling Forcing, Reward Forcing) name tensors as the original
Wan code does (`blocks.3.self_attn.q.weight`); our model is diffusers' `WanTransformer3DModel`
(`blocks.3.attn1.to_q.weight`). The two tables below state the correspondence once, for module
paths; parameter names follow (module path + `.weight` / `.bias`, or the parameter itself for the
modulation tables). Both directions are exact inverses (tested), and the original -> diffusers
direction agrees with diffusers' own single-file converter (tested).

Training wrappers leave prefixes on the names: `model.` (Self-Forcing / LongLive generators),
`_fsdp_wrapped_module.` (FSDP, also inside blocks), `_orig_mod.` (torch.compile),
`_checkpoint_wrapped_module.` (activation checkpointing), `model.diffusion_model.` (ComfyUI
exports). `strip_wrappers` removes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Outside the blocks: original module/parameter path -> diffusers'.
TOP_LEVEL = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
}

# Inside `blocks.N.`: original -> diffusers. Note the swap: the original's affine `norm3` (before
# cross-attention) is diffusers' `norm2`; the modulated norms have no parameters.
PER_BLOCK = {
    **{f"{orig}.{p}": f"{new}.to_{p}" for orig, new in (("self_attn", "attn1"), ("cross_attn", "attn2"))
       for p in "qkv"},
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.o": "attn2.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    "modulation": "scale_shift_table",
}

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_WRAPPER_PREFIXES = ("model.diffusion_model.", "model.", "module.")
_WRAPPER_INFIXES = ("_fsdp_wrapped_module.", "_orig_mod.", "_checkpoint_wrapped_module.")


def _rename(name: str, top: Mapping[str, str], block: Mapping[str, str]) -> str | None:
    """Rename a module or parameter path by the longest table entry that is a prefix of it at a
    dot boundary; None if no entry matches."""

    def lookup(rest: str, table: Mapping[str, str]) -> str | None:
        best = None
        for old in table:
            if (rest == old or rest.startswith(old + ".")) and (best is None or len(old) > len(best)):
                best = old
        return None if best is None else table[best] + rest[len(best):]

    m = _BLOCK.match(name)
    if m:
        renamed = lookup(m.group(2), block)
        return None if renamed is None else f"blocks.{m.group(1)}.{renamed}"
    return lookup(name, top)


_TOP_INV = {v: k for k, v in TOP_LEVEL.items()}
_BLOCK_INV = {v: k for k, v in PER_BLOCK.items()}


def to_diffusers(name: str) -> str | None:
    """Original Wan name -> diffusers name (module path or parameter), None if unknown."""
    return _rename(name, TOP_LEVEL, PER_BLOCK)


def to_original(name: str) -> str | None:
    """diffusers name -> original Wan name, None if unknown."""
    return _rename(name, _TOP_INV, _BLOCK_INV)


def strip_wrappers(name: str) -> str:
    """Remove training-wrapper prefixes/infixes (`model.`, `_fsdp_wrapped_module.`, ...)."""
    for infix in _WRAPPER_INFIXES:
        name = name.replace(infix, "")
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


def naming(keys: Iterable[str]) -> str:
    """'original', 'diffusers' or 'unknown': which convention a set of (stripped) names uses."""
    keys = list(keys)
    if any(k.startswith(("condition_embedder.", "proj_out.")) or ".attn1." in k for k in keys):
        return "diffusers"
    if any(k.startswith(("head.head.", "time_projection.", "text_embedding.")) or ".self_attn." in k
           for k in keys):
        return "original"
    return "unknown"


def state_to_diffusers(state: Mapping[str, object]) -> tuple[dict[str, object], list[str]]:
    """Strip wrappers and rename a state dict to diffusers' names.

    Returns (renamed state, names that match neither convention). Names already in diffusers'
    convention pass through unchanged.
    """
    stripped = {strip_wrappers(k): v for k, v in state.items()}
    if naming(stripped) != "original":
        return stripped, []
    out, unknown = {}, []
    for key, value in stripped.items():
        new = to_diffusers(key)
        if new is None:
            unknown.append(key)
            out[key] = value
        else:
            out[new] = value
    return out, unknown


def state_to_original(state: Mapping[str, object]) -> dict[str, object]:
    """diffusers' names -> the original release's (for export and tests)."""
    out = {}
    for key, value in state.items():
        new = to_original(key)
        if new is None:
            raise KeyError(f"{key} has no original Wan name")
        out[new] = value
    return out
