"""The causal Wan transformer is diffusers' Wan: same forward, same RoPE, per-frame timesteps."""

import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformer3DModel

from longvid.model import CausalWanTransformer, FrameRope, apply_rope

KW = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
          out_channels=4, text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2)


def pair():
    torch.manual_seed(0)
    ref = WanTransformer3DModel(**KW).eval()
    ours = CausalWanTransformer(**KW).eval()
    ours.load_state_dict(ref.state_dict())  # same parameter names
    return ref, ours


def test_same_parameters_as_diffusers():
    ref, ours = pair()
    assert list(ref.state_dict()) == list(ours.state_dict())


def test_forward_equals_diffusers_uniform_timestep():
    ref, ours = pair()
    x, txt = torch.randn(1, 4, 5, 8, 8), torch.randn(1, 7, 16)
    with torch.no_grad():
        a = ref(x, torch.tensor([500.0]), txt).sample
        b = ours(x, torch.full((5,), 500.0), ours.text_context(txt))
    assert torch.allclose(a, b, atol=1e-5)


def test_rope_equals_diffusers_table_and_has_no_ceiling():
    d = 12
    table = WanRotaryPosEmbed(d, (1, 2, 2), 1024)
    cos_ref, sin_ref = table(torch.zeros(1, 4, 5, 8, 8))  # (1, 5*4*4, 1, d)
    cos, sin = FrameRope(d)(torch.arange(5), 4, 4, torch.device("cpu"))
    x = torch.randn(1, 1, 80, d)
    ref = x.clone()
    x1, x2 = ref.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos_ref[0, :, 0, 0::2].float(), sin_ref[0, :, 0, 1::2].float()
    ref = torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1).flatten(-2)
    assert torch.allclose(apply_rope(x, cos, sin), ref, atol=1e-5)
    # positions far past Wan's 1024-frame table: relative rotation is what matters
    far = FrameRope(d)(torch.tensor([5000, 5003]), 1, 1, torch.device("cpu"))
    near = FrameRope(d)(torch.tensor([0, 3]), 1, 1, torch.device("cpu"))
    q, k = torch.randn(1, 1, 1, d), torch.randn(1, 1, 1, d)
    score_far = (apply_rope(q, far[0][1:], far[1][1:]) * apply_rope(k, far[0][:1], far[1][:1])).sum()
    score_near = (apply_rope(q, near[0][1:], near[1][1:]) * apply_rope(k, near[0][:1], near[1][:1])).sum()
    assert torch.allclose(score_far, score_near, atol=1e-4)


def test_per_frame_timesteps():
    _, m = pair()
    x, ctx = torch.randn(1, 4, 2, 8, 8), m.text_context(torch.randn(1, 7, 16))
    alone = torch.eye(2, dtype=torch.bool)  # each frame attends to itself only
    with torch.no_grad():
        mixed = m(x, torch.tensor([900.0, 100.0]), ctx, frame_mask=alone)
        a = m(x[:, :, :1], torch.tensor([900.0]), ctx)
        b = m(x[:, :, 1:], torch.tensor([100.0]), ctx, frame_positions=torch.tensor([1]))
    assert torch.allclose(mixed[:, :, :1], a, atol=1e-5)
    assert torch.allclose(mixed[:, :, 1:], b, atol=1e-5)
    assert not torch.allclose(mixed[:, :, :1], m(x[:, :, :1], torch.tensor([100.0]), ctx), atol=1e-3)


def test_text_context_is_reused():
    _, m = pair()
    txt = torch.randn(1, 7, 16)
    ctx = m.text_context(txt)
    calls = []
    hook = m.blocks[0].attn2.to_k.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(1, 4, 3, 8, 8)
    with torch.no_grad():
        m(x, torch.full((3,), 500.0), ctx)
        m(x, torch.full((3,), 250.0), ctx)
    hook.remove()
    assert calls == []  # cross-attention keys are not recomputed per forward


