"""The engine: cached generation equals a full recompute, determinism, recache, long streams."""

import pytest
import torch

from longvid.cache import dense_mask
from longvid.pipeline import frame_noise
from longvid.timeline import Prompt, Timeline, single

from conftest import tiny_config, tiny_pipeline

SCHEDULES = [
    dict(kind="block"),
    dict(kind="lagged", ar_step=2),
    dict(kind="rolling", timesteps=[1000, 800, 600, 400, 200]),
]
CACHES = [
    dict(sink_frames=3, window_frames=6),  # sink + window, with eviction over the stream
    dict(sink_frames=0, window_frames=6),  # window only
    dict(sink_frames=0, window_frames=60),  # everything fits: plain block-causal attention
]


def timeline(seconds=10.0, prompts=("a red circle",)):
    n = len(prompts)
    ps = tuple(Prompt(p, i * seconds / n, 0) for i, p in enumerate(prompts))
    from longvid.timeline import seconds_to_latent_frame
    ps = tuple(Prompt(p.text, p.start_seconds, seconds_to_latent_frame(p.start_seconds, 16, 4)) for p in ps)
    return Timeline(ps, seconds, 16, 4)


def cached_latents(pipe, tl, seed=0):
    return torch.cat([lat for _, lat, _ in pipe.latents(tl, seed)], dim=2)


def recompute_latents(pipe, tl, seed=0):
    """Reference: no KV cache. Every denoising step runs one forward over all committed frames
    (clean, t = 0) and the frames in flight, under the sink/window block-causal mask; with
    guidance, a second one under the negative prompt (the committed frames stay clean frames
    seen under the prompt, as in the cache)."""
    cfg, sched, flow = pipe.config, pipe.schedule, pipe.flow
    shape = (pipe.latent_channels, *pipe.latent_hw)
    with torch.no_grad():
        ctx = pipe.model.text_context(pipe.text_encoder.encode([tl.prompts[0].text]))
        both = pipe.model.text_context(pipe.text_encoder.encode([tl.prompts[0].text, cfg.schedule.negative_prompt]))
    g = cfg.schedule.guidance
    x, clean = {}, {}
    for st in sched.steps(tl.num_latent_frames):
        if st.commit:
            continue
        n = st.start
        for f, lvl in zip(st.frames, st.denoise_index.tolist()):
            if lvl == 0:
                x[f] = frame_noise(seed, f, 0, shape)
        xs = torch.stack([clean[f] for f in range(n)] + [x[f] for f in st.frames], dim=1)[None]
        t = torch.cat([torch.zeros(n), st.t])
        mask = dense_mask(xs.shape[2], sched.block_frames, cfg.cache.sink_frames,
                          cfg.cache.window_frames, in_flight_from=n)
        with torch.no_grad():
            out = pipe.model(xs, t, ctx, frame_mask=mask)[:, :, n:]
            if g != 1.0:
                # the negative prompt for the frames in flight only: the committed frames'
                # keys/values were made under the prompt (the cache keeps them)
                index = torch.tensor([0] * n + [1] * len(st.frames))
                uncond = pipe.model(xs, t, both.per_frame(index), frame_mask=mask)[:, :, n:]
                out = uncond + g * (out - uncond)
        x0 = flow.to_x0(xs[:, :, n:], out, st.t)
        for i, f in enumerate(st.frames):
            if float(st.t_next[i]) > 0:
                noise = frame_noise(seed, f, int(st.denoise_index[i]) + 1, shape)[None, :, None]
                x[f] = flow.add_noise(x0[:, :, i : i + 1], noise, st.t_next[i : i + 1])[0, :, 0]
            else:
                clean[f] = x0[0, :, i]
    return torch.stack([clean[f] for f in sorted(clean)], dim=1)[None]


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: s["kind"])
@pytest.mark.parametrize("cache", CACHES, ids=["sink+window", "window", "no-eviction"])
def test_cache_equals_full_recompute(sched, cache):
    pipe = tiny_pipeline(tiny_config(schedule=sched, cache=cache))
    tl = timeline(6.0)  # 25 latent frames: the window slides several times
    a, b = cached_latents(pipe, tl), recompute_latents(pipe, tl)
    assert a.shape == b.shape == (1, 4, 25, 4, 4)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_guidance_equals_full_recompute_and_changes_the_video():
    """Classifier-free guidance through the cache: the second forward over the frames in flight
    must not disturb the cache (the result equals a cache-free recompute with guidance)."""
    tl = timeline(3.0)
    plain = cached_latents(tiny_pipeline(), tl)
    cfg = tiny_config(schedule=dict(guidance=3.0, negative_prompt="a blue square"))
    pipe = tiny_pipeline(cfg)
    guided = cached_latents(pipe, tl)
    assert pipe.stats.forwards > 0
    torch.testing.assert_close(guided, recompute_latents(tiny_pipeline(cfg), tl), atol=2e-4, rtol=2e-4)
    assert (guided - plain).abs().mean() > 0.05 * plain.abs().mean()


