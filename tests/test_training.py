"""The training scripts' own pieces that decide what the built-in model learns (scripts/)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from trainutil import motion_loss  # noqa: E402

from longvid.vae import from_uint8  # noqa: E402
from longvid.world import BACKGROUNDS, SceneSpec, draw  # noqa: E402


def _square_on_path(points, size: int = 64, background: str = "navy") -> torch.Tensor:
    """(1, 3, F, size, size) in [-1, 1]: a small white square at points[f] = (x, y)."""
    spec = SceneSpec(shape="square", colour="white", background=background, size="small")
    frames = np.empty((len(points), size, size, 3), np.uint8)
    frames[:] = BACKGROUNDS[background]
    for f, p in enumerate(points):
        draw(frames[f], spec, np.asarray(p, np.float64)[None])
    return from_uint8(frames[None])


def _moving_square(positions: list[float]) -> torch.Tensor:
    """(1, 3, F, 32, 32) in [-1, 1]: a white square at x = positions[f] on black."""
    return _square_on_path([(x, 16.0) for x in positions], size=32, background="black")


def test_motion_loss_compares_frame_to_frame_changes():
    truth = _moving_square([8, 10, 12, 14, 16])
    weight = torch.ones_like(truth[:, :1])
    assert motion_loss(truth, truth, weight) == 0
    # A steady colour error is the per-frame losses' business, not this one's...
    assert motion_loss(truth + 0.1, truth, weight) < 1e-6
    # ...an object that stands still, or moves in the wrong pattern, is.
    for wrong in ([8, 8, 8, 8, 8], [8, 13, 14, 15, 16]):
        assert motion_loss(_moving_square(wrong), truth, weight) > 0.02
    # Object pixels weigh more than background pixels.
    lurch = _moving_square([8, 13, 14, 15, 16])
    assert motion_loss(lurch, truth, 1 + 9 * (truth > 0).float()) > motion_loss(lurch, truth, weight)


def test_track_loss_finds_the_object_and_reads_a_polygon_drawn_for_a_circle():
    from trainutil import object_track, track_loss

    angle = np.radians(7.5) * np.arange(13)
    orbit = np.stack([32 + 20 * np.cos(angle), 32 + 20 * np.sin(angle)], axis=1)
    truth = _square_on_path(orbit)
    background = truth[:, :, :1, :1, :1]
    centre, mass = object_track(truth, background)
    # pixel-index coordinates: the world draws pixel i over [i, i + 1)
    assert torch.allclose(centre[0], torch.tensor(orbit - 0.5, dtype=torch.float32), atol=0.3)
    assert float(mass.min()) > 20
    assert track_loss(truth, truth, background) == 0
    assert track_loss(truth + 0.02, truth, background) < 0.05  # a faint colour error is not a move
    # the same orbit as a polygon, one side per 4 frames (what a latent frame spans): corners
    # agree, frames between lie on the chords, within a pixel of the circle
    polygon = orbit.copy()
    for f in range(13):
        a, b = (f // 4) * 4, min((f // 4) * 4 + 4, 12)
        u = 0.0 if a == b else (f - a) / (b - a)
        polygon[f] = (1 - u) * orbit[a] + u * orbit[b]
    assert np.abs(polygon - orbit).max() < 1.0
    # half a pixel off on average, but its turns come in bursts: the loss counts both
    assert track_loss(_square_on_path(polygon), truth, background) > 1.0
    # frames where the true object is out of view are not compared (the prediction may still
    # show it there), nor are the turns through them
    gone = truth.clone()
    gone[:, :, 5] = background[:, :, 0]
    assert track_loss(truth, gone, background) < 0.05


def test_sampler_states_follow_the_engine_sampler_to_each_level():
    """With a model that always predicts the true x0, the sampler's state at level j is the true
    latent noised to steps_t[j] with the starting noise (predicted re-noise keeps it); level 0 is
    pure noise; context frames are never touched; the velocity target then asks for x0."""
    from train_generator import sampler_states, velocity_target

    from longvid.schedule import FlowMatch

    flow, steps_t = FlowMatch(), [1000.0, 937.5, 833.3, 625.0]
    B, C, F = 4, 2, 5
    x0 = torch.randn(B, C, F, 3, 3)
    target = torch.zeros(B, F, dtype=torch.bool)
    target[:, 3:] = True
    x_in = x0 + 0.01 * torch.randn_like(x0)  # the noised context (and anything on the target)
    levels = torch.tensor([0, 1, 2, 3])

    def oracle(x, t, **_):
        s = flow.sigma(t)[:, None, :, None, None].clamp_min(1e-6)
        return (x - x0) / s

    torch.manual_seed(0)
    states = sampler_states(oracle, x_in, target, levels, steps_t, flow, predicted=True)
    torch.manual_seed(0)
    start = torch.randn_like(x_in)
    tgt = target[:, None, :, None, None]
    assert torch.equal(torch.where(tgt, 0.0, states), torch.where(tgt, 0.0, x_in))
    for i, j in enumerate(levels.tolist()):
        t = torch.full((1, F), steps_t[j])
        expected = flow.add_noise(x0[i : i + 1], start[i : i + 1], t)[:, :, 3:]
        torch.testing.assert_close(states[i : i + 1, :, 3:], expected, atol=1e-5, rtol=1e-5)
        sigma = flow.sigma(t)[:, None, :, None, None]
        torch.testing.assert_close(velocity_target(expected, x0[i : i + 1, :, 3:], sigma[:, :, 3:]),
                                   start[i : i + 1, :, 3:] - x0[i : i + 1, :, 3:], atol=1e-4, rtol=1e-4)


def test_sample_target_runs_the_engine_sampler_on_target_frames_only():
    """With an oracle model the few-step sampler lands on the true x0 at the target frames, its
    first step is already exact, and context frames stay exactly as given."""
    from train_generator import sample_target

    from longvid.schedule import FlowMatch

    flow, steps_t = FlowMatch(), [1000.0, 937.5, 833.3, 625.0]
    x0 = torch.randn(2, 3, 6, 4, 4)
    target = torch.zeros(2, 6, dtype=torch.bool)
    target[0, 3:] = True
    target[1, 1:4] = True
    calls = []
    tgt = target[:, None, :, None, None]

    def oracle(x, t, **forward):
        calls.append(forward)
        # the model sees the true context at every step, the first one included
        assert torch.equal(torch.where(tgt, 0.0, x), torch.where(tgt, 0.0, x0))
        return (x - x0) / flow.sigma(t)[:, None, :, None, None].clamp_min(1e-6)

    last, first = sample_target(oracle, x0, target, steps_t, flow, torch.Generator().manual_seed(0), text="ctx")
    torch.testing.assert_close(torch.where(tgt, last, x0), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.where(tgt, first, x0), x0, atol=1e-5, rtol=1e-5)
    assert len(calls) == len(steps_t) and all(c == {"text": "ctx"} for c in calls)


def test_own_window_rolls_the_windows_last_blocks_oldest_first_and_keeps_the_rest():
    """`--own-window 2`: the window's last two blocks become the sampler's own, the second made
    after (and from) the first; sink, older window frames, the target and samples whose window is
    too short stay as they were."""
    from train_generator import own_window

    from longvid.schedule import FlowMatch

    flow, steps_t, k = FlowMatch(), [1000.0, 937.5, 833.3, 625.0], 3
    x = (10.0 * torch.arange(12)).view(1, 1, 12, 1, 1).repeat(2, 1, 1, 2, 2)  # slot s holds 10 s
    target = torch.zeros(2, 12, dtype=torch.bool)
    target[0, 9:] = True  # sink 0-2, window 3-8: two blocks
    target[1, 6:9] = True  # sink 0-2, window 3-5: one block only

    def oracle(x_t, t, **forward):  # each block's x0: the frame before it, plus one
        sigma = flow.sigma(t)
        x0_hat = x_t.clone()
        for i in range(x_t.shape[0]):
            noisy = (t[i] > 0).nonzero().flatten()
            if len(noisy):
                x0_hat[i, :, noisy] = x_t[i, :, int(noisy[0]) - 1 : int(noisy[0])] + 1
        return (x_t - x0_hat) / sigma[:, None, :, None, None].clamp_min(1e-6)

    out = own_window(oracle, x, target, torch.tensor([3, 3]), 2, steps_t, flow, torch.Generator().manual_seed(0))
    frames = out[:, 0, :, 0, 0]
    expected = 10.0 * torch.arange(12)
    expected[3:6] = 21.0  # from slot 2 (20)
    expected[6:9] = 22.0  # from the rolled slot 5 (21), not the true 50
    torch.testing.assert_close(frames[0], expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(frames[1], 10.0 * torch.arange(12), atol=0, rtol=0)


def test_build_batch_reports_where_each_target_block_starts(tmp_path):
    """`starts` is the clip latent frame of each target block: the tune_decoder stage takes the
    block's true pixels from there, so a wrong start would teach the decoder wrong frames."""
    from train_generator import Data, build_batch

    n, t, k = 3, 12, 3
    latents = torch.arange(n * t, dtype=torch.float16).reshape(n, t, 1, 1, 1).expand(n, t, 2, 2, 2).contiguous()
    spec = {"shape": "circle", "colour": "red", "background": "black"}
    torch.save({"latents": latents, "segments": torch.zeros(n, t, dtype=torch.long), "specs": [[spec]] * n},
               tmp_path / "shard_0000.pt")
    data = Data(str(tmp_path / "shard_*.pt"))
    clips, x0, masks, target, seg, starts = build_batch(data, np.random.default_rng(0), 16, 2, 3, k, 0.0)
    for i in range(16):
        block = x0[i, 0, target[i], 0, 0]
        expected = clips[i] * t + starts[i] + torch.arange(k)
        assert torch.equal(block, expected.float()), (i, block, expected)


