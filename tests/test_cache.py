"""The KV cache owns sink / window / eviction maths: sinks survive, the EMA sink follows its
formula, memory is fixed, writes are in place."""

import pytest
import torch

from longvid.cache import KVCache, dense_mask

T, H, D = 2, 1, 4  # tokens per frame, heads, head dim


def make(sink=3, window=6, chunk=3, block=3, **kw):
    return KVCache(num_layers=2, num_heads=H, head_dim=D, tokens_per_frame=T, sink_frames=sink,
                   window_frames=window, max_chunk_frames=chunk, block_frames=block, **kw)


def frame_kv(frames, scale=1.0):
    """Recognisable keys: every value of frame f is f * scale. (1, H, F*T, D)"""
    f = torch.as_tensor(frames, dtype=torch.float32)
    return (f[:, None, None] * scale).expand(-1, T, D).reshape(1, H, -1, D).contiguous()


def commit_block(cache, frames):
    plan = cache.plan(torch.tensor(frames), commit=True)
    for layer in range(cache.num_layers):
        cache.update(layer, plan, frame_kv(frames), frame_kv(frames, -1.0))
    cache.commit(plan)
    return plan


def test_sink_survives_eviction_and_window_slides():
    cache = make()
    for b in range(20):
        commit_block(cache, [3 * b, 3 * b + 1, 3 * b + 2])
    assert cache.committed == 60
    assert cache.visible_committed().tolist() == [0, 1, 2] + list(range(54, 60))
    # the sink slots still hold frames 0..2, untouched
    for f in range(3):
        assert torch.all(cache.k[:, :, :, f] == f) and torch.all(cache.v[:, :, :, f] == -f)
    # the window's frames are where the ring says, with their own values
    for f in range(54, 60):
        slot = int(cache.slot_of(torch.tensor([f])))
        assert torch.all(cache.k[:, :, :, slot] == f)


def test_plan_sees_sink_window_and_own_block_only():
    cache = make()
    for b in range(5):
        commit_block(cache, [3 * b, 3 * b + 1, 3 * b + 2])
    plan = cache.plan(torch.tensor([15, 16, 17]), commit=False)
    seen = cache.slot_frame[: plan.num_read][plan.mask[0]] if plan.mask is not None else cache.slot_frame
    assert sorted(seen.tolist()) == [0, 1, 2, 9, 10, 11, 12, 13, 14, 15, 16, 17]


def test_no_copy_and_fixed_memory():
    cache = make()
    ptr, size = cache.k.data_ptr(), cache.memory_bytes()
    for b in range(200):
        plan = commit_block(cache, [3 * b, 3 * b + 1, 3 * b + 2])
        k_all, _ = cache.update(0, plan, frame_kv([3 * b, 3 * b + 1, 3 * b + 2]), frame_kv([0, 0, 0]))
        assert k_all.data_ptr() == ptr  # attention reads a view of the buffer, not a copy
    assert cache.k.data_ptr() == ptr and cache.memory_bytes() == size
    assert cache.num_slots == 3 + 6 + 3


def test_ema_sink_follows_formula():
    a = 0.9
    cache = make(sink=3, window=3, ema_alpha=a)
    expected = {s: float(s) for s in range(3)}  # sink slot s starts as frame s
    for b in range(6):
        frames = [3 * b, 3 * b + 1, 3 * b + 2]
        leaving = [f for f in range(max(3, cache.committed - 3), max(3, cache.committed + 3 - 3))]
        commit_block(cache, frames)
        for f in leaving:  # evicted frame f folds into sink slot f mod 3
            expected[f % 3] = a * expected[f % 3] + (1 - a) * f
        for s in range(3):
            assert torch.allclose(cache.k[:, :, :, s], torch.tensor(expected[s])), (b, s)
            assert torch.allclose(cache.v[:, :, :, s], torch.tensor(-expected[s]))


def test_compact_rope_places_sink_before_window():
    cache = make(rope="compact")
    for b in range(5):
        commit_block(cache, [3 * b, 3 * b + 1, 3 * b + 2])
    plan = cache.plan(torch.tensor([15, 16, 17]), commit=False)
    pos = dict(zip(cache.slot_frame[: plan.num_read].tolist(), plan.key_positions.tolist()))
    assert [pos[f] for f in (0, 1, 2)] == [6, 7, 8]  # right before window frame 9
    assert [pos[f] for f in (9, 15)] == [9, 15] and plan.query_positions.tolist() == [15, 16, 17]
    absolute = make()
    for b in range(5):
        commit_block(absolute, [3 * b, 3 * b + 1, 3 * b + 2])
    plan = absolute.plan(torch.tensor([15, 16, 17]), commit=False)
    assert plan.key_positions[:3].tolist() == [0, 1, 2]


@pytest.mark.parametrize("rewrite_sink", [False, True], ids=["keep", "rewrite"])
@pytest.mark.parametrize("committed", [9, 12, 15, 18, 21])
def test_a_recache_sees_the_sink_where_generation_saw_it(committed, rewrite_sink):
    """Compact RoPE: the frames re-encoded at a switch see the sink at the positions the next
    block's generation gives it (rewind lowers `committed`; the positions must not follow it)."""
    cache = make(rope="compact")
    for b in range(committed // 3):
        commit_block(cache, [3 * b, 3 * b + 1, 3 * b + 2])
    nxt = torch.arange(committed, committed + 3)
    plan = cache.plan(nxt, commit=False)
    generation = dict(zip(cache.slot_frame[: plan.num_read].tolist(), plan.key_positions.tolist()))
    redo = cache.rewind(rewrite_sink=rewrite_sink)
    plan = cache.plan(redo, commit=True)
    recache = dict(zip(cache.slot_frame[: plan.num_read].tolist(), plan.key_positions.tolist()))
    assert [recache[f] for f in (0, 1, 2)] == [generation[f] for f in (0, 1, 2)]
    if rewrite_sink:  # the sink is re-encoded in this forward: its queries sit there too
        assert plan.query_positions[:3].tolist() == [generation[f] for f in (0, 1, 2)]


def test_rewind_keep_and_rewrite():
    cache = make()
    for b in range(5):
        commit_block(cache, [3 * b, 3 * b + 1, 3 * b + 2])
    redo = cache.rewind(rewrite_sink=False)
    assert redo.tolist() == list(range(9, 15))
    assert cache.visible_committed().tolist() == [0, 1, 2]
    plan = cache.plan(redo, commit=True)
    assert plan.mask is not None
    cache.commit(plan)
    assert cache.committed == 15 and cache.visible_committed().tolist() == [0, 1, 2] + list(range(9, 15))
    redo = cache.rewind(rewrite_sink=True)
    assert redo.tolist() == [0, 1, 2] + list(range(9, 15))
    assert len(cache.visible_committed()) == 0


def test_dense_mask_rule():
    m = dense_mask(12, block_frames=3, sink_frames=3, window_frames=3)
    assert m[10].nonzero().flatten().tolist() == [0, 1, 2, 6, 7, 8, 9, 10, 11]
    assert m[4].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]
    inflight = dense_mask(12, block_frames=3, sink_frames=3, window_frames=3, in_flight_from=6)
    # frames in flight see the window before the first in-flight frame and earlier in-flight blocks
    assert inflight[10].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert inflight[7].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