def test_cache_differs_from_recompute_if_the_mask_is_wrong():
    """The equality above is not vacuous: a recompute that ignores the window differs."""
    pipe = tiny_pipeline(tiny_config(cache=dict(sink_frames=3, window_frames=3)))
    tl = timeline(6.0)
    wide = tiny_pipeline(tiny_config(cache=dict(sink_frames=3, window_frames=60)))
    assert not torch.allclose(cached_latents(pipe, tl), recompute_latents(wide, tl), atol=1e-3)


def test_same_seed_same_frames_other_seed_differs():
    pipe = tiny_pipeline()
    tl = timeline(3.0)
    a = [f.image for f in pipe.stream(tl, seed=1)]
    b = [f.image for f in tiny_pipeline().stream(tl, seed=1)]
    c = [f.image for f in pipe.stream(tl, seed=2)]
    assert len(a) == len(b) == 48
    assert all((x == y).all() for x, y in zip(a, b))
    assert any((x != y).any() for x, y in zip(a, c))


def test_stream_yields_requested_frames_with_prompts():
    pipe = tiny_pipeline()
    tl = timeline(4.0, prompts=("a red circle", "a blue square"))
    frames = list(pipe.stream(tl, seed=0))
    assert [f.index for f in frames] == list(range(64))
    assert frames[0].prompt == "a red circle" and frames[-1].prompt == "a blue square"
    first_new = next(f.index for f in frames if f.prompt_index == 1)
    # the switch at 2 s (latent 8) takes effect at the first block boundary at or after it
    assert first_new == 4 * 9 - 3  # block 3 starts at latent 9 -> pixel frame 33
    assert pipe.stats.recaches == 1 and pipe.stats.frames == 64


def test_stream_runs_past_1024_latent_frames():
    """No position table: a stream far longer than Wan's 1024-frame RoPE table runs."""
    pipe = tiny_pipeline(tiny_config(model=dict(num_layers=1)))
    tl = timeline(265.0)  # 1061 latent frames
    n = 0
    for block, lat, _ in pipe.latents(tl, 0):
        assert torch.isfinite(lat).all()
        n += lat.shape[2]
    assert n == tl.num_latent_frames > 1024


@pytest.mark.parametrize("sink_rule", ["keep", "rewrite"])
def test_recache_rewrites_window_under_new_prompt(sink_rule):
    """After a switch, the cache holds exactly the K/V that committing the same clean latents
    under the new prompt gives (the sink per the rule). No eviction yet, so this is exact."""
    cfg = tiny_config(cache=dict(sink_frames=3, window_frames=9), switch=dict(sink=sink_rule))
    pipe = tiny_pipeline(cfg)
    with torch.no_grad():
        old = pipe.model.text_context(pipe.text_encoder.encode(["a red circle"]))
        new = pipe.model.text_context(pipe.text_encoder.encode(["a blue square"]))
    lat = torch.randn(1, 4, 9, 4, 4)

    def commit_all(ctx_per_block):
        cache = pipe.new_cache()
        for b, ctx in enumerate(ctx_per_block):
            frames = torch.arange(3 * b, 3 * b + 3)
            pipe._forward(lat[:, :, 3 * b : 3 * b + 3], torch.zeros(3), ctx, cache, frames, commit=True)
        return cache

    cache = commit_all([old, old, old])
    sink_before = cache.k[:, :, :, :3].clone()
    window_before = cache.k[:, :, :, 3:9].clone()
    clean = {f: lat[0, :, f] for f in range(9)}
    pipe._recache(cache, clean, new)
    expected = commit_all([new if sink_rule == "rewrite" else old, new, new])
    assert cache.committed == 9
    assert torch.allclose(cache.k[:, :, :, :9], expected.k[:, :, :, :9], atol=1e-5)
    assert torch.allclose(cache.v[:, :, :, :9], expected.v[:, :, :, :9], atol=1e-5)
    assert not torch.allclose(cache.k[1:, :, :, 3:9], window_before[1:], atol=1e-4)
    if sink_rule == "keep":
        assert torch.equal(cache.k[:, :, :, :3], sink_before)