def test_oversampled_motion_is_drawn_that_much_more_often(tmp_path):
    """`--oversample-motion circling=3`: a clip that circles throughout is drawn 3x as often as one
    that never does, a clip circling half the time 2x; no factor leaves clips uniform."""
    from train_generator import Data, build_batch, motion_clip_weights, parse_oversample

    n, t, k = 3, 12, 3
    latents = torch.zeros(n, t, 1, 2, 2, dtype=torch.float16)
    segments = torch.zeros(n, t, dtype=torch.long)
    segments[2, t // 2:] = 1
    still = {"shape": "circle", "colour": "red", "background": "black", "motion": "still"}
    circling = {**still, "motion": "circling"}
    torch.save({"latents": latents, "segments": segments, "specs": [[still], [circling], [still, circling]]},
               tmp_path / "shard_0000.pt")
    data = Data(str(tmp_path / "shard_*.pt"))
    weights = motion_clip_weights(data, parse_oversample(["circling=3"]))
    np.testing.assert_allclose(weights, np.array([1.0, 3.0, 2.0]) / 6.0)
    clips = build_batch(data, np.random.default_rng(0), 3000, 2, 3, k, 0.0, weights)[0]
    np.testing.assert_allclose(np.bincount(clips, minlength=n) / 3000, weights, atol=0.03)
    np.testing.assert_allclose(motion_clip_weights(data, {"circling": 1.0}), np.full(n, 1 / n))
    for bad in (["spinning=2"], ["circling"], ["circling=0"]):
        with pytest.raises(SystemExit, match="--oversample-motion"):
            parse_oversample(bad)


def test_segment_captions_share_a_caption_per_segment_and_drop_whole_samples(tmp_path):
    """Slots of one segment read one caption; caption dropout empties every slot of a sample
    (a sample with the prompt in some frames only would teach guidance the wrong direction)."""
    from longvid.world import parse_prompt
    from train_generator import Data, segment_captions

    n, t = 4, 12
    spec = {"shape": "circle", "colour": "red", "background": "black"}
    segments = torch.zeros(n, t, dtype=torch.long)
    segments[:, 6:] = 1
    torch.save({"latents": torch.zeros(n, t, 2, 2, 2, dtype=torch.float16), "segments": segments,
                "specs": [[spec, {**spec, "colour": "blue"}]] * n}, tmp_path / "shard_0000.pt")
    data = Data(str(tmp_path / "shard_*.pt"))
    seg_of_slot = torch.tensor([[0, 0, 1, 1]] * 64)
    clips = [i % n for i in range(64)]
    caps, index = segment_captions(data, clips, seg_of_slot, np.random.default_rng(0))
    assert len(caps) == 128 and all(caps)
    assert all(index[i, 0] == index[i, 1] != index[i, 2] == index[i, 3] for i in range(64))
    colours = [(parse_prompt(caps[index[i, 0]]).colour, parse_prompt(caps[index[i, 2]]).colour) for i in range(64)]
    assert set(colours) == {("red", "blue")}
    caps, index = segment_captions(data, clips, seg_of_slot, np.random.default_rng(0), dropout=0.3)
    empty = torch.tensor([[caps[j] == "" for j in row] for row in index.tolist()])
    assert torch.equal(empty.all(dim=1), empty.any(dim=1))  # whole samples, never some slots
    assert 5 <= int(empty.all(dim=1).sum()) <= 35


def test_tune_decoder_replays_the_shards_pixels_and_crops_around_the_object():
    from prepare_latents import sample_clip
    from train_generator import crop_box
    from tune_decoder import Pixels

    pixels = Pixels(["runs/x/shard_0003.pt"], shard_size=2, latent_frames=6, size=32, seed=1)
    rng = np.random.default_rng([1, 3])
    expected = [sample_clip(rng, 6, 32)[0] for _ in range(2)]
    assert pixels.clip(1).shape == (4 * 6 - 3, 32, 32, 3)
    assert np.array_equal(pixels.clip(1), expected[1]) and np.array_equal(pixels.clip(0), expected[0])

    block = torch.zeros(4, 3, 16, 16)
    block[:, :, 12, 3] = 5.0  # the object's cell
    assert crop_box(block, 8) == (8, 0)  # centred on it as far as the frame allows
    block = torch.zeros(4, 3, 16, 16)
    block[:, :, 7, 9] = 5.0
    assert crop_box(block, 8) == (3, 5)


def test_tune_decoder_checks_label_shards_against_the_replayed_scene(tmp_path):
    """A `--shape-labels` autoencoder's shards are made from targets, not by its encoder, so the
    replay check compares their label channels with the labels of the replayed scene: it passes
    on shards of the same seed and fails on shards replayed from another."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from prepare_latents import label_maps, sample_clip
    from train_generator import Data
    from tune_decoder import Pixels, check_replay

    appearance, factor = 4, 8
    ae = SimpleNamespace(cfg=SimpleNamespace(shape_labels=True, appearance_channels=appearance), spatial_factor=factor)

    def shard(seed: int, path: Path) -> None:
        rng = np.random.default_rng([seed, 3])
        latents, segments, specs = [], [], []
        for _ in range(2):
            frames, seg, sp, _, cover, shapes = sample_clip(rng, 6, 32, circles=True)
            labels = label_maps(cover, shapes, factor)
            latents.append(torch.cat([torch.randn(6, appearance, 4, 4).half(), labels], dim=1))
            segments.append(torch.from_numpy(seg))
            specs.append([asdict(s) for s in sp])
        torch.save({"latents": torch.stack(latents), "segments": torch.stack(segments), "specs": specs}, path)

    (tmp_path / "same").mkdir()
    (tmp_path / "other").mkdir()
    shard(1, tmp_path / "same" / "shard_0003.pt")
    shard(2, tmp_path / "other" / "shard_0003.pt")
    for folder, expect_match in (("same", True), ("other", False)):
        pattern = str(tmp_path / folder / "shard_*.pt")
        pixels = Pixels([str(tmp_path / folder / "shard_0003.pt")], shard_size=2, latent_frames=6, size=32, seed=1)
        worst = check_replay(pixels, Data(pattern), ae, [0, 1])
        assert (worst < 0.05) == expect_match, (folder, worst)


def test_tune_decoder_draws_background_switches_as_often_as_asked(tmp_path):
    """`--background-switch-share 0.6`: 60 % of draws go to the clips whose prompt switches the
    background (a colour switch does not count), the rest are uniform over all clips."""
    from train_generator import Data, build_batch
    from tune_decoder import background_switch_weights

    n, t = 3, 12
    black = {"shape": "circle", "colour": "red", "background": "black"}
    specs = [[black], [black, {**black, "colour": "blue"}], [black, {**black, "background": "gray"}]]
    segments = torch.zeros(n, t, dtype=torch.long)
    segments[1:, t // 2:] = 1
    torch.save({"latents": torch.zeros(n, t, 1, 2, 2, dtype=torch.float16), "segments": segments, "specs": specs},
               tmp_path / "shard_0000.pt")
    data = Data(str(tmp_path / "shard_*.pt"))
    weights = background_switch_weights(data, 0.6)
    np.testing.assert_allclose(weights, [0.4 / 3, 0.4 / 3, 0.4 / 3 + 0.6])
    clips = build_batch(data, np.random.default_rng(0), 3000, 2, 3, 3, 0.0, weights)[0]
    np.testing.assert_allclose(np.bincount(clips, minlength=n) / 3000, weights, atol=0.03)
    assert background_switch_weights(data, 0.0) is None
    data.specs = data.specs[:2]
    data.n = 2
    with pytest.raises(SystemExit, match="switches its background"):
        background_switch_weights(data, 0.5)


def test_tune_decoder_draws_the_focus_scene_as_many_times_as_often_as_asked(tmp_path, monkeypatch, capsys):
    """`--focus shape=square motion=circling --focus-factor 5`: a clip weighs 1 + 4 x the share of
    its latent frames whose segment has every named attribute; a scene no clip shows, a factor
    without a scene or a bad item is refused with the fix named."""
    import tune_decoder
    from train_generator import Data, build_batch
    from tune_decoder import focus_clip_weights

    n, t = 3, 12
    square = {"shape": "square", "colour": "red", "background": "gray", "motion": "circling"}
    specs = [[{**square, "motion": "still"}], [square], [{**square, "shape": "circle"}, square]]
    segments = torch.zeros(n, t, dtype=torch.long)
    segments[2, 9:] = 1  # a quarter of clip 2 circles as a square
    torch.save({"latents": torch.zeros(n, t, 1, 2, 2, dtype=torch.float16), "segments": segments, "specs": specs},
               tmp_path / "shard_0000.pt")
    data = Data(str(tmp_path / "shard_*.pt"))
    weights = focus_clip_weights(data, {"shape": "square", "motion": "circling"}, 5.0)
    np.testing.assert_allclose(weights, np.array([1.0, 5.0, 2.0]) / 8.0)
    clips = build_batch(data, np.random.default_rng(0), 3000, 2, 3, 3, 0.0, weights)[0]
    np.testing.assert_allclose(np.bincount(clips, minlength=n) / 3000, weights, atol=0.03)
    with pytest.raises(SystemExit, match="no clip in --data shows that scene"):
        focus_clip_weights(data, {"shape": "triangle"}, 5.0)
    for argv, words in ((["--focus-factor", "3"], "give both, or neither"),
                        (["--focus", "shape=square"], "give both, or neither"),
                        (["--focus", "shape=square", "--focus-factor", "0"], "give a positive number"),
                        (["--focus", "hue=red", "--focus-factor", "3"], "ATTRIBUTE=VALUE"),
                        (["--older-frame-weight", "0"], "--older-frame-weight is a loss weight")):
        monkeypatch.setattr(sys, "argv", ["tune_decoder.py", *argv, "--config", "no-such-config"])
        with pytest.raises(SystemExit) as stop:
            tune_decoder.main()
        assert stop.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--switch-share", "--background-switch-share", "--true-share"])
def test_tune_decoder_refuses_a_share_outside_0_to_1_before_loading_anything(option, monkeypatch, capsys):
    import tune_decoder

    monkeypatch.setattr(sys, "argv", ["tune_decoder.py", option, "1.5", "--config", "no-such-config"])
    with pytest.raises(SystemExit) as stop:
        tune_decoder.main()
    assert stop.value.code == 2
    assert f"{option} is a share of the samples" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["tune_decoder.py", "--generated-object-weight", "-1", "--config", "no-such-config"])
    with pytest.raises(SystemExit) as stop:
        tune_decoder.main()
    assert stop.value.code == 2 and "--generated-object-weight is a loss weight" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["tune_decoder.py", "--true-latent-noise", "-1", "--config", "no-such-config"])
    with pytest.raises(SystemExit) as stop:
        tune_decoder.main()
    assert stop.value.code == 2 and "--true-latent-noise is an augmentation strength" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["tune_decoder.py", "--true-hedge-maps", "0", "0.2", "--config", "no-such-config"])
    with pytest.raises(SystemExit) as stop:
        tune_decoder.main()
    assert stop.value.code == 2 and "--true-hedge-maps LOW LEAK: LOW in (0, 1]" in capsys.readouterr().err


def test_tune_decoder_weighs_generated_objects_as_asked_and_true_ones_as_always():
    """`--generated-object-weight`: errors on the object's pixels count that much in the samples
    decoded from the generator's latents, and the usual 10 in the samples from true latents."""
    from types import SimpleNamespace

    from tune_decoder import mixed_loss

    x = _moving_square([8.0, 10.0, 12.0, 14.0]).expand(4, -1, -1, -1, -1).clone()
    y = x.clone()
    y[x.amax(dim=1, keepdim=True).expand_as(x) > 0] = 0.0  # every sample gets its object wrong
    n_true = 2

    def losses(weight: float, older: float = 1.0, y=y):
        args = SimpleNamespace(generated_object_weight=weight, halo_weight=0.0, edge_weight=0.0, motion_weight=0.0,
                               older_frame_weight=older)
        return mixed_loss(y, x, n_true, args)

    _, gen_low, true_low = losses(1.0)
    total, gen_high, true_high = losses(10.0)
    assert gen_high > 3 * gen_low
    assert torch.isclose(true_low, true_high) and torch.isclose(true_high, gen_high)
    assert torch.isclose(total, (gen_high * 2 + true_high * 2) / 4)
    # `--older-frame-weight` reaches both halves: an error only in an older frame counts more
    oldest = x.clone()
    oldest[:, :, 0] = y[:, :, 0]
    plain, heavy = losses(10.0, 1.0, oldest), losses(10.0, 3.0, oldest)
    assert heavy[1] > 1.1 * plain[1] and heavy[2] > 1.1 * plain[2]  # 3 of 10 instead of 1 of 4


def test_tune_decoder_augments_true_latents_as_the_decoder_only_round_does():
    """`--true-*`: the true samples' appearance channels get noise scaled to each channel's
    spread, their label channels are hedged (scaled per clip, in the encoder's units) and get the
    same noise; without those options they pass through untouched."""
    from types import SimpleNamespace

    from tune_decoder import augment_true

    appearance, labels = 4, 3
    ae = SimpleNamespace(cfg=SimpleNamespace(appearance_channels=appearance),
                         latents_mean=torch.zeros(appearance + labels), latents_std=torch.ones(appearance + labels))
    torch.manual_seed(0)
    spread = torch.tensor([0.1, 1.0, 3.0, 10.0])[None, :, None, None, None]
    z = torch.cat([spread * torch.randn(16, appearance, 3, 8, 8), torch.rand(16, labels, 3, 8, 8)], dim=1)
    assert augment_true(ae, z, 0.0, 0.0, 0.0, (1.0, 0.0)) is z

    hedged = augment_true(ae, z, 0.0, 0.0, 0.0, (0.5, 0.0))
    assert torch.equal(hedged[:, :appearance], z[:, :appearance])
    ratio = hedged[:, appearance:].flatten(1).sum(1) / z[:, appearance:].flatten(1).sum(1)
    assert ratio.min() >= 0.5 - 1e-5 and ratio.max() <= 1.0 + 1e-5 and ratio.std() > 0.05

    noisy = augment_true(ae, z, 0.5, 0.0, 0.0, (1.0, 0.0))
    added = (noisy - z)[:, :appearance].transpose(0, 1).flatten(1).std(1)
    torch.testing.assert_close(added, 0.5 * z[:, :appearance].transpose(0, 1).flatten(1).std(1), rtol=0.1, atol=0)
    assert (noisy - z)[:, appearance:].abs().mean() > 0.05

    # a shape-channel autoencoder with measured statistics: hedged in its units, normalised back
    ae.latents_mean[appearance:] = 0.5
    ae.latents_std[appearance:] = 2.0
    same = augment_true(ae, z, 0.0, 0.0, 0.0, (1.0 - 1e-9, 0.0))
    torch.testing.assert_close(same, z)


def test_critic_sees_the_frame_before_each_target_block_and_the_prompt():
    """The critic judges a block against the latent frame before it (motion, shape kept), so the
    pairs must hold that frame (zeros for a clip's first block) and the block, nothing else."""
    from train_generator import Critic, critic_blocks

    B, C, slots, k = 3, 2, 7, 3
    x = torch.arange(B * C * slots, dtype=torch.float32).reshape(B, C, slots, 1, 1).expand(B, C, slots, 4, 4)
    before = -x
    target = torch.zeros(B, slots, dtype=torch.bool)
    target[0, 0:3] = True  # first block of a clip: nothing before it
    target[1, 2:5] = True
    target[2, 4:7] = True
    pairs = critic_blocks(x, before, target, k)
    assert pairs.shape == (B, C, k + 1, 4, 4)
    assert torch.equal(pairs[0, :, 0], torch.zeros(C, 4, 4))
    assert torch.equal(pairs[0, :, 1:], x[0, :, 0:3])
    assert torch.equal(pairs[1, :, 0], before[1, :, 1]) and torch.equal(pairs[1, :, 1:], x[1, :, 2:5])
    assert torch.equal(pairs[2, :, 0], before[2, :, 3]) and torch.equal(pairs[2, :, 1:], x[2, :, 4:7])

    critic = Critic(channels=C, text_dim=5, width=8).eval()
    blocks = torch.randn(2, C, k + 1, 16, 16)
    text = torch.randn(2, 5)
    logits = critic(blocks, text)
    assert logits.shape == (2, 1, k + 1, 4, 4)
    assert not torch.allclose(logits, critic(blocks, -text))  # the prompt changes the verdict


def test_pixel_critic_judges_only_the_chosen_samples_frame_by_frame_and_by_shape():
    """The pixel critic judges the viewer's picture: decoded windows of the samples `judged`
    allows (the last denoising level), every video frame with its sample's prompted shape."""
    from train_generator import PixelCritic, PixelLoss, video_frames

    class Identity:  # a stand-in autoencoder: latent channels 0-2 are the picture, 1 frame each
        temporal_factor = 1

        def eval(self):
            return self

        def requires_grad_(self, flag):
            return self

        def decode(self, z, first=True):
            return z[:, :3]

    B, C, slots, k = 4, 3, 6, 2
    x0 = torch.zeros(B, C, slots, 8, 8)
    target = torch.zeros(B, slots, dtype=torch.bool)
    target[:, 3:5] = True
    target[2] = False
    target[2, 0:2] = True  # a clip's first block: no frame before it, never judged
    loss = PixelLoss(Identity(), crop=4, samples=8)
    judged = torch.tensor([True, False, True, True])
    assert [w[0] for w in loss.windows(x0, target, k, judged)] == [0, 3]
    x0_hat = torch.randn(B, C, slots, 8, 8, requires_grad=True)
    seen, truth, samples = loss.decode(x0_hat, x0, target, k, judged)
    assert samples == [0, 3] and seen.shape == truth.shape == (2, 3, k, 4, 4) and seen.requires_grad

    classes = torch.tensor([2, 0])
    frames, cls = video_frames(seen, classes)
    assert frames.shape == (2 * k, 3, 4, 4) and cls.tolist() == [2, 2, 0, 0]
    assert torch.equal(frames[k + 1], seen[1, :, 1])  # sample 1's second frame

    critic = PixelCritic(width=8).eval()
    masks = torch.rand(2, 1, 32, 32)
    logits = critic(masks, torch.tensor([0, 0]))
    assert logits.shape == (2, 1, 4, 4)
    assert not torch.allclose(logits, critic(masks, torch.tensor([1, 1])))  # the shape changes the verdict


def test_silhouettes_read_the_object_against_its_background_whatever_the_colours():
    """The pixel critic judges shape alone: a square of any colour on any background becomes the
    same 0/1 mask, the model's picture is read on the true frame's colour line, and a crop with
    no object in some frame is not judged."""
    from train_generator import silhouettes

    def scene(obj, bg):
        video = torch.tensor(bg, dtype=torch.float32)[None, :, None, None, None].repeat(1, 1, 2, 16, 16)
        video[..., 4:12, 4:12] = torch.tensor(obj, dtype=torch.float32)[:, None, None, None]
        return video

    red_on_black, blue_on_gray = scene((0.7, -0.7, -0.7), (-1, -1, -1)), scene((-0.6, -0.3, 0.8), (-0.1, -0.1, -0.1))
    _, a, valid_a = silhouettes(red_on_black, red_on_black)
    _, b, valid_b = silhouettes(blue_on_gray, blue_on_gray)
    assert valid_a.all() and valid_b.all()
    assert torch.allclose(a, b) and torch.allclose(a.sum(), torch.tensor(2 * 64.0))
    assert torch.allclose(a[..., 4:12, 4:12], torch.tensor(1.0))
    faded = red_on_black.clone()
    faded[..., 4:12, 4:12] = 0.5 * red_on_black[..., 4:12, 4:12] + 0.5 * -1  # half-way to the background
    seen, _, _ = silhouettes(faded, red_on_black)
    assert torch.allclose(seen[..., 4:12, 4:12], torch.tensor(0.5))
    empty = red_on_black.clone()
    empty[:, :, 1] = -1  # the object gone from the second frame
    assert not silhouettes(empty, empty)[2].any()


def _mask(kind: str, cx: float, cy: float, half: float, size: int = 48) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    if kind == "disc":
        return ((x - cx) ** 2 + (y - cy) ** 2 <= half * half).float()
    square = ((x - cx).abs() <= half) & ((y - cy).abs() <= half)
    if kind == "square":
        return square.float()
    r = half / 2  # rounded corners of radius half / 2
    qx, qy = ((x - cx).abs() - (half - r)).clamp_min(0), ((y - cy).abs() - (half - r)).clamp_min(0)
    return (square & (qx**2 + qy**2 <= r * r)).float()


def test_corner_cover_tells_squares_from_discs_wherever_they_are():
    """The corner measure of --corner-weight: a square fills its corners, a disc does not, a
    rounded square is in between, and moving the object does not change the reading."""
    from train_generator import corner_cover

    square, disc, rounded = _mask("square", 20, 22, 10), _mask("disc", 20, 22, 10), _mask("rounded", 20, 22, 10)
    c = corner_cover(torch.stack([square, disc, rounded]))
    assert c[0] > 0.85 and c[1] < 0.1 and c[1] + 0.2 < c[2] < c[0] - 0.2
    moved = corner_cover(torch.stack([_mask("square", 27.5, 25, 10), _mask("disc", 30, 31.5, 10)]))
    assert torch.allclose(moved, c[:2], atol=0.08)  # hard 0/1 masks: a few pixels of aliasing


def test_corner_loss_asks_for_the_true_corners_not_the_true_place():
    """Against a true square, a rounded square somewhere else loses more than a square somewhere
    else (no reward for hedging over the place), and the gradient fills the rounded corners."""
    from train_generator import corner_loss

    truth = _mask("square", 20, 20, 10)[None, None, None]  # (N, 1, F, H, W)
    shifted = _mask("square", 26, 23, 10)[None, None, None]
    rounded = _mask("rounded", 26, 23, 10)[None, None, None].requires_grad_(True)
    assert corner_loss(shifted, truth) < 1e-3
    loss = corner_loss(rounded, truth)
    assert loss > 0.05
    loss.backward()
    corner = rounded.grad[..., 23 + 8, 26 + 8]  # inside the box, outside the rounded corner
    assert corner < 0  # more coverage there lowers the loss
    assert corner_loss(truth, truth[..., :0, :, :]) == 0  # a frame too small to judge is left out



def test_tune_decoder_windows_follow_each_true_object_and_stay_in_the_frame():
    """The outline terms judge a window around where the true object is in each sample, kept
    inside the frame; the decoded silhouettes are cut at the same place."""
    from tune_decoder import object_windows

    truth = torch.stack([_mask("square", 10, 12, 4, size=64), _mask("square", 60, 40, 3, size=64)])[:, None, None]
    seen = torch.arange(2 * 64 * 64, dtype=torch.float32).reshape(2, 1, 1, 64, 64)
    seen_w, truth_w = object_windows(seen, truth, 24)
    assert seen_w.shape == truth_w.shape == (2, 1, 1, 24, 24)
    assert truth_w[0].sum() == truth[0].sum() and truth_w[1].sum() == truth[1].sum()  # whole objects kept
    assert seen_w[0, 0, 0, 0, 0] == seen[0, 0, 0, 0, 0]  # near the top-left corner: clamped to (0, 0)
    assert seen_w[1, 0, 0, 0, 0] == seen[1, 0, 0, 40 - 12, 64 - 24]  # centred on y = 40, clamped at the right
    full_seen, full_truth = object_windows(seen, truth, 64)
    assert full_seen is seen and full_truth is truth


def test_tune_decoder_outline_terms_judge_chosen_samples_by_their_corners():
    """`--corner-weight` and `--adv-weight`: a decoded rounded square against a true square
    costs corner loss, a decoded square does not; only the judged samples reach the critic,
    frame by frame with their shape classes; the loss's gradient reaches the decoded pixels."""
    from tune_decoder import outline_losses

    from longvid.world import SHAPES

    def frames(kind: str) -> torch.Tensor:  # (3, F, H, W) in [-1, 1]: white on black
        return (_mask(kind, 24, 24, 9)[None, None].expand(3, 2, -1, -1) * 2 - 1).clone()

    x = torch.stack([frames("square")] * 3)
    y = torch.stack([frames("square"), frames("rounded"), frames("rounded")]).requires_grad_(True)
    classes = torch.full((3,), SHAPES.index("square"))
    loss, judged = outline_losses(y[:2], x[:2], classes[:2], torch.tensor([True, True]), 32, 1.0, None)
    assert judged is None and loss > 0.01
    square_only, _ = outline_losses(y[:1], x[:1], classes[:1], torch.tensor([True]), 32, 1.0, None)
    assert square_only < 1e-4
    critic = object()  # only passed through: the frames for it are what is checked
    loss, (fake, real, cls) = outline_losses(y, x, classes, torch.tensor([False, True, False]), 32, 1.0, critic)
    assert fake.shape == real.shape == (2, 1, 32, 32) and cls.tolist() == [SHAPES.index("square")] * 2
    assert loss > 0.01  # the judged sample is a rounded one
    loss.backward()
    assert y.grad[1].abs().sum() > 0 and y.grad[0].abs().sum() == 0 and y.grad[2].abs().sum() == 0

def test_older_frame_weight_weighs_the_frames_between_latent_frames_apart():
    """`--older-frame-weight W`: the newest pixel frame of each latent frame weighs 1 and the three
    older ones W, in the pixel loss and in the corner loss; at 1 both are what they were."""
    from train_generator import corner_loss
    from tune_decoder import older_frame_weights, pixel_loss

    assert older_frame_weights(8, 3.0).tolist() == [3, 3, 3, 1, 3, 3, 3, 1]
    x = torch.full((1, 3, 8, 8, 8), -1.0)
    newest, oldest = x.clone(), x.clone()
    newest[:, :, 3] += 0.5  # the same error on a newest frame, or on an older one
    oldest[:, :, 0] += 0.5
    terms = dict(object_weight=1.0, halo_weight=0.0, edge_weight=0.0, motion_weight=0.0)
    assert pixel_loss(newest, x, **terms) == pytest.approx(float(pixel_loss(oldest, x, **terms)))
    heavy = older_frame_weights(8, 3.0)
    assert pixel_loss(oldest, x, **terms, frame_weight=heavy) == pytest.approx(
        3 * float(pixel_loss(newest, x, **terms, frame_weight=heavy)))
    truth = _mask("square", 20, 20, 10)[None, None, None].expand(1, 1, 4, -1, -1)
    seen = truth.clone()
    seen[:, :, 0] = _mask("rounded", 20, 20, 10)  # only the oldest frame is rounded
    plain = corner_loss(seen, truth)
    assert corner_loss(seen, truth, frame_weight=torch.ones(4)) == pytest.approx(float(plain))
    # the rounded frame weighs 3 of 10 instead of 1 of 4
    assert corner_loss(seen, truth, frame_weight=older_frame_weights(4, 3.0)) == pytest.approx(1.2 * float(plain))


def test_corner_levels_choose_the_last_levels_samples_or_all():
    """--corner-levels: by default only samples whose target sits at the last inference level are
    judged (the viewer's x0); `all` judges every sample, whatever its level."""
    from train_generator import judged_samples

    target = torch.tensor([[False, True, True], [False, True, True], [False, False, True]])
    t = torch.tensor([[0.0, 625.0, 625.0], [0.0, 1000.0, 1000.0], [0.0, 0.0, 625.0]]) * target
    assert judged_samples(t, target, 625.0).tolist() == [True, False, True]
    assert judged_samples(t, target, 625.0, every_level=True).tolist() == [True, True, True]


def test_autocast_drift_tells_bf16_rounding_from_a_faulty_kernel(monkeypatch):
    """train_generator refuses to train under bf16 autocast when it changes the model's output
    beyond rounding, as PyTorch's CPU bf16 Conv3d patch embedding did on an AMX processor: here a
    stand-in input layer that goes wrong only under autocast."""
    from train_generator import autocast_drift

    from longvid.model import CausalWanTransformer

    torch.manual_seed(0)
    model = CausalWanTransformer(patch_size=(1, 4, 4), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                                 out_channels=16, text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2).eval()
    x, t = torch.randn(2, 16, 3, 8, 8), torch.full((2, 3), 700.0)
    text = model.text_context(torch.randn(2, 7, 16))
    assert autocast_drift(model, x, t, text) < 0.05
    right = model.embed_patches
    monkeypatch.setattr(model, "embed_patches",
                        lambda h: right(h).flip(-1) if torch.is_autocast_enabled("cpu") else right(h))
    assert autocast_drift(model, x, t, text) > 0.05


def test_prompt_context_gives_every_slot_its_segments_caption(tmp_path):
    """The diagnostic scripts feed the generator what inference feeds it: one prompt per segment."""
    from longvid.model import TextContext
    from train_generator import Data, prompt_context

    n, t = 2, 12
    spec = {"shape": "circle", "colour": "red", "background": "black"}
    torch.save({"latents": torch.zeros(n, t, 2, 2, 2, dtype=torch.float16), "segments": torch.zeros(n, t, dtype=torch.long),
                "specs": [[spec, {**spec, "colour": "blue"}]] * n}, tmp_path / "shard_0000.pt")
    data = Data(str(tmp_path / "shard_*.pt"))

    class Bank:
        def embed(self, caps):
            self.caps = caps
            return torch.zeros(len(caps), 1, 3)

    class Model:
        def text_context(self, embeds):
            return TextContext(embeds=embeds, kv=[])

    bank = Bank()
    ctx = prompt_context(Model(), bank, data, [0, 1], torch.tensor([[0, 0, 1], [1, 1, 1]]), np.random.default_rng(0))
    assert len(bank.caps) == 3  # (sample 0, seg 0), (sample 0, seg 1), (sample 1, seg 1)
    assert ctx.frame_index.tolist() == [0, 0, 1, 2, 2, 2]


def test_shape_loss_reads_the_prompted_shape_of_each_target_block(tmp_path):
    """The shape loss labels every target frame with its own segment's shape (a block right
    after a switch carries the new shape), and the probe reads frames channel-first."""
    from train_generator import Data, target_frames, target_shapes
    from trainutil import ShapeProbe

    n, t = 2, 12
    segments = torch.zeros(n, t, dtype=torch.long)
    segments[:, 6:] = 1
    torch.save({"latents": torch.zeros(n, t, 2, 2, 2, dtype=torch.float16), "segments": segments,
                "specs": [[{"shape": "circle", "colour": "red", "background": "black"},
                           {"shape": "triangle", "colour": "red", "background": "black"}]] * n},
               tmp_path / "shard_0000.pt")
    data = Data(str(tmp_path / "shard_*.pt"))
    target = torch.zeros(3, 5, dtype=torch.bool)
    target[0, 0:2] = target[1, 2:4] = target[2, 3:5] = True
    seg_of_slot = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert target_shapes(data, [0, 1, 1], seg_of_slot, target).tolist() == [0, 2, 2]

    x = torch.arange(3 * 4 * 5, dtype=torch.float32).reshape(3, 4, 5, 1, 1).expand(3, 4, 5, 6, 6)
    frames = target_frames(x, target, 2)
    assert frames.shape == (3, 4, 2, 6, 6) and torch.equal(frames[1], x[1, :, 2:4])
    assert ShapeProbe(channels=4, width=8)(frames.transpose(1, 2).flatten(0, 1)).shape == (6, 3)


def test_shape_probe_labels_every_latent_frame_with_its_segments_shape(tmp_path):
    from train_generator import Data
    from train_shape_probe import frame_labels

    segments = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]])
    specs = [[{"shape": "square", "colour": "red", "background": "black"},
              {"shape": "triangle", "colour": "red", "background": "black"}],
             [{"shape": "circle", "colour": "red", "background": "black"}]]
    torch.save({"latents": torch.zeros(2, 4, 2, 2, 2, dtype=torch.float16), "segments": segments, "specs": specs},
               tmp_path / "shard_0000.pt")
    pairs, labels = frame_labels(Data(str(tmp_path / "shard_*.pt")))
    assert pairs.tolist() == [[c, f] for c in range(2) for f in range(4)]
    assert labels.tolist() == [1, 1, 2, 2, 0, 0, 0, 0]


