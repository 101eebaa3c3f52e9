"""The causal Wan transformer: diffusers' `WanTransformer3DModel`, made causal over frame chunks.

We keep diffusers' blocks and parameter names (so the public checkpoints load unchanged) and
replace three things:

1. the forward: a timestep per latent frame. Frames are folded into the batch around each block
   ((B, F*T, C) -> (B*F, T, C)) so diffusers' block modulates every frame with its own
   shift/scale/gate, with no per-token copy of the time embedding;
2. the self-attention processor: it hands its keys/values (before RoPE) to an attention source
   (the KV cache, or the chunk itself for an uncached forward), rotates queries and keys at
   attention time from frame positions (no position table, so no length ceiling), and attends;
3. the cross-attention processor: keys/values of the prompt are computed once per prompt
   (`text_context`) and reused by every forward.

The per-forward state reaches the processors through the arguments diffusers' block passes
through untouched (`rotary_emb` for self-attention, `encoder_hidden_states` for cross-attention).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from einops import rearrange

try:  # optional, GPU only
    from flash_attn import flash_attn_func  # type: ignore
except Exception:  # noqa: BLE001 - any import failure means "not available"
    flash_attn_func = None


# --------------------------------------------------------------------------------------- RoPE
class FrameRope:
    """Wan's 3D rotary embedding, computed from frame positions on demand.

    head_dim is split into time / height / width parts as in Wan (for 128: 44/42/42 channels,
    i.e. 22/21/21 rotation pairs); channel pairs (2i, 2i+1) rotate by angle pos * theta^(-2i/d).
    Angles are computed in float64, so positions far past Wan's 1024-entry table stay exact.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        self.h_dim = self.w_dim = 2 * (head_dim // 6)
        self.t_dim = head_dim - self.h_dim - self.w_dim
        self.theta = theta
        self._grid_cache: dict[tuple[int, int], torch.Tensor] = {}

    def _inv_freq(self, dim: int) -> torch.Tensor:
        return 1.0 / (self.theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))

    def _grid_angles(self, height: int, width: int) -> torch.Tensor:
        """(height*width, (h_dim + w_dim)/2) angles of the spatial axes."""
        key = (height, width)
        if key not in self._grid_cache:
            ah = torch.outer(torch.arange(height, dtype=torch.float64), self._inv_freq(self.h_dim))
            aw = torch.outer(torch.arange(width, dtype=torch.float64), self._inv_freq(self.w_dim))
            grid = torch.cat(
                [ah[:, None, :].expand(height, width, -1), aw[None, :, :].expand(height, width, -1)], dim=-1
            )
            self._grid_cache[key] = grid.reshape(height * width, -1)
        return self._grid_cache[key]

    def __call__(self, positions: torch.Tensor, height: int, width: int, device: torch.device):
        """positions (N,) frame positions -> (cos, sin), each (N*height*width, head_dim/2)."""
        at = torch.outer(positions.to(torch.float64).cpu(), self._inv_freq(self.t_dim))  # (N, t/2)
        grid = self._grid_angles(height, width)  # (T, (h+w)/2)
        n, t = at.shape[0], grid.shape[0]
        angles = torch.cat([at[:, None, :].expand(n, t, -1), grid[None].expand(n, t, -1)], dim=-1)
        angles = angles.reshape(n * t, -1)
        return angles.cos().float().to(device), angles.sin().float().to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (B, H, L, D) by the angles (L, D/2); computed in float32."""
    return apply_rope_complex(x, torch.complex(cos, sin))


def apply_rope_complex(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """`apply_rope` with the rotations as one complex64 tensor (L, D/2) = cos + i sin: pair
    (x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos) in one complex multiply, the same float32
    arithmetic as the real form (bit-identical) and ~15x faster on a CPU than unbind / stack."""
    pairs = x.float().unflatten(-1, (-1, 2))
    try:
        xc = torch.view_as_complex(pairs)
    except RuntimeError:  # a view whose strides do not allow it
        xc = torch.view_as_complex(pairs.contiguous())
    return torch.view_as_real(xc * freqs).flatten(-2).type_as(x)


# -------------------------------------------------------------------------------- attention
def use_flash_attention(backend: str, device_type: str, dtype: torch.dtype, masked: bool,
                        available: bool) -> bool:
    """flash-attn runs only when installed, on CUDA, in half precision, without a mask, and not
    switched off (backend 'sdpa'). Asking for 'flash' without it installed is an error."""
    if backend == "flash" and not available:
        raise RuntimeError("runtime.attention is 'flash' but flash-attn is not installed: "
                           "pip install longvid[gpu], or use --set runtime.attention=auto")
    return (backend in ("auto", "flash") and available and not masked and device_type == "cuda"
            and dtype in (torch.float16, torch.bfloat16))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
           backend: str = "auto") -> torch.Tensor:
    """Softmax attention over (B, H, L, D) tensors: flash-attn where `use_flash_attention`
    allows, PyTorch SDPA otherwise (its CPU kernel takes masks)."""
    if use_flash_attention(backend, q.device.type, q.dtype, mask is not None, flash_attn_func is not None):
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@dataclass
class TextContext:
    """A prompt, ready for cross-attention: the encoder's embeddings (N, L, text_dim) and, per
    layer, the projected keys/values (N, H, L, D). Computed once per prompt.

    `frame_index` (B*F,) optionally gives each latent frame its own prompt (row of kv): used in
    training, where the frames of one sequence were captioned differently.
    """

    embeds: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    frame_index: torch.Tensor | None = None

    def per_frame(self, frame_index: torch.Tensor) -> TextContext:
        return TextContext(self.embeds, self.kv, frame_index)


@dataclass
class _ForwardState:
    """What the processors of one forward share."""

    batch: int
    frames: int
    text: TextContext
    kv: Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    rope_q: torch.Tensor  # complex (L_q, D/2): see apply_rope_complex
    rope_k: torch.Tensor
    mask: torch.Tensor | None
    backend: str


def _split_heads(x: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    # (B*F, T, H*D) -> (B, H, F*T, D)
    return rearrange(x, "(b f) t (h d) -> b h (f t) d", b=batch, h=heads)


def _merge_heads(x: torch.Tensor, frames: int) -> torch.Tensor:
    # (B, H, F*T, D) -> (B*F, T, H*D)
    return rearrange(x, "b h (f t) d -> (b f) t (h d)", f=frames)


class CausalSelfAttention:
    """Self-attention over the chunk and whatever the attention source holds (the KV cache)."""

    def __init__(self, layer: int) -> None:
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 rotary_emb: _ForwardState | None = None, **kwargs):
        s = rotary_emb
        q = _split_heads(attn.norm_q(attn.to_q(hidden_states)), s.batch, attn.heads)
        k = _split_heads(attn.norm_k(attn.to_k(hidden_states)), s.batch, attn.heads)
        v = _split_heads(attn.to_v(hidden_states), s.batch, attn.heads)
        k_all, v_all = s.kv(self.layer, k, v)  # keys are stored before RoPE
        q = apply_rope_complex(q, s.rope_q)
        k_all = apply_rope_complex(k_all, s.rope_k)
        out = attend(q, k_all, v_all, s.mask, s.backend)
        out = _merge_heads(out.type_as(hidden_states), s.frames)
        return attn.to_out[1](attn.to_out[0](out))


class CachedCrossAttention:
    """Cross-attention to a prompt whose keys/values were computed once (`TextContext`)."""

    def __init__(self, layer: int) -> None:
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states: _ForwardState = None,
                 attention_mask=None, rotary_emb=None, **kwargs):
        s = encoder_hidden_states
        q = attn.norm_q(attn.to_q(hidden_states))  # (B*F, T, H*D)
        k, v = s.text.kv[self.layer]
        if s.text.frame_index is not None:  # every frame its own prompt
            q = rearrange(q, "n t (h d) -> n h t d", h=attn.heads)
            idx = s.text.frame_index.to(k.device)
            out = rearrange(attend(q, k[idx], v[idx], None, s.backend), "n h t d -> n t (h d)")
        else:
            q = _split_heads(q, s.batch, attn.heads)
            if k.shape[0] != s.batch:
                k, v = k.expand(s.batch, -1, -1, -1), v.expand(s.batch, -1, -1, -1)
            out = _merge_heads(attend(q, k, v, None, s.backend), s.frames)
        return attn.to_out[1](attn.to_out[0](out.type_as(hidden_states)))


# ----------------------------------------------------------------------------------- model
class CausalWanTransformer(WanTransformer3DModel):
    """Wan2.1 DiT with per-frame timesteps, a KV cache and frame-position RoPE.

    Same constructor, config and parameter names as diffusers' `WanTransformer3DModel`.
    """

    attention_backend: str = "auto"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.frame_rope = FrameRope(self.config.attention_head_dim)
        for i, block in enumerate(self.blocks):
            block.attn1.set_processor(CausalSelfAttention(i))
            block.attn2.set_processor(CachedCrossAttention(i))

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the blocks' weights (some small modules stay in float32)."""
        return self.patch_embedding.weight.dtype

    def tokens_per_frame(self, latent_height: int, latent_width: int) -> int:
        _, ph, pw = self.config.patch_size
        return (latent_height // ph) * (latent_width // pw)

    def text_context(self, embeds: torch.Tensor) -> TextContext:
        """(B, L, text_dim) encoder output -> cross-attention keys/values of every layer.
        Differentiable when grad is enabled (training); call under no_grad at inference."""
        w = self.condition_embedder.text_embedder.linear_1.weight
        ctx = self.condition_embedder.text_embedder(embeds.to(w.device, w.dtype))
        kv = []
        for block in self.blocks:
            a = block.attn2
            k = rearrange(a.norm_k(a.to_k(ctx)), "b l (h d) -> b h l d", h=a.heads)
            v = rearrange(a.to_v(ctx), "b l (h d) -> b h l d", h=a.heads)
            kv.append((k, v))
        return TextContext(embeds=embeds, kv=kv)

    def embed_patches(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) latents -> tokens (B*F, gh*gw, dim): Wan's patch-embedding Conv3d
        (kernel = stride = patch), computed as the equivalent matmul over flattened patches with
        the same parameters. PyTorch's CPU bf16 kernel for that convolution returns wrong values
        for some shapes (16 input channels, (1, 4, 4) patches: ~120 % relative error under
        autocast in torch 2.13), and a training step under bf16 autocast would learn from them."""
        _, p_h, p_w = self.config.patch_size
        conv = self.patch_embedding
        patches = rearrange(hidden_states, "b c f (h ph) (w pw) -> (b f) (h w) (c ph pw)", ph=p_h, pw=p_w)
        return F.linear(patches, conv.weight.flatten(1), conv.bias)

    def _time_embedding(self, timestep: torch.Tensor, dtype: torch.dtype):
        """(B, F) timesteps -> temb (B*F, dim) and the blocks' modulation (B*F, 6, dim)."""
        emb = self.condition_embedder
        t = emb.timesteps_proj(timestep.flatten())
        t = t.to(next(emb.time_embedder.parameters()).dtype)
        temb = emb.time_embedder(t).to(dtype)
        proj = emb.time_proj(emb.act_fn(temb)).unflatten(1, (6, -1))
        return temb, proj

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        text: TextContext,
        *,
        cache=None,
        plan=None,
        frame_positions: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the flow for a chunk of latent frames.

        hidden_states: (B, C, F, H, W) noisy latents; timestep: (B, F) or (F,) per frame.
        With `cache` and `plan` (from `cache.plan`): attend to the cache, write this chunk's
        keys/values into it. Without: attend within the chunk, with `frame_positions` (F,)
        (default 0..F-1) and an optional frame-level `frame_mask`, (F, F) or per sample (B, F, F).
        Returns the flow (B, C_out, F, H, W).
        """
        B, _, nf, H, W = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        assert p_t == 1, "frame-causal attention needs a temporal patch of 1"
        gh, gw = H // p_h, W // p_w
        T = gh * gw
        device = hidden_states.device
        if timestep.ndim == 1:
            timestep = timestep[None].expand(B, -1)

        if cache is not None:
            q_pos, k_pos, fmask = plan.query_positions, plan.key_positions, plan.mask

            def kv(layer, k, v):
                return cache.update(layer, plan, k, v)
        else:
            q_pos = frame_positions if frame_positions is not None else torch.arange(nf)
            k_pos, fmask = q_pos, frame_mask

            def kv(layer, k, v):
                return k, v

        mask = None
        if fmask is not None:  # frame level -> token level; a per-sample mask broadcasts over heads
            mask = fmask.to(device).repeat_interleave(T, -2).repeat_interleave(T, -1)
            if mask.ndim == 3:
                mask = mask[:, None]
        state = _ForwardState(
            batch=B, frames=nf, text=text, kv=kv,
            rope_q=torch.complex(*self.frame_rope(q_pos, gh, gw, device)),
            rope_k=torch.complex(*self.frame_rope(k_pos, gh, gw, device)),
            mask=mask, backend=self.attention_backend,
        )

        x = self.embed_patches(hidden_states)  # (B*F, gh*gw, dim)
        temb, modulation = self._time_embedding(timestep, x.dtype)  # (B*F, dim), (B*F, 6, dim)

        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, state, modulation, state)
            else:
                x = block(x, state, modulation, state)

        shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        x = (self.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = self.proj_out(x)  # (B*F, T, C_out * p_h * p_w)
        return rearrange(
            x, "(b f) (h w) (ph pw c) -> b c f (h ph) (w pw)", b=B, h=gh, w=gw, ph=p_h, pw=p_w
        )


def build_transformer(model_cfg, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> CausalWanTransformer:
    """Construct the transformer from a `ModelConfig` (weights are random until loaded)."""
    model = CausalWanTransformer(
        patch_size=tuple(model_cfg.patch_size),
        num_attention_heads=model_cfg.num_heads,
        attention_head_dim=model_cfg.head_dim,
        in_channels=model_cfg.in_channels,
        out_channels=model_cfg.out_channels,
        text_dim=model_cfg.text_dim,
        freq_dim=model_cfg.freq_dim,
        ffn_dim=model_cfg.ffn_dim,
        num_layers=model_cfg.num_layers,
        cross_attn_norm=model_cfg.cross_attn_norm,
        qk_norm=model_cfg.qk_norm,
        eps=model_cfg.eps,
    )
    return cast_model(model.to(device), dtype)


def cast_model(model: CausalWanTransformer, dtype: torch.dtype) -> CausalWanTransformer:
    """Cast to `dtype`, keeping the modules Wan runs in float32 (time embedding, norms,
    modulation tables) in float32, as diffusers' from_pretrained does."""
    if dtype == torch.float32:
        return model.float()
    keep = model._keep_in_fp32_modules or []
    for name, module in model.named_modules():
        fp32 = any(part in keep for part in name.split("."))
        for pname, param in module.named_parameters(recurse=False):
            param.data = param.data.to(torch.float32 if fp32 else dtype)
    for name, param in model.named_parameters():
        if "scale_shift_table" in name:
            param.data = param.data.float()
    return model


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "CausalWanTransformer", "TextContext", "FrameRope", "apply_rope", "apply_rope_complex", "attend",
    "build_transformer", "num_parameters",
]