def test_plain_switch_leaves_cache_and_recache_changes_video():
    tl = timeline(4.0, prompts=("a red circle", "a blue square"))
    plain = tiny_pipeline(tiny_config(switch=dict(mode="plain")))
    a = cached_latents(plain, tl)
    assert plain.stats.recaches == 0
    recache = tiny_pipeline()
    b = cached_latents(recache, tl)
    assert recache.stats.recaches == 1
    assert torch.allclose(a[:, :, :9], b[:, :, :9])  # identical before the switch
    assert not torch.allclose(a[:, :, 9:], b[:, :, 9:], atol=1e-4)


def test_blend_transition_uses_intermediate_contexts():
    tl = timeline(6.0, prompts=("a red circle", "a blue square"))
    pipe = tiny_pipeline(tiny_config(switch=dict(blend_blocks=2)))
    cached_latents(pipe, tl)
    weights = sorted({k[1] for k in pipe._contexts})
    assert weights == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert pipe.stats.recaches == 3  # one per context change


def test_ema_sink_stream_runs_and_differs():
    tl = timeline(6.0)
    a = cached_latents(tiny_pipeline(tiny_config(cache=dict(sink_frames=3, window_frames=3))), tl)
    b = cached_latents(tiny_pipeline(tiny_config(cache=dict(sink_frames=3, window_frames=3, ema_alpha=0.9))), tl)
    assert torch.allclose(a[:, :, :9], b[:, :, :9])  # nothing evicted yet
    assert not torch.allclose(a[:, :, 12:], b[:, :, 12:], atol=1e-4)


def test_cache_memory_does_not_grow():
    pipe = tiny_pipeline()
    sizes = []
    orig = pipe.new_cache

    def spy(*a, **k):
        c = orig(*a, **k)
        sizes.append(c)
        return c

    pipe.new_cache = spy
    for _ in pipe.latents(timeline(30.0), 0):
        pass
    (cache,) = sizes
    assert cache.memory_bytes() == pipe.new_cache().memory_bytes()
    assert cache.num_slots == 3 + 6 + 3


def test_single_prompt_timeline_helper():
    tl = single("a red ball", 2.0, 16, 4)
    frames = list(tiny_pipeline().stream(tl))
    assert len(frames) == 32 and frames[0].image.shape == (32, 32, 3)


def test_bf16_stream_runs_close_to_fp32():
    """The GPU path's dtype on CPU: bf16 weights and cache, fp32-kept modules, same frames roughly."""
    from longvid.model import cast_model

    tl = timeline(2.0)
    ref = tiny_pipeline()
    half = tiny_pipeline()
    cast_model(half.model, torch.bfloat16)
    a, b = cached_latents(ref, tl), cached_latents(half, tl)
    assert half.new_cache().k.dtype == torch.bfloat16
    assert torch.isfinite(b).all()
    assert (a - b).abs().mean() < 0.1 * a.abs().mean()


def test_predicted_renoise_uses_only_initial_noise(monkeypatch):
    """renoise 'predicted': later noise draws are never used; 'fresh' depends on them."""
    import longvid.pipeline as P

    tl = timeline(2.0)
    real = P.frame_noise

    def other_later_noise(seed, frame, index, shape):
        return real(seed + (index > 0) * 1000, frame, index, shape)

    for mode, should_change in (("predicted", False), ("fresh", True)):
        cfg = tiny_config(schedule=dict(renoise=mode))
        a = cached_latents(tiny_pipeline(cfg), tl)
        monkeypatch.setattr(P, "frame_noise", other_later_noise)
        b = cached_latents(tiny_pipeline(cfg), tl)
        monkeypatch.setattr(P, "frame_noise", real)
        assert torch.allclose(a, b) != should_change, mode