def test_pgd_perturbation_stays_in_its_ball_and_raises_the_probes_loss():
    from train_shape_probe import pgd_perturb
    from trainutil import ShapeProbe

    torch.manual_seed(0)
    probe = ShapeProbe(4, width=8)
    x, labels = torch.randn(6, 4, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    radius = 0.1
    delta = pgd_perturb(probe, x, labels, radius, steps=5)
    assert delta.shape == x.shape and not delta.requires_grad
    norms = delta.flatten(1).norm(dim=1)
    assert (norms <= radius * (4 * 8 * 8) ** 0.5 * (1 + 1e-5)).all()
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        before, after = ce(probe(x), labels), ce(probe(x + delta), labels)
        noise = ce(probe(x + torch.randn_like(x) * radius), labels)
    assert after > before + 1e-3 and after > noise  # an attack, not random noise


def test_halo_weight_covers_a_ring_around_the_object_only():
    """The halo term weighs the background just outside an object (where a decoder's dark or
    bright rim fills the corners of a square's box), not the object and not the far background."""
    from trainutil import object_pixel_weight

    video = -torch.ones(1, 3, 1, 32, 32)
    video[..., 12:20, 12:20] = 1.0  # an 8x8 white square on black
    plain = object_pixel_weight(video, 10.0)
    halo = object_pixel_weight(video, 10.0, halo_weight=5.0, halo_px=4)
    assert torch.equal(halo[..., 12:20, 12:20], plain[..., 12:20, 12:20])  # the object: unchanged
    assert (halo[..., 8:12, 12:20] == 5.0).all() and (halo[..., 20:24, 8:24] == 5.0).all()  # the ring
    assert halo[..., 0, 0] == 1.0 and halo[..., 25:, :].eq(1.0).all()  # far background: unchanged


def test_eval_builtin_breaks_adherence_down_by_the_prompted_value():
    """Which prompts keep a figure down (squares, circling) must be read off the summary, not
    re-derived by hand: each value's mean over the segments that asked for it, across runs."""
    from eval_builtin import breakdown, breakdown_table

    def seg(shape, motion, a_shape, a_motion):
        return {"attributes": {"shape": shape, "motion": motion, "colour": "red"},
                "adherence": {"shape": a_shape, "motion": a_motion}}

    reports = [{"segments": [seg("square", "circling", 0.0, 0.2), seg("circle", "right", 1.0, 0.8)]},
               {"segments": [seg("square", "right", 0.5, None), seg("triangle", "right", 0.9, 1.0),
                             seg("circle", None, 1.0, None)]}]  # a prompt that names no motion
    got = breakdown(reports)
    assert got["shape"] == {"circle": 1.0, "square": 0.25, "triangle": 0.9}
    assert got["motion"] == {"circling": 0.2, "right": 0.9}  # unnamed or unjudged motion is left out
    text = breakdown_table({"a": {"by_prompt": got}, "b": {"by_prompt": {"shape": {"square": 0.5}, "motion": {}}}})
    assert "| shape: square | 0.25 | 0.50 |" in text and "| motion: circling | 0.20 | - |" in text


def test_fresh_decoder_keeps_the_latent_space_and_loads_back_at_its_new_widths(tmp_path):
    from train_autoencoder import with_fresh_decoder

    from longvid.autoencoder import AutoencoderConfig, CausalAutoencoder
    from longvid.loading import load_autoencoder, save_autoencoder

    torch.manual_seed(0)
    old = CausalAutoencoder(AutoencoderConfig(latent_channels=4, decoder_channels=(16, 12, 8, 4)))
    old.latents_mean.normal_()
    old.latents_std.uniform_(0.5, 2.0)
    new = with_fresh_decoder(old, (24, 16, 12, 8))
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        # the same latents (a generator trained on them keeps working)...
        assert torch.equal(new.encode(video), old.encode(video))
        # ...under a decoder of the new widths, which the file's metadata carries
        save_autoencoder(new, tmp_path / "ae.safetensors")
        back = load_autoencoder(tmp_path / "ae.safetensors")
        assert back.cfg.decoder_channels == (24, 16, 12, 8)
        z = new.encode(video)
        assert back.decode(z).shape == old.decode(z).shape == (1, 3, 5, 32, 32)
        assert torch.equal(back.decode(z), new.decode(z))


def test_blur_latents_spreads_each_channel_and_frame_over_its_own_neighbours_only():
    from trainutil import blur_latents

    spike = torch.zeros(1, 2, 2, 5, 5)  # (B, C, F, h, w)
    spike[0, 1, 0, 2, 2] = 16.0
    blurred = blur_latents(spike, 1.0)
    assert torch.equal(blurred[0, 1, 0, 1:4, 1:4], torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]))
    assert blurred.sum() == 16.0 and blurred[0, 0].abs().sum() == 0 and blurred[0, 1, 1].abs().sum() == 0
    assert torch.equal(blur_latents(spike, 0.0), spike)
    assert torch.allclose(blur_latents(spike, 0.5), (spike + blurred) / 2)
    pair = torch.cat([spike, spike])  # one share per sample
    mixed = blur_latents(pair, torch.tensor([0.0, 1.0]))
    assert torch.equal(mixed[0], spike[0]) and torch.allclose(mixed[1], blurred[0])