def test_per_frame_prompts_and_per_sample_masks():
    """Training batches mix prompts within a sequence and masks across samples."""
    _, m = pair()
    a, b = torch.randn(1, 7, 16), torch.randn(1, 7, 16)
    both = m.text_context(torch.cat([a, b]))
    x = torch.randn(2, 4, 3, 8, 8)
    t = torch.tensor([[900.0, 500.0, 0.0], [100.0, 100.0, 700.0]])
    causal = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    masks = torch.stack([causal, torch.eye(3, dtype=torch.bool)])  # sample 1: frames alone
    index = torch.tensor([0, 0, 1, 1, 0, 1])  # (B*F,): sample 0 frames A A B, sample 1 B A B
    with torch.no_grad():
        mixed = m(x, t, both.per_frame(index), frame_mask=masks)
        # sample 0, frames 0-1 under A only see frames 0-1 (causal): equal to a 2-frame forward
        ref = m(x[:1, :, :2], t[:1, :2], m.text_context(a), frame_mask=causal[:2, :2])
        alone_b = m(x[1:, :, :1], t[1:, :1], m.text_context(b))
        alone_a = m(x[1:, :, 1:2], t[1:, 1:2], m.text_context(a), frame_positions=torch.tensor([1]))
    assert torch.allclose(mixed[:1, :, :2], ref, atol=1e-5)
    assert torch.allclose(mixed[1:, :, :1], alone_b, atol=1e-5)  # frame 0 of sample 1: prompt B
    assert torch.allclose(mixed[1:, :, 1:2], alone_a, atol=1e-5)  # frame 1: prompt A


def test_flash_attention_dispatch():
    from longvid.model import use_flash_attention as use

    bf16, fp32 = torch.bfloat16, torch.float32
    assert use("auto", "cuda", bf16, masked=False, available=True)
    assert not use("auto", "cuda", bf16, masked=True, available=True)  # masks need SDPA
    assert not use("auto", "cuda", fp32, masked=False, available=True)
    assert not use("auto", "cpu", bf16, masked=False, available=True)
    assert not use("sdpa", "cuda", bf16, masked=False, available=True)
    assert not use("auto", "cuda", bf16, masked=False, available=False)  # not installed: SDPA
    import pytest

    with pytest.raises(RuntimeError, match="flash-attn is not installed"):
        use("flash", "cuda", bf16, masked=False, available=False)


def test_flash_path_layout(monkeypatch):
    """When flash-attn is used, it gets (B, L, H, D) tensors and its output is turned back."""
    import longvid.model as lm

    calls = []

    def fake_flash(q, k, v):
        calls.append(q.shape)
        return torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    monkeypatch.setattr(lm, "flash_attn_func", fake_flash)
    monkeypatch.setattr(lm, "use_flash_attention", lambda *a: True)
    q, k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 7, 4), torch.randn(1, 2, 7, 4)
    out = lm.attend(q, k, v, None)
    assert calls == [(1, 5, 2, 4)]
    assert torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-6)


def test_bf16_model_keeps_fp32_modules_and_tracks_fp32():
    from longvid.model import cast_model

    ref, ours = pair()
    half = cast_model(CausalWanTransformer(**KW).eval(), torch.bfloat16)
    half.load_state_dict(ref.state_dict())
    assert half.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert half.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert half.blocks[0].scale_shift_table.dtype == torch.float32
    x, txt = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 7, 16)
    with torch.no_grad():
        a = ours(x, torch.full((3,), 500.0), ours.text_context(txt))
        b = half(x.bfloat16(), torch.full((3,), 500.0), half.text_context(txt)).float()
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert (a - b).abs().mean() < 0.05 * a.abs().mean()


def test_patch_embedding_is_wans_conv_and_survives_cpu_bf16_autocast():
    """The patch embedding is Wan's Conv3d (same parameters, same values in float32), and under
    CPU bf16 autocast (how scripts/train_generator.py trains) the model still tracks float32.
    With the Conv3d itself, PyTorch's CPU bf16 kernel for 16 channels and (1, 4, 4) patches
    (the built-in model's shape) returns values ~120 % off, and training learned from them."""
    kw = dict(KW, patch_size=(1, 4, 4), in_channels=16, out_channels=16)
    torch.manual_seed(0)
    model = CausalWanTransformer(**kw).eval()
    x, txt = torch.randn(2, 16, 3, 8, 8), torch.randn(2, 7, 16)
    with torch.no_grad():
        conv = model.patch_embedding(x).flatten(3).permute(0, 2, 3, 1).flatten(0, 1)  # (B*F, T, dim)
        assert torch.allclose(model.embed_patches(x), conv, atol=1e-5)
        full = model(x, torch.full((3,), 700.0), model.text_context(txt))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x, torch.full((3,), 700.0), model.text_context(txt)).float()
    assert (half - full).norm() / full.norm() < 0.05
