"""Resume at the engine level: a stream saved between two blocks, reloaded into a fresh pipeline
and continued gives exactly the frames of a stream that never stopped, for every schedule, with
prompt switches (KV-recache), EMA sinks and the built-in decoder's causal cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_config, tiny_pipeline
from longvid.autoencoder import AutoencoderConfig, CausalAutoencoder
from longvid.errors import ResumeError
from longvid.state import load_state, save_state
from longvid.timeline import Prompt, Timeline
from longvid.vae import AutoencoderStreamingDecoder

SCHEDULES = [
    dict(kind="block"),
    dict(kind="lagged", ar_step=2),
    dict(kind="rolling", timesteps=[1000, 800, 600, 400, 200]),
]
# 8 s: 128 frames, 33 latent frames, 11 blocks of 3; switches (with KV-recache) at latent
# frames 5 (inside block 1: it takes effect at block 2) and 9 (block 3)
TIMELINE = Timeline((Prompt("a red circle", 0.0, 0), Prompt("a blue square", 1.0, 5),
                     Prompt("a green ball", 2.0, 9)), 8.0, 16, 4)


class Stop(Exception):
    pass


def frames(pipe, state=None, stop_after_block=None, save_to=None):
    """Images of a stream; with `stop_after_block`, save the state there and stop."""
    out = []

    def on_block(s):
        if stop_after_block is not None and s.blocks == stop_after_block:
            save_state(save_to, pipe.snapshot(s), {"note": "test"})
            raise Stop

    try:
        for frame in pipe.stream(TIMELINE, seed=7, state=state, on_block=on_block):
            out.append(frame.image)
    except Stop:
        pass
    return out


def builtin_decoder_pipeline(cfg):
    pipe = tiny_pipeline(cfg)
    torch.manual_seed(1)
    ae = CausalAutoencoder(AutoencoderConfig(latent_channels=cfg.model.in_channels)).eval()
    pipe.decoder = AutoencoderStreamingDecoder(ae)
    return pipe


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: s["kind"])
@pytest.mark.parametrize("variant", ["recache", "ema-sink", "builtin-decoder"])
def test_saved_and_resumed_equals_uninterrupted(tmp_path, sched, variant):
    cache = dict(sink_frames=3, window_frames=6)
    if variant == "ema-sink":
        cache["ema_alpha"] = 0.9
    cfg = tiny_config(schedule=sched, cache=cache)
    make = builtin_decoder_pipeline if variant == "builtin-decoder" else tiny_pipeline

    full = frames(make(cfg))
    path = tmp_path / "s.safetensors"
    first = frames(make(cfg), stop_after_block=4, save_to=path)  # past both switches
    assert 0 < len(first) < len(full)

    fresh = make(cfg)  # a new process would build the same pipeline from the same weights
    state, meta = load_state(path, fresh.new_cache())
    assert meta == {"note": "test"} and state.frames == len(first) and state.seed == 7
    rest = frames(fresh, state=state)
    assert len(first) + len(rest) == len(full) == TIMELINE.num_pixel_frames
    np.testing.assert_array_equal(np.stack(first + rest), np.stack(full))


def test_resume_from_every_block_boundary(tmp_path):
    """Rolling schedule (several blocks in flight): any block boundary is a valid resume point."""
    cfg = tiny_config(schedule=SCHEDULES[2])
    full = np.stack(frames(tiny_pipeline(cfg)))
    for block in (1, 2, 3, 6, 10):
        path = tmp_path / f"s{block}.safetensors"
        first = frames(tiny_pipeline(cfg), stop_after_block=block, save_to=path)
        fresh = tiny_pipeline(cfg)
        state, _ = load_state(path, fresh.new_cache())
        np.testing.assert_array_equal(np.stack(first + frames(fresh, state=state)), full)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_damaged_state_file_is_a_resume_error(tmp_path, damage):
    pipe = tiny_pipeline()
    path = tmp_path / "s.safetensors"
    frames(pipe, stop_after_block=2, save_to=path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 8 + data[8:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    with pytest.raises(ResumeError, match="s.safetensors") as info:
        load_state(path, pipe.new_cache())
    assert "\n" not in str(info.value) and "without --resume" in str(info.value)


def test_state_of_another_cache_layout_is_refused(tmp_path):
    path = tmp_path / "s.safetensors"
    frames(tiny_pipeline(), stop_after_block=2, save_to=path)
    other = tiny_pipeline(tiny_config(cache=dict(sink_frames=1, window_frames=6)))
    with pytest.raises(ResumeError, match="damaged or not a longvid state"):
        load_state(path, other.new_cache())


@pytest.mark.parametrize("make", ["wan21", "wan22"])
def test_wan_decoder_state_survives_a_save_and_load(tmp_path, make):
    """The Wan VAE's causal cache (a list of tensors, empty slots or 'Rep' marks) goes through the
    state file's packing; a new decoder continues bit for bit."""
    from test_vae import latents, tiny_wan21, tiny_wan22

    from longvid.state import _pack, _unpack
    from longvid.vae import WanStreamingDecoder

    vae = {"wan21": tiny_wan21, "wan22": tiny_wan22}[make]()
    z = latents(9)
    whole = WanStreamingDecoder(vae)
    expected = torch.cat([whole.decode(b) for b in z.split(3, dim=2)], dim=2)

    first = WanStreamingDecoder(vae)
    head = [first.decode(b) for b in z[:, :, :6].split(3, dim=2)]
    tensors: dict = {}
    skeleton = _pack(first.get_state(), tensors)
    assert any(isinstance(c, torch.Tensor) for c in first.get_state()["cache"])
    second = WanStreamingDecoder(vae)  # another decoder: nothing shared but the file's content
    second.set_state(_unpack(skeleton, tensors))
    tail = second.decode(z[:, :, 6:])
    assert torch.equal(torch.cat([*head, tail], dim=2), expected)


@pytest.mark.parametrize("save_overlap,resume_overlap", [(True, True), (True, False), (False, True)])
def test_overlapped_decode_same_frames_and_resumes_exactly(tmp_path, save_overlap, resume_overlap):
    """runtime.overlap (decode in a second thread, one block behind): the same frames in the same
    order; a state saved between two blocks holds the block made but not yet decoded, and a
    resume with or without overlap continues to exactly the frames of an unstopped run."""
    def cfg(overlap):
        return tiny_config(cache=dict(sink_frames=3, window_frames=6), runtime=dict(overlap=overlap))

    full = np.stack(frames(builtin_decoder_pipeline(cfg(False))))
    assert np.array_equal(np.stack(frames(builtin_decoder_pipeline(cfg(True)))), full)
    path = tmp_path / "s.safetensors"
    first = frames(builtin_decoder_pipeline(cfg(save_overlap)), stop_after_block=4, save_to=path)
    fresh = builtin_decoder_pipeline(cfg(resume_overlap))
    state, _ = load_state(path, fresh.new_cache())
    assert state.frames == len(first) and state.blocks == 4
    assert len(state.pending) == (1 if save_overlap else 0)
    np.testing.assert_array_equal(np.stack(first + frames(fresh, state=state)), full)