def test_latent_blur_blurs_some_clips_by_a_random_share_and_trains_the_encoder_through_it():
    from train_autoencoder import augment_latents
    from trainutil import blur_latents

    torch.manual_seed(0)
    z = torch.randn(400, 2, 1, 6, 6, requires_grad=True)
    assert torch.equal(augment_latents(z, 0.0, 0.0), z)
    out = augment_latents(z, 0.0, 1.0)
    full = blur_latents(z, 1.0)
    # each clip is z + share * (blur(z) - z) with its own share in [0, 1]; a quarter keep share 0
    share = ((out - z) * (full - z)).sum(dim=(1, 2, 3, 4)) / (full - z).pow(2).sum(dim=(1, 2, 3, 4))
    assert torch.allclose(out, blur_latents(z, share.detach()), atol=1e-5)
    assert share.min() >= -1e-6 and share.max() <= 1 + 1e-6
    assert 0.15 < (share.abs() < 1e-6).float().mean() < 0.35 and share.max() > 0.9
    out.pow(2).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_report_blur_without_report_is_refused_before_any_training(tmp_path):
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_autoencoder.py"
    done = subprocess.run(
        [sys.executable, str(script), "--report-blur", "1", "--steps", "0", "--full-steps", "0",
         "--run", str(tmp_path / "run"), "--out", str(tmp_path / "ae.safetensors")],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "add --report AUTOENCODER" in done.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "ae.safetensors").exists()


def test_motion_share_sets_the_motion_of_that_share_of_autoencoder_clips(monkeypatch):
    """`--motion-share circling=0.5`: half the training clips circle (the world alone: 1 in 7),
    the rest are drawn as before; bad shares are refused with the fix named."""
    import argparse

    import train_autoencoder

    motions = []
    real = train_autoencoder.make_clip

    def recording(spec, *args, **kwargs):
        motions.append(spec.motion)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(train_autoencoder, "make_clip", recording)
    x = train_autoencoder.sample_batch(np.random.default_rng(0), 400, 5, 16, 16, {"circling": 0.5})
    assert x.shape == (400, 3, 5, 16, 16)
    forced = [m for m in motions if m == "circling"]
    # 0.5 forced + 1/7 of the other half's unswitched clips (switching clips are not recorded)
    assert 0.45 < len(forced) / 400 < 0.62, len(forced)
    ap = argparse.ArgumentParser()
    assert train_autoencoder.parse_motion_share(ap, ["circling=0.4", "still=0.1"]) == {"circling": 0.4, "still": 0.1}
    for bad in (["spinning=0.5"], ["circling=half"], ["circling=2"], ["circling=0.6", "still=0.6"]):
        with pytest.raises(SystemExit):
            train_autoencoder.parse_motion_share(ap, bad)


def test_context_blur_softens_the_context_of_some_samples_and_never_the_target():
    from train_generator import blur_context
    from trainutil import blur_latents

    torch.manual_seed(0)
    x = torch.randn(200, 2, 5, 6, 6)  # (B, C, slots, h, w)
    target = torch.zeros(200, 5, dtype=torch.bool)
    target[:, 3:] = True
    assert torch.equal(blur_context(x, target, 0.0), x)
    out = blur_context(x, target, 1.0)
    assert torch.equal(out[:, :, 3:], x[:, :, 3:])  # the target block stays sharp
    ctx, full = x[:, :, :3], blur_latents(x, 1.0)[:, :, :3]
    share = ((out[:, :, :3] - ctx) * (full - ctx)).sum(dim=(1, 2, 3, 4)) / (full - ctx).pow(2).sum(dim=(1, 2, 3, 4))
    assert torch.allclose(out[:, :, :3], blur_latents(ctx, share), atol=1e-5)
    assert 0.15 < (share.abs() < 1e-6).float().mean() < 0.35 and share.max() > 0.9 and share.min() > -1e-6


def test_partner_clips_exchange_the_shapes_along_the_same_trajectory():
    """`prepare_latents.py --partners`: the partner is the same scene (same places, same motion,
    same switches) with every shape exchanged, and asking for it leaves the main clip unchanged."""
    from prepare_latents import sample_clip

    from longvid.evaluate import detect_frame

    plain = [sample_clip(np.random.default_rng([1, s]), 9, 64)[0] for s in range(4)]
    for s in range(4):
        frames, seg, specs, partner, partner_specs = sample_clip(np.random.default_rng([1, s]), 9, 64,
                                                                  np.random.default_rng([1, s, 1]))
        assert np.array_equal(frames, plain[s])
        swap = {"circle": "square", "square": "circle"}
        for a, b in zip(specs, partner_specs):
            assert b.shape == swap.get(a.shape, b.shape) and b.shape != a.shape
            assert b == a.__class__(**{**a.__dict__, "shape": b.shape})  # nothing else changes
        for f in range(0, len(frames), 5):
            mine, theirs = detect_frame(frames[f]).objects, detect_frame(partner[f]).objects
            assert len(mine) == len(theirs)
            for o, q in zip(sorted(mine, key=lambda o: tuple(o.centroid)), sorted(theirs, key=lambda o: tuple(o.centroid))):
                assert np.hypot(*(o.centroid - q.centroid)) < 2.0  # triangles' centroids sit lower


def test_pair_loss_asks_the_two_predictions_to_differ_as_the_two_true_blocks_do():
    from train_generator import pair_loss

    x0 = torch.randn(2, 3, 5, 4, 4)
    x0_partner = x0.clone()
    x0_partner[:, :, 3:, 1:3, 1:3] += 1.0  # the partner's shape differs in a few cells of the block
    target = torch.zeros(2, 5, dtype=torch.bool)
    target[:, 3:] = True
    noise = torch.randn_like(x0)
    v, v_partner = noise - x0, noise - x0_partner  # the true flows under the same noise
    assert pair_loss(v, v_partner, x0, x0_partner, target) < 1e-10
    assert torch.isclose(pair_loss(v, v, x0, x0_partner, target), torch.tensor(1.0))  # blind to the word
    # Only the target block counts, and a shared error does not.
    off = v.clone()
    off[:, :, :3] += 5.0
    assert pair_loss(off + 0.3, v_partner + 0.3, x0, x0_partner, target) < 1e-10
    # Relative: a small object's difference counts as much as a big one's.
    big = x0.clone()
    big[:, :, 3:] += 2.0
    assert torch.isclose(pair_loss(v, v, x0, big, target), torch.tensor(1.0))


def test_pair_batch_takes_the_partners_block_and_switches_the_caption_after_the_sink(tmp_path):
    from train_generator import Data, build_batch, pair_batch

    from longvid.world import parse_prompt

    n, t, k, S, W = 3, 12, 3, 2, 3
    latents = torch.arange(n * t, dtype=torch.float16).reshape(n, t, 1, 1, 1).expand(n, t, 2, 2, 2).contiguous()
    spec = {"shape": "circle", "colour": "red", "background": "black"}
    torch.save({"latents": latents, "segments": torch.zeros(n, t, dtype=torch.long), "specs": [[spec]] * n,
                "partner_latents": -latents, "partner_specs": [[{**spec, "shape": "square"}]] * n},
               tmp_path / "shard_0000.pt")
    data = Data(str(tmp_path / "shard_*.pt"))
    rng = np.random.default_rng(0)
    clips, x0, masks, target, seg, starts = build_batch(data, rng, 12, S, W, k, 0.0)
    x_partner, caps, index_a, index_b = pair_batch(data, clips, x0, target, seg, starts, S, rng)
    for i in range(12):
        assert torch.equal(x_partner[:, :, ~target[i]][i], x0[:, :, ~target[i]][i])  # same context
        assert torch.equal(x_partner[i, :, target[i]], -x0[i, :, target[i]])  # the partner's block
        sink = min(S, int(starts[i]))
        shapes_a = [parse_prompt(caps[j]).shape for j in index_a[i].tolist()]
        shapes_b = [parse_prompt(caps[j]).shape for j in index_b[i].tolist()]
        assert set(shapes_a) == {"circle"}
        assert shapes_b == ["circle"] * sink + ["square"] * (len(shapes_b) - sink)


def test_a_wider_latent_memory_starts_as_the_decoder_it_widens_and_never_narrows():
    from train_autoencoder import with_wider_latent_memory

    from longvid.autoencoder import AutoencoderConfig, CausalAutoencoder

    torch.manual_seed(0)
    ae = CausalAutoencoder(AutoencoderConfig(latent_channels=4, encoder_channels=(4, 6, 8, 8),
                                             decoder_channels=(8, 6, 4, 4))).eval()
    ae.latents_std.fill_(1.5)
    wide = with_wider_latent_memory(ae, 2).eval()
    assert wide.cfg.decoder_latent_span == 2 and torch.equal(wide.latents_std, ae.latents_std)
    z = torch.randn(1, 4, 5, 4, 4)
    with torch.no_grad():
        assert torch.allclose(wide.decode(z), ae.decode(z), atol=1e-6)
        video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
        assert torch.equal(wide.encode(video), ae.encode(video))  # the same latent space
    with pytest.raises(ValueError, match="already sees 2"):
        with_wider_latent_memory(wide, 1)


def test_a_wider_decoder_keeps_the_latent_space_and_is_saved_with_its_widths(tmp_path):
    from train_autoencoder import with_wider_decoder

    from longvid.autoencoder import AutoencoderConfig, CausalAutoencoder
    from longvid.loading import load_autoencoder, save_autoencoder

    torch.manual_seed(0)
    ae = CausalAutoencoder(AutoencoderConfig(latent_channels=4, encoder_channels=(4, 6, 8, 8),
                                             decoder_channels=(8, 6, 4, 4))).eval()
    ae.latents_std.fill_(1.5)
    wide = with_wider_decoder(ae, (10, 8, 6, 6)).eval()
    assert wide.cfg.decoder_channels == (10, 8, 6, 6) and torch.equal(wide.latents_std, ae.latents_std)
    z = torch.randn(1, 4, 5, 4, 4)
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(wide.decode(z), ae.decode(z), atol=1e-5)
        assert torch.equal(wide.encode(video), ae.encode(video))
    save_autoencoder(wide, tmp_path / "wide.safetensors")
    again = load_autoencoder(tmp_path / "wide.safetensors").eval()
    with torch.no_grad():
        assert again.cfg.decoder_channels == (10, 8, 6, 6) and torch.equal(again.decode(z), wide.decode(z))


def test_latent_gaps_compare_the_one_clip_with_one_thing_changed():
    """probe_shapes.latent_gaps: with an 'encoder' that is the frames themselves (8x8 means),
    every change is measured (none reads 0), a move of 3 px is further than one of 1 px, and a
    triangle is further from the circle than a square of about its area is."""
    from probe_shapes import latent_gaps

    class Pool:
        def encode(self, video):
            return torch.nn.functional.avg_pool3d(video, (1, 8, 8))

    gaps = latent_gaps(Pool(), sizes=("large",), seeds=(0,), frames=2)["large"]
    assert set(gaps) == {"square", "triangle", "moved 1 px", "moved 3 px", "orange"}
    assert 0 < gaps["moved 1 px"] < gaps["moved 3 px"]
    assert 0 < gaps["square"] < gaps["triangle"]
    assert gaps["orange"] > 0


def test_deepen_keeps_what_the_trained_model_computes_and_trains_the_new_blocks():
    """A 4-layer model made from a trained 2-layer one predicts exactly what it did (the new
    blocks start as the identity), keeps the trained blocks in order, and its new blocks get a
    gradient from the first step; a depth that is not a multiple is refused."""
    from conftest import TEXT_DIM, tiny_config
    from train_generator import deepen

    from longvid.model import build_transformer

    torch.manual_seed(0)
    shallow = build_transformer(tiny_config().model).eval()
    for p in shallow.parameters():  # trained-looking weights: no zero output projections
        p.data.normal_(0.0, 0.2)
    cfg = tiny_config(model={"num_layers": 4}).model
    torch.manual_seed(1)
    deep = build_transformer(cfg).eval()
    state, added = deepen(shallow.state_dict(), deep)
    deep.load_state_dict(state)
    assert added == [1, 3]
    assert torch.equal(deep.blocks[2].attn1.to_q.weight, shallow.blocks[1].attn1.to_q.weight)

    x, t = torch.randn(2, cfg.in_channels, 3, 4, 4), torch.full((2, 3), 500.0)
    emb = torch.randn(2, 5, TEXT_DIM)
    with torch.no_grad():
        torch.testing.assert_close(deep(x, t, deep.text_context(emb)), shallow(x, t, shallow.text_context(emb)))
    deep.train()
    deep(x, t, deep.text_context(emb)).square().mean().backward()
    assert deep.blocks[1].ffn.net[2].weight.grad.abs().sum() > 0
    assert deep.blocks[3].attn1.to_out[0].weight.grad.abs().sum() > 0

    with pytest.raises(SystemExit, match="multiple"):
        deepen(shallow.state_dict(), build_transformer(tiny_config(model={"num_layers": 3}).model))


def _tiny_autoencoder(latent_channels: int = 4):
    from longvid.autoencoder import AutoencoderConfig, CausalAutoencoder

    return CausalAutoencoder(AutoencoderConfig(latent_channels=latent_channels, encoder_channels=(4, 6, 8, 8),
                                               decoder_channels=(8, 6, 4, 4))).eval()


def test_shape_channels_start_as_the_autoencoder_they_grow_and_are_refused_twice():
    """with_shape_channels: the old channels encode as before, the decoder ignores the new ones
    until trained, the old latent statistics are kept and the new ones start at 0 / 1."""
    from train_autoencoder import with_shape_channels

    from longvid.world import SHAPES

    torch.manual_seed(0)
    ae = _tiny_autoencoder()
    ae.latents_mean.fill_(0.3)
    ae.latents_std.fill_(1.5)
    grown = with_shape_channels(ae).eval()
    n = len(SHAPES)
    assert grown.cfg.latent_channels == 4 + n and grown.cfg.shape_channels == n
    assert torch.equal(grown.latents_std[:4], ae.latents_std) and torch.equal(grown.latents_std[4:], torch.ones(n))
    assert torch.equal(grown.latents_mean[4:], torch.zeros(n))
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        z = grown.encode(video)
        assert torch.equal(z[:, :4], ae.encode(video))
        assert z[:, 4:].abs().sum() > 0  # the new channels are written from the first step
        torch.testing.assert_close(grown.decode(torch.cat([z[:, :4], torch.randn_like(z[:, 4:])], dim=1)),
                                   ae.decode(z[:, :4]))
    with pytest.raises(ValueError, match="already has 3 shape channels"):
        with_shape_channels(grown)


def test_shape_maps_put_each_objects_coverage_in_its_shapes_channel():
    """object_cover draws the truth's objects as coverage (a background switch changes nothing),
    and shape_maps puts each latent cell's share of it in its shape's channel."""
    from trainutil import SHAPE_LEVEL, object_cover, shape_maps

    from longvid.world import SHAPES, make_clip

    square = SceneSpec(shape="square", colour="white", background="navy", size="large")
    triangle = SceneSpec(shape="triangle", colour="red", background="gray", size="large")
    frames, truth = make_clip([(0, square), (4, triangle)], 9, 0, 64)
    cover = torch.from_numpy(np.stack([object_cover(truth.spec_at(f), truth.positions[f], 64) for f in range(9)]))
    object_pixels = np.abs(frames[0].astype(int) - BACKGROUNDS["navy"]).max(-1) > 12
    assert np.array_equal(cover[0].numpy() > 0.05, object_pixels)
    assert 0.02 < float(cover[8].mean()) < 0.5  # the triangle, on its new background
    shapes = torch.tensor([[SHAPES.index("square")] * 4 + [SHAPES.index("triangle")] * 5])
    maps = shape_maps(cover[None], shapes, factor=8, tf=4)  # latent frames: pixel frames 0, 4, 8
    assert maps.shape == (1, len(SHAPES), 3, 8, 8)
    sq, tri, circle = (SHAPES.index(s) for s in ("square", "triangle", "circle"))
    assert maps[0, sq, 0].sum() > 1 and maps[0, tri, 0].sum() == 0 and maps[0, circle].sum() == 0
    assert maps[0, sq, 1:].sum() == 0 and maps[0, tri, 1].sum() > 1
    # each cell holds the share of its 8x8 pixels the object covers
    share = cover[0].numpy().reshape(8, 8, 8, 8).mean((1, 3))
    np.testing.assert_allclose(maps[0, sq, 0].numpy(), SHAPE_LEVEL * share, atol=1e-5)


def test_stand_in_clips_move_the_same_objects_drawn_with_other_shapes():
    from train_autoencoder import sample_shape_batch

    from longvid.evaluate import detect_frame
    from longvid.vae import to_uint8
    from longvid.world import SHAPES

    rng = np.random.default_rng(3)
    x, stand_in, shapes, stand_in_shapes, cover = sample_shape_batch(rng, 4, 9, 128, 128, swap_share=1.0)
    assert x.shape == stand_in.shape == (4, 3, 9, 128, 128) and shapes.shape == (4, 9)
    assert cover.shape == (4, 9, 128, 128) and float(cover.max()) == 1.0
    for b in range(4):
        clip, other = to_uint8(x[b : b + 1]), to_uint8(stand_in[b : b + 1])
        for f in (0, 8):
            d, e = detect_frame(clip[f]), detect_frame(other[f])
            assert d.shape == SHAPES[int(shapes[b, f])] and e.shape != d.shape
            assert e.shape == SHAPES[int(stand_in_shapes[b, f])]
            assert len(d.objects) == len(e.objects)
            for a, c in zip(sorted(tuple(o.centroid) for o in d.objects), sorted(tuple(o.centroid) for o in e.objects)):
                assert np.hypot(a[0] - c[0], a[1] - c[1]) < 2.0
    _, same, shapes, unswapped, cover = sample_shape_batch(np.random.default_rng(3), 2, 9, 128, 64, swap_share=0.0)
    again, _, _, _, _ = sample_shape_batch(np.random.default_rng(3), 2, 9, 128, 64, swap_share=0.0)
    assert torch.equal(same, again) and same.shape[-1] == 64 and cover.shape[-1] == 64
    assert torch.equal(unswapped, shapes)


def test_square_share_makes_squares_drawn_over_other_shapes_and_leaves_old_streams_alone():
    from train_autoencoder import sample_shape_batch

    from longvid.world import SHAPES

    x, stand_in, shapes, _, _ = sample_shape_batch(np.random.default_rng(5), 6, 5, 64, 64, swap_share=0.0,
                                                square_share=1.0)
    assert (shapes[:, 0] == SHAPES.index("square")).all()
    assert all(not torch.equal(x[b], stand_in[b]) for b in range(6))
    # without squares forced, the random stream is the one session 27's autoencoder was trained on
    x, stand_in, shapes, _, _ = sample_shape_batch(np.random.default_rng(5), 3, 5, 64, 64, swap_share=0.5,
                                                square_share=0.0)
    assert shapes.tolist() == [[2, 2, 0, 0, 0], [0, 0, 0, 2, 2], [0, 0, 0, 0, 0]]
    assert float(x.sum()) == pytest.approx(-85602.97, abs=0.1)
    assert float(stand_in.sum()) == pytest.approx(-85449.83, abs=0.1)


def test_widen_latents_keeps_what_the_trained_model_computes_on_its_channels():
    from conftest import TEXT_DIM, tiny_config
    from train_generator import widen_latents

    from longvid.model import build_transformer

    torch.manual_seed(0)
    narrow = build_transformer(tiny_config().model).eval()
    for p in narrow.parameters():
        p.data.normal_(0.0, 0.2)
    c = narrow.config.in_channels
    wide = build_transformer(tiny_config(model={"in_channels": c + 3, "out_channels": c + 3}).model).eval()
    state, added = widen_latents(narrow.state_dict(), wide)
    wide.load_state_dict(state)
    assert added == 3
    x, t, emb = torch.randn(2, c, 3, 8, 8), torch.full((2, 3), 500.0), torch.randn(2, 5, TEXT_DIM)
    with torch.no_grad():
        out = wide(torch.cat([x, torch.randn(2, 3, 3, 8, 8)], dim=1), t, wide.text_context(emb))
        torch.testing.assert_close(out[:, :c], narrow(x, t, narrow.text_context(emb)))
        assert torch.equal(out[:, c:], torch.zeros_like(out[:, c:]))
    with pytest.raises(SystemExit, match="channels"):
        widen_latents(narrow.state_dict(), build_transformer(tiny_config(model={"in_channels": c + 3}).model))


def test_label_obedience_reports_each_pair_of_named_and_underlying_shapes():
    from train_autoencoder import label_obedience

    from longvid.loading import load_autoencoder

    ae = load_autoencoder(Path(__file__).resolve().parents[1] / "longvid" / "weights" / "shapes"
                          / "autoencoder-shapes.safetensors")
    overall, by_pair = label_obedience(ae, 128, clips=3)
    assert by_pair and 0.0 <= overall <= 1.0
    for pair, share in by_pair.items():
        named, under = pair.split(" over ")
        assert named != under and {named, under} <= {"circle", "square", "triangle"} and 0.0 <= share <= 1.0
    assert min(by_pair.values()) <= overall <= max(by_pair.values())


def test_a_decoder_only_run_on_shape_channels_reads_the_frozen_encoder_and_has_no_anchor():
    """shape_channel_losses with no reference (`--decoder-only` on an autoencoder that has shape
    channels): the decoder's old channels are the frozen encoder's, the stand-in's on swapped
    clips, and there is no anchor term."""
    from train_autoencoder import sample_shape_batch, shape_channel_losses, with_shape_channels

    torch.manual_seed(0)
    ae = with_shape_channels(_tiny_autoencoder()).eval()
    x, stand_in, shapes, stand_in_shapes, cover = sample_shape_batch(np.random.default_rng(1), 2, 5, 32, 32,
                                                                     swap_share=1.0)
    with torch.no_grad():
        z = ae.encode(x)
        terms = shape_channel_losses(ae, None, z, x, stand_in, shapes, stand_in_shapes, cover)
        assert float(terms["anchor"]) == 0.0
        torch.testing.assert_close(terms["stand_in"], ae.encode(stand_in)[:, :4])
        assert terms["maps"].shape == (2, 3, 2, 4, 4)


def test_the_decoder_of_a_decoder_only_run_reads_the_shape_maps_in_the_units_the_encoder_writes():
    """A decoder-only run keeps the measured latent statistics, so the true shape maps must be
    normalised before decode() undoes them (session 29's run fed them raw: the decoder saw them
    at a third of their scale), and the encoder's shape loss compares like with like."""
    from train_autoencoder import decoder_latents, sample_shape_batch, shape_channel_losses, with_shape_channels

    torch.manual_seed(0)
    ae = with_shape_channels(_tiny_autoencoder()).eval()
    ae.latents_mean[4:] = torch.tensor([0.07, 0.04, 0.02])
    ae.latents_std[4:] = torch.tensor([0.46, 0.35, 0.26])
    x, stand_in, shapes, stand_in_shapes, cover = sample_shape_batch(np.random.default_rng(1), 2, 5, 32, 32,
                                                                     swap_share=0.0)
    with torch.no_grad():
        z = ae.encode(x)
        terms = shape_channel_losses(ae, None, z, x, stand_in, shapes, stand_in_shapes, cover)
        latents = decoder_latents(ae, terms, noise=0.0, blur=0.0, shape_blur=0.0)
        mean, std = ae.latents_mean[4:, None, None, None], ae.latents_std[4:, None, None, None]
        torch.testing.assert_close(latents[:, 4:] * std + mean, terms["maps"])  # what decode() sees
        torch.testing.assert_close(latents[:, :4], z[:, :4])
        exact = torch.cat([z[:, :4], latents[:, 4:]], dim=1)
        assert float(shape_channel_losses(ae, None, exact, x, stand_in, shapes, stand_in_shapes, cover)["shape"]) < 1e-10


def test_hedged_shape_maps_scale_each_clip_and_leak_its_coverage_into_every_shape_channel():
    from train_autoencoder import hedge_maps

    maps = torch.zeros(64, 3, 2, 4, 4)
    maps[:, 1, :, 1:3, 1:3] = 4.0  # squares covering four cells
    state = torch.get_rng_state()
    torch.testing.assert_close(hedge_maps(maps, 1.0, 0.0), maps)
    assert torch.equal(torch.get_rng_state(), state)  # unhedged runs draw the same random numbers as before
    torch.manual_seed(0)
    out = hedge_maps(maps, 0.5, 0.3)
    cells = out[:, :, :, 1:3, 1:3]
    assert torch.equal(out[:, :, :, 0], torch.zeros_like(out[:, :, :, 0]))  # no coverage, nothing leaks
    per_clip = cells.flatten(2)
    assert torch.equal(per_clip, per_clip[:, :, :1].expand_as(per_clip))  # one scale and leak per clip and channel
    named, others = per_clip[:, 1, 0], per_clip[:, [0, 2], 0]
    assert 2.0 <= float(named.min()) and float(named.max()) <= 4.0 + 0.3 * 4.0
    assert float(others.min()) >= 0.0 and float(others.max()) <= 0.3 * 4.0 and float(others.std()) > 0.1
    assert float(named.std()) > 0.1
    both = maps.clone()
    both[:, 0, :, 1:3, 1:3] = 2.0  # two shapes' coverage in the same cells: one scale for both
    scaled = hedge_maps(both, 0.5, 0.0)
    torch.testing.assert_close(scaled[:, 0], scaled[:, 1] / 2)


def test_the_shape_source_check_takes_appearance_and_shape_channels_from_the_two_latents():
    from diag_generator import mix_shape_channels as mixed

    a, b = torch.zeros(2, 19, 3, 4, 4), torch.ones(2, 19, 3, 4, 4)
    out = mixed(a, b, 3)
    assert torch.equal(out[:, :16], a[:, :16]) and torch.equal(out[:, 16:], b[:, 16:])


@pytest.mark.parametrize("extra, message", [
    ([], "add --decoder-only"),
    (["--decoder-only"], "needs an autoencoder with shape channels"),
    (["--decoder-only", "--hedge-maps", "0", "0.2"], "LOW in (0, 1] and LEAK 0 or more, got 0 0.2"),
])
def test_decoder_options_are_refused_where_they_cannot_apply(tmp_path, extra, message):
    import subprocess

    from longvid.loading import save_autoencoder

    save_autoencoder(_tiny_autoencoder(), tmp_path / "plain.safetensors")
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_autoencoder.py"
    done = subprocess.run(
        [sys.executable, str(script), "--appearance-blur", "2", *extra, "--init", str(tmp_path / "plain.safetensors"),
         "--steps", "0", "--full-steps", "0", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "ae.safetensors")],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "ae.safetensors").exists()


def test_shape_channel_weights_weigh_the_last_channels_and_keep_the_mean():
    from train_generator import channel_weights

    w = channel_weights(19, 3, 4.0)
    assert w.shape == (19,) and float(w.mean()) == pytest.approx(1.0)
    assert torch.allclose(w[16:], 4 * w[0]) and torch.allclose(w[:16], w[0].expand(16))
    assert torch.equal(channel_weights(16, 0, 4.0), torch.ones(16))


def test_the_compiled_training_forward_computes_what_the_model_does():
    """train_generator.py --compile trains through torch.compile of the model: the same numbers
    (here under the bf16 autocast it trains with, with and without grad), the module untouched."""
    from conftest import TEXT_DIM, tiny_config
    from train_generator import training_forward

    from longvid.model import build_transformer

    torch.manual_seed(0)
    model = build_transformer(tiny_config().model)
    assert training_forward(model, False) is model
    compiled = training_forward(model, True)
    assert compiled is not model and compiled._orig_mod is model
    x, t = torch.randn(2, model.config.in_channels, 4, 4, 4), torch.rand(2, 4) * 1000
    mask = torch.tril(torch.ones(4, 4, dtype=torch.bool))[None].repeat(2, 1, 1)
    text = model.text_context(torch.randn(2, 5, TEXT_DIM)).per_frame(torch.tensor([0, 0, 1, 1, 1, 1, 0, 0]))
    kwargs = dict(frame_positions=torch.arange(4), frame_mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = model(x, t, text, **kwargs).float()
        fast = compiled(x, t, text, **kwargs).float()
        with torch.no_grad():
            fast_no_grad = compiled(x, t, text, **kwargs).float()
    assert torch.allclose(fast, eager, atol=2e-2, rtol=2e-2)
    assert torch.allclose(fast_no_grad, eager, atol=2e-2, rtol=2e-2)
    fast.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert list(model.state_dict()) == list(build_transformer(tiny_config().model).state_dict())


def test_retrain_runs_the_missing_stages_in_order_and_resumes_after_a_failure(tmp_path):
    from retrain import Stage, run_stages

    out = tmp_path / "retrain"
    out.mkdir()
    (out / "a.out").write_text("from an earlier run")
    todo = [Stage("a", ["a.py"], out / "a.out"), Stage("b", ["b.py", "--x", "1"], out / "b.out"),
            Stage("c", ["c.py"], out / "done")]
    calls, fail = [], {"c"}

    class Done:
        def __init__(self, code: int) -> None:
            self.returncode = code

    def run(cmd, cwd):
        name = Path(cmd[1]).stem
        calls.append((name, cmd[2:]))
        if name in fail:
            return Done(1)
        (out / f"{name}.out").write_text("made")
        return Done(0)

    with pytest.raises(SystemExit, match="stage c failed.*again"):
        run_stages(todo, out, run=run)
    assert calls == [("b", ["--x", "1"]), ("c", [])]
    assert not (out / "done").exists()  # a failed stage is not marked done
    fail.clear()
    assert run_stages(todo, out, run=run) == ["c"]  # the rerun carries on where it stopped
    assert (out / "done").exists()
    rows = (out / "stages.csv").read_text().splitlines()
    assert rows[0] == "stage,minutes,finished" and [r.split(",")[0] for r in rows[1:]] == ["b", "c"]
    assert run_stages(todo, out, run=run) == [] and len(calls) == 3
    calls.clear()
    (out / "b.out").unlink()
    assert run_stages(todo, out, run=run, dry_run=True) == [] and calls == []


def test_retrain_stages_train_from_nothing_and_its_config_names_the_new_weights(tmp_path):
    from retrain import stages, write_config

    from longvid.config import load_config

    todo = stages(tmp_path, threads=2, generator_steps=1000, tail_steps=100, clips=50, compile_model=True)
    assert [s.name for s in todo] == ["autoencoder", "autoencoder-blur", "latents", "generator", "generator-tail"]
    first_generator = todo[3].argv
    assert "--init-from" not in first_generator and "--compile" in first_generator  # no earlier generator
    assert first_generator[first_generator.index("--steps") + 1] == "1000"
    tail = todo[4].argv
    assert tail[tail.index("--init-from") + 1] == str(tmp_path / "generator" / "transformer.safetensors")
    cfg = load_config(write_config(tmp_path))
    builtin = load_config("configs/longvid-shapes.yaml")
    assert cfg.model == builtin.model and cfg.schedule == builtin.schedule and cfg.cache == builtin.cache
    assert cfg.weights.transformer == str((tmp_path / "generator-tail" / "transformer.safetensors").resolve())
    assert cfg.weights.vae == str((tmp_path / "autoencoder-blur" / "autoencoder.safetensors").resolve())


def test_retrain_grows_the_label_model_from_its_own_base_and_never_from_committed_weights(tmp_path):
    """`--with-labels`: the label chain (sessions 27-34) comes after the base, each stage reads only
    files that the base or an earlier stage writes (no committed weight file: a default pointing
    into longvid/weights/ would quietly reuse them), and the config it leaves names its last files."""
    from retrain import label_stages, smoke, stages, write_label_configs

    from longvid.config import load_config

    todo = stages(tmp_path, threads=2, generator_steps=1000, tail_steps=100, clips=50, compile_model=True)
    todo += label_stages(tmp_path, threads=2, compile_model=True)
    names = [s.name for s in todo]
    assert names[5:] == ["autoencoder-shapes", "autoencoder-shapes-squares", "latents-labels", "autoencoder-labels",
                         *[f"generator-labels-{i}" for i in range(1, 5)], *[f"decoder-noise-{i}" for i in range(1, 4)],
                         *[f"decoder-tune-{i}" for i in range(1, 5)], "decoder-noise-4", "decoder-wholeframe",
                         "decoder-noise-5", *[f"decoder-outline-{i}" for i in range(1, 5)]]
    written = {str(s.output) for s in todo} | {str(s.output.parent / "transformer.safetensors") for s in todo}
    written |= {str(tmp_path / "longvid-shapes-labels.yaml"), str(tmp_path / "labels-train.yaml")}
    for i, stage in enumerate(todo):
        before = {str(s.output) for s in todo[:i]} | {str(s.output.parent / "transformer.safetensors") for s in todo[:i]}
        for arg in stage.argv[1:]:
            assert "longvid/weights" not in arg, (stage.name, arg)
            if arg.endswith(".safetensors") and arg != str(stage.output) and "--out" not in stage.argv[stage.argv.index(arg) - 1]:
                assert arg in before, (stage.name, arg)
    defaults_into_the_repo = {"train_autoencoder.py": ["--init", "--reference"], "prepare_latents.py": ["--autoencoder"],
                              "train_generator.py": ["--config", "--init-from"], "tune_decoder.py": ["--config", "--autoencoder"]}
    for stage in todo[5:]:
        assert all(option in stage.argv for option in defaults_into_the_repo[stage.argv[0]]), stage.name
    squares = todo[names.index("autoencoder-shapes-squares")].argv
    assert squares[squares.index("--run") + 1] == str(tmp_path / "autoencoder-shapes")  # session 28 resumed 27's run
    first = todo[names.index("generator-labels-1")].argv
    assert first[first.index("--init-from") + 1] == str(tmp_path / "generator-tail" / "transformer.safetensors")
    assert "--widen-latents" in first
    noise5 = todo[names.index("decoder-noise-5")].argv
    assert noise5[noise5.index("--init") + 1] == str(tmp_path / "decoder-wholeframe" / "autoencoder.safetensors")
    assert "--decoder-only" in noise5 and noise5[noise5.index("--seed") + 1] == "71"
    for name, init in (("decoder-outline-1", "decoder-noise-5"), ("decoder-outline-2", "decoder-outline-1"),
                       ("decoder-outline-3", "decoder-outline-2"), ("decoder-outline-4", "decoder-outline-3")):
        argv = todo[names.index(name)].argv
        assert argv[argv.index("--autoencoder") + 1] == str(tmp_path / init / "autoencoder.safetensors")
        assert argv[argv.index("--corner-weight") + 1] == "20" and argv[argv.index("--adv-weight") + 1] == "0.15"
        assert argv[argv.index("--crop") + 1] == "0" and argv.count("--true-hedge-maps") == 1
    whole = todo[names.index("decoder-wholeframe")].argv
    assert whole[whole.index("--autoencoder") + 1] == str(tmp_path / "decoder-noise-4" / "autoencoder.safetensors")
    assert whole[whole.index("--crop") + 1] == "0" and whole[whole.index("--batch") + 1] == "4"
    assert whole.count("--crop") == 1 and whole[whole.index("--true-hedge-maps") + 1:][:2] == ["0.7", "0.25"]

    cfg = load_config(write_label_configs(tmp_path))
    builtin = load_config("configs/longvid-shapes-labels.yaml")
    assert cfg.model == builtin.model and cfg.vae.latent_channels == 19
    assert cfg.weights.transformer == str((tmp_path / "generator-labels-4" / "transformer.safetensors").resolve())
    assert cfg.weights.vae == str((tmp_path / "decoder-outline-4" / "autoencoder.safetensors").resolve())
    train = load_config(tmp_path / "labels-train.yaml")
    assert train.weights.vae == str((tmp_path / "autoencoder-shapes-squares" / "autoencoder.safetensors").resolve())

    tuning = todo[names.index("decoder-tune-4")]
    cut = smoke(tuning).argv
    assert cut[cut.index("--steps") + 1] == "3" and cut[cut.index("--eval-samples") + 1] == "4"
    assert tuning.argv[tuning.argv.index("--steps") + 1] == "800"  # smoke() copies, the stage is unchanged


def test_label_stand_ins_are_the_same_scene_drawn_as_circles_and_cover_the_circles():
    """`--shape-labels`: every clip's stand-in is its own scene with every shape drawn as a circle
    (same places), a circle clip is its own stand-in, and the coverage is the circles'."""
    from train_autoencoder import sample_shape_batch

    from longvid.evaluate import detect_frame
    from longvid.vae import to_uint8
    from longvid.world import SHAPES

    x, stand_in, shapes, stand_in_shapes, cover = sample_shape_batch(np.random.default_rng(5), 8, 9, 64, 64,
                                                                     swap_share=0.0, stand_in_shape="circle")
    assert (stand_in_shapes == SHAPES.index("circle")).all()
    assert (shapes != SHAPES.index("circle")).any()
    for b in range(8):
        if (shapes[b] == SHAPES.index("circle")).all():
            assert torch.equal(x[b], stand_in[b])
        frames, drawn = to_uint8(x[b : b + 1]), to_uint8(stand_in[b : b + 1])
        for f in (0, 8):
            mine, theirs = detect_frame(frames[f]).objects, detect_frame(drawn[f]).objects
            assert len(mine) == len(theirs) and detect_frame(drawn[f]).shape == "circle"
            for o, q in zip(sorted(mine, key=lambda o: tuple(o.centroid)), sorted(theirs, key=lambda o: tuple(o.centroid))):
                assert np.hypot(*(o.centroid - q.centroid)) < 2.0
            circle_pixels = np.abs(drawn[f].astype(int) - drawn[f, 0, 0].astype(int)).max(-1) > 12
            covered = cover[b, f].numpy() > 0.05
            assert (covered & circle_pixels).sum() >= 0.9 * (covered | circle_pixels).sum()  # edges aside


def test_label_targets_give_a_square_and_a_circle_on_one_path_the_same_appearance():
    """label_channel_losses: the appearance target is the reference's latents of the circles, the
    shape channels label the clip's shape over the circles' coverage, and an encoder that writes
    exactly those scores zero; what the decoder gets is built from the targets."""
    from train_autoencoder import decoder_latents, label_channel_losses, sample_shape_batch, with_shape_channels

    from longvid.world import SHAPES

    torch.manual_seed(0)
    reference = _tiny_autoencoder()
    ae = with_shape_channels(reference).eval()
    rng = np.random.default_rng(3)
    x, stand_in, shapes, _, cover = sample_shape_batch(rng, 4, 5, 32, 32, swap_share=0.0, square_share=1.0,
                                                       stand_in_shape="circle")
    assert (shapes[:, 0] == SHAPES.index("square")).all()  # some switch shape later
    with torch.no_grad():
        z = ae.encode(x)
        terms = label_channel_losses(ae, reference, z, stand_in, shapes, cover)
        torch.testing.assert_close(terms["stand_in"], reference.encode(stand_in))
        assert not torch.allclose(terms["stand_in"], reference.encode(x))  # not the squares' own latents
        maps = terms["maps"]
        pooled = torch.nn.functional.avg_pool2d(cover[:, ::4], 8)  # latent frame j: pixel frame 4j
        for b in range(4):
            for j in range(2):
                named = int(shapes[b, 4 * j])
                torch.testing.assert_close(maps[b, named, j], 4.0 * pooled[b, j])  # the circles' coverage, labelled
                assert float(maps[b, :, j].sum()) == pytest.approx(float(maps[b, named, j].sum()))
        assert maps[:, SHAPES.index("square"), 0].sum() > 1
        exact = torch.cat([terms["stand_in"], maps], dim=1)  # statistics 0 and 1 on the new channels
        again = label_channel_losses(ae, reference, exact, stand_in, shapes, cover)
        assert float(again["shape"]) < 1e-10 and float(again["anchor"]) < 1e-10
        torch.testing.assert_close(decoder_latents(ae, terms, noise=0.0, blur=0.0, shape_blur=0.0), exact)


def test_a_coverage_autoencoder_becomes_a_label_one_that_sees_the_same_raw_maps():
    from train_autoencoder import as_label_autoencoder, with_shape_channels

    ae = with_shape_channels(_tiny_autoencoder())
    ae.latents_mean[4:] = torch.tensor([0.07, 0.04, 0.02])
    ae.latents_std[4:] = torch.tensor([0.46, 0.35, 0.26])
    old_mean = ae.latents_mean[:4].clone()
    labels = as_label_autoencoder(ae)
    assert labels.cfg.shape_labels and torch.equal(labels.latents_mean[:4], old_mean)
    assert torch.equal(labels.latents_mean[4:], torch.zeros(3)) and torch.equal(labels.latents_std[4:], torch.ones(3))


def test_label_latents_are_the_circles_appearance_then_the_labels():
    """`prepare_latents.py --shape-labels`: the main clip is the one drawn without it, the appearance
    channels are the autoencoder's latents of the same scene drawn as circles, and the label
    channels hold the clip's shape over the circles' coverage."""
    from prepare_latents import encode, label_latents, sample_clip

    from longvid.world import SHAPES

    ae = _tiny_autoencoder()
    seen = set()
    for s in range(6):
        plain = sample_clip(np.random.default_rng([1, s]), 6, 64)
        frames, seg, specs, circles, cover, shapes = sample_clip(np.random.default_rng([1, s]), 6, 64, circles=True)
        assert np.array_equal(frames, plain[0]) and specs == plain[2]
        z = label_latents(ae, circles, cover, shapes)
        assert z.shape == (6, 4 + len(SHAPES), 8, 8)
        torch.testing.assert_close(z[:, :4], encode(ae, circles))
        for j in range(6):
            named = int(shapes[4 * j])  # latent frame j's newest pixel frame
            seen.add(SHAPES[named])
            pooled = cover[4 * j].reshape(8, 8, 8, 8).mean((1, 3))
            np.testing.assert_allclose(z[j, 4 + named].float().numpy(), 4.0 * pooled, atol=4e-3)
            assert float(z[j, 4:].float().sum()) == pytest.approx(float(z[j, 4 + named].float().sum()))
        if all(sp.shape == "circle" for sp in specs):
            assert np.array_equal(circles, frames)
    assert seen - {"circle"}  # squares or triangles were labelled over circles


def test_channel_mass_gives_each_shape_channels_share_of_a_blocks_positive_values():
    from diag_generator import channel_mass

    block = torch.zeros(3, 2, 4, 4)
    block[1, :, 1:3, 1:3] = 4.0  # a square's label
    block[0, :, 1:3, 1:3] = 1.0  # hedged towards the circle
    block[2] = -0.5  # negative values name nothing
    np.testing.assert_allclose(channel_mass(block), [0.2, 0.8, 0.0], atol=1e-6)


def test_sharpest_turn_tells_a_wall_reflection_from_a_rounded_one():
    """The bounce check's measure: a world reflection turns 90 degrees between two steps, a path
    that rounds the corner over several steps turns a fraction of that at a time."""
    from diag_generator import sharpest_turn

    sharp = np.array([[0, 0], [2, 2], [4, 4], [6, 2], [8, 0]], float)  # down-right, then up-right
    angles = np.radians(np.linspace(45, -45, 7))
    rounded = np.cumsum(np.stack([np.cos(angles), np.sin(angles)], 1) * 2, axis=0)
    assert sharpest_turn(sharp) == pytest.approx(90)
    assert sharpest_turn(rounded) == pytest.approx(15)


def test_a_decoder_only_run_on_a_label_autoencoder_trains_its_decoder_on_the_targets(tmp_path):
    """`--decoder-only` on a `--shape-labels` autoencoder: the decoder learns from the targets (the
    --reference's latents of the circles, then the labels), so it needs that reference; the encoder,
    the statistics and the layout stay as they were."""
    import subprocess

    from train_autoencoder import as_label_autoencoder, with_shape_channels

    from longvid.loading import load_autoencoder, save_autoencoder

    torch.manual_seed(0)
    reference = _tiny_autoencoder()
    save_autoencoder(reference, tmp_path / "reference.safetensors")
    save_autoencoder(as_label_autoencoder(with_shape_channels(reference)), tmp_path / "labels.safetensors")
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_autoencoder.py"

    def run(ref: str, out: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(script), "--decoder-only", "--init", str(tmp_path / "labels.safetensors"),
             "--reference", str(tmp_path / ref), "--steps", "2", "--full-steps", "1", "--batch", "2",
             "--frames", "5", "--crop", "32", "--size", "32", "--latent-noise", "0.3", "--threads", "1",
             "--run", str(tmp_path / out), "--out", str(tmp_path / out / "ae.safetensors")],
            capture_output=True, text=True, timeout=600)

    refused = run("labels.safetensors", "wrong")
    assert refused.returncode == 2 and "must be the autoencoder whose latents of the circles" in refused.stderr
    done = run("reference.safetensors", "run")
    assert done.returncode == 0, done.stderr
    before, after = load_autoencoder(tmp_path / "labels.safetensors"), load_autoencoder(tmp_path / "run" / "ae.safetensors")
    assert after.cfg == before.cfg and after.cfg.shape_labels
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values()):
        if not name.startswith("decoder."):
            assert torch.equal(a, b), name  # encoder and latent statistics frozen
    assert any(not torch.equal(a, b) for a, b in zip(before.decoder.parameters(), after.decoder.parameters()))


def test_aligned_switches_fall_on_a_latent_frames_first_pixel_frame_and_old_runs_replay():
    """sample_shape_batch(aligned_switches=1): every switch is on pixel frame 4j - 3 (j >= 2), where
    the engine's block-wise prompt switches fall; at 0 the clips are the ones drawn before."""
    from train_autoencoder import sample_shape_batch

    def switch_frames(aligned: float) -> list[int]:
        _, _, shapes, _, _ = sample_shape_batch(np.random.default_rng(7), 24, 13, 32, 32, swap_share=0.0,
                                                stand_in_shape="circle", aligned_switches=aligned)
        return [int(np.flatnonzero(np.diff(s.numpy()))[0]) + 1 if np.diff(s.numpy()).any() else -1 for s in shapes]

    plain = sample_shape_batch(np.random.default_rng(7), 24, 13, 32, 32, swap_share=0.0, stand_in_shape="circle")
    again = sample_shape_batch(np.random.default_rng(7), 24, 13, 32, 32, swap_share=0.0, stand_in_shape="circle",
                               aligned_switches=0.0)
    for a, b in zip(plain, again):
        assert torch.equal(a, b)
    aligned = [f for f in switch_frames(1.0) if f >= 0]  # shape switches only show in the labels
    unaligned = [f for f in switch_frames(0.0) if f >= 0]
    assert aligned and set(aligned) <= {5, 9}
    assert set(unaligned) - {5, 9}


def test_aligned_switches_are_refused_where_no_shape_batches_are_drawn(tmp_path):
    import subprocess

    from longvid.loading import save_autoencoder

    save_autoencoder(_tiny_autoencoder(), tmp_path / "plain.safetensors")
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_autoencoder.py"
    done = subprocess.run(
        [sys.executable, str(script), "--decoder-only", "--aligned-switches", "0.5", "--init",
         str(tmp_path / "plain.safetensors"), "--steps", "0", "--full-steps", "0", "--run", str(tmp_path / "run"),
         "--out", str(tmp_path / "ae.safetensors")],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--aligned-switches is for autoencoders with shape channels" in done.stderr
    assert not (tmp_path / "ae.safetensors").exists()


def test_focus_draws_that_share_of_clips_as_one_unswitched_scene_and_leaves_old_streams_alone():
    """`--focus shape=square motion=circling background=gray --focus-share P`: that share of the
    shape batches shows the named scene, unswitched, its other attributes drawn as usual; at 0 the
    clips are the ones drawn before; bad items are refused with the form named."""
    from train_autoencoder import sample_shape_batch
    from trainutil import parse_focus

    from longvid.evaluate import detect_frame
    from longvid.vae import to_uint8
    from longvid.world import SHAPES

    kw = dict(swap_share=0.0, stand_in_shape="circle")
    plain = sample_shape_batch(np.random.default_rng(4), 6, 9, 64, 64, **kw)
    again = sample_shape_batch(np.random.default_rng(4), 6, 9, 64, 64, **kw, focus={}, focus_share=0.0)
    for a, b in zip(plain, again):
        assert torch.equal(a, b)
    focus = parse_focus(["shape=square", "background=gray", "motion=still"])
    assert focus == {"shape": "square", "background": "gray", "motion": "still"}
    x, _, shapes, _, _ = sample_shape_batch(np.random.default_rng(4), 6, 9, 128, 128, **kw, focus=focus,
                                            focus_share=1.0)
    assert (shapes == SHAPES.index("square")).all()  # no clip switches away from the square
    for b in range(6):
        frames = to_uint8(x[b : b + 1])
        first, last = detect_frame(frames[0]), detect_frame(frames[-1])
        assert first.background == last.background == "gray" and first.shape == "square"
        assert np.allclose(first.objects[0].centroid, last.objects[0].centroid)  # still
    some = sample_shape_batch(np.random.default_rng(4), 200, 5, 8, 8, **kw, focus={"shape": "triangle"},
                              focus_share=0.5)[2]
    triangles = float((some[:, 0] == SHAPES.index("triangle")).float().mean())
    assert 0.55 < triangles < 0.8, triangles  # 0.5 forced + a third of the rest
    assert parse_focus(["count=1"]) == {"count": 1}
    for bad, words in ((["shape=hexagon"], "unknown shape"), (["hue=red"], "ATTRIBUTE=VALUE"),
                       (["size=small", "size=large"], "named twice"), (["motion"], "ATTRIBUTE=VALUE")):
        with pytest.raises(ValueError, match=words):
            parse_focus(bad)


def test_focus_is_refused_without_its_share_and_where_no_shape_batches_are_drawn(tmp_path):
    import subprocess

    from longvid.loading import save_autoencoder

    save_autoencoder(_tiny_autoencoder(), tmp_path / "plain.safetensors")
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_autoencoder.py"
    base = [sys.executable, str(script), "--decoder-only", "--init", str(tmp_path / "plain.safetensors"), "--steps",
            "0", "--full-steps", "0", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "ae.safetensors")]
    for extra, words in ((["--focus", "shape=square"], "give both, or neither"),
                         (["--focus", "shape=square", "--focus-share", "0.3"], "--focus is for autoencoders with shape"),
                         (["--focus", "colour=mauve", "--focus-share", "0.3"], "unknown colour")):
        done = subprocess.run(base + extra, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and words in done.stderr, done.stderr
    assert not (tmp_path / "ae.safetensors").exists()


def test_rolled_samples_leave_the_flow_loss_and_meet_the_critic_behind_their_own_window():
    """`--own-window-mse 0 --adv-weight`: the samples whose window was rolled are judged only by
    the critic, at the last level, behind the model's own frame; the others keep the true frame,
    the flow loss and their drawn level."""
    from train_generator import rolled_samples, rolled_terms, rollout_levels

    target = torch.zeros(3, 12, dtype=torch.bool)
    target[0, 9:] = True  # window 3-8: two blocks
    target[1, 6:9] = True  # window 3-5: one block
    target[2, 9:] = True
    window_first = torch.tensor([3, 3, 6])  # sample 2's window holds one block
    rolled = rolled_samples(target, window_first, 2)
    assert rolled.tolist() == [True, False, False]

    x_rolled, x0 = torch.ones(3, 1, 12, 2, 2), torch.zeros(3, 1, 12, 2, 2)
    before, weight = rolled_terms(rolled, rolled, x_rolled, x0, 0.0)
    assert torch.equal(before[0], x_rolled[0]) and torch.equal(before[1:], x0[1:])
    assert weight.flatten().tolist() == [0.0, 1.0, 1.0]
    assert rolled_terms(rolled, rolled, x_rolled, x0, 0.25)[1].flatten().tolist() == [0.25, 1.0, 1.0]
    # without a critic (--own-window-mse above 1 is allowed then) the weight still applies
    before, weight = rolled_terms(rolled, torch.zeros_like(rolled), x_rolled, x0, 2.0)
    assert torch.equal(before, x0) and weight.flatten().tolist() == [2.0, 1.0, 1.0]

    n = 400
    last = torch.zeros(n, dtype=torch.bool)
    last[:100] = True
    many = torch.zeros(n, dtype=torch.bool)
    many[100:200] = True
    levels = rollout_levels(last, many, 4, np.random.default_rng(0))
    assert (levels[:200] == 3).all()  # the last level: asked for, or rolled
    assert set(levels[200:].tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("extra, message", [
    (["--own-window-mse", "0"], "add --own-window BLOCKS"),
    (["--own-window", "2", "--own-window-mse", "0"], "add --adv-weight"),
])
def test_own_window_mse_is_refused_where_it_cannot_teach(tmp_path, extra, message):
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_generator.py"
    done = subprocess.run([sys.executable, str(script), *extra, "--run", str(tmp_path / "run"), "--steps", "0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


def test_critic_pairs_hold_the_judged_samples_with_or_without_the_frame_before():
    """`--no-critic-before`: the critic sees the blocks alone, so it cannot tell the model's own
    window from the true one; with it, the model's block stands behind `before`'s frame and the
    true block behind the true frame."""
    from train_generator import Critic, critic_pairs

    B, C, slots, k = 3, 2, 7, 3
    x0 = torch.arange(B * C * slots, dtype=torch.float32).reshape(B, C, slots, 1, 1).expand(B, C, slots, 2, 2)
    x0_hat, before = x0 + 1000, -x0
    target = torch.zeros(B, slots, dtype=torch.bool)
    target[:, 4:7] = True
    judge = torch.tensor([True, False, True])
    fake, real = critic_pairs(x0_hat, x0, before, target, k, judge, True)
    assert fake.shape == real.shape == (2, C, k + 1, 2, 2)
    assert torch.equal(fake[:, :, 0], before[[0, 2], :, 3]) and torch.equal(real[:, :, 0], x0[[0, 2], :, 3])
    assert torch.equal(fake[:, :, 1:], x0_hat[[0, 2], :, 4:7]) and torch.equal(real[:, :, 1:], x0[[0, 2], :, 4:7])
    fake, real = critic_pairs(x0_hat, x0, before, target, k, judge, False)
    assert torch.equal(fake, x0_hat[[0, 2], :, 4:7]) and torch.equal(real, x0[[0, 2], :, 4:7])
    assert Critic(channels=C, text_dim=5, width=8)(torch.randn(2, C, k, 16, 16), torch.randn(2, 5)).shape == (2, 1, k, 4, 4)


def test_hinge_critic_loss_is_zero_only_past_the_margins():
    from trainutil import hinge_critic_loss

    assert float(hinge_critic_loss(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -2.0]))) == 0.0
    # true logits 0 and fakes at +1: each side misses its margin (1 and 2 on average)
    assert float(hinge_critic_loss(torch.tensor([0.0]), torch.tensor([1.0]))) == pytest.approx(3.0)


def test_tune_decoder_draw_weights_multiply_the_reasons_to_draw_a_clip():
    from tune_decoder import draw_weights

    assert draw_weights(None, None) is None
    only = np.array([0.5, 0.25, 0.25])
    assert np.allclose(draw_weights(only, None), only)
    both = draw_weights(np.array([0.5, 0.25, 0.25]), np.array([0.2, 0.2, 0.6]))
    assert np.allclose(both, np.array([0.1, 0.05, 0.15]) / 0.3) and both.sum() == pytest.approx(1.0)


def test_shape_by_phase_reads_label_mass_forces_labels_and_orders_frames_by_place():
    """scripts/shape_by_phase.py: the label channels' share over the object's cells, all label
    mass moved to one shape's channel, and hits by a frame's place in its latent frame (frame 0
    alone, then 4j - 3 .. 4j: oldest to newest)."""
    from shape_by_phase import by_place, force_label, label_shares

    lat = torch.zeros(5, 2, 4, 4)  # 2 appearance + 3 label channels (circle, square, triangle)
    lat[3, :, 1, 1] = 3.0  # square where the object is
    lat[2, :, 1, 1] = 1.0  # some circle there
    lat[2, :, 3, 3] = 0.2  # faint circle elsewhere: below 0.3 of the peak, not the object
    lat[0] = 7.0  # appearance is not a label
    assert np.allclose(label_shares(lat), [0.25, 0.75, 0.0])
    forced = force_label(lat[None], "triangle")[0]
    assert torch.equal(forced[:2], lat[:2]) and forced[2:4].abs().sum() == 0
    assert torch.allclose(forced[4], lat[2:].sum(0))
    #            frame 0 | latent 1: 1-4          | latent 2: 5-8
    right = [True, False, False, True, True, False, True, True, True]
    assert by_place(right) == [0.0, 0.5, 1.0, 1.0]


def test_drawn_as_circles_is_the_same_clip_with_every_shape_a_circle():
    """prepare_latents.drawn_as_circles (behind `--shape-labels` latents and shape_by_phase.py): from
    a copy of the clip's generator, the same scene and switch with circles in the same places,
    their coverage, and each frame's true shape."""
    import copy

    from prepare_latents import drawn_as_circles

    from longvid.evaluate import detect_frame
    from longvid.world import SHAPES, SceneSpec, make_clip

    timeline = [(0, SceneSpec(shape="square", colour="red", background="black", motion="right", size="large")),
                (5, SceneSpec(shape="triangle", colour="blue", background="black", motion="right", size="large"))]
    rng = np.random.default_rng(3)
    twin = copy.deepcopy(rng)
    frames, truth = make_clip(timeline, 9, rng, 64)
    circles, cover, shapes = drawn_as_circles(timeline, truth, twin, 64)
    assert circles.shape == frames.shape and cover.shape == (9, 64, 64)
    assert shapes.tolist() == [SHAPES.index("square")] * 5 + [SHAPES.index("triangle")] * 4
    for f in (0, 8):
        mine, theirs = detect_frame(frames[f]), detect_frame(circles[f])
        assert theirs.shape == "circle" and theirs.colour == mine.colour
        assert np.hypot(*(mine.objects[0].centroid - theirs.objects[0].centroid)) < 2.0
        drawn = np.abs(circles[f].astype(int)).max(-1) > 12
        assert (drawn & (cover[f] > 0.05)).sum() >= 0.9 * (drawn | (cover[f] > 0.05)).sum()
