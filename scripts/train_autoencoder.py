"""Stage 1 of the built-in model: the causal video autoencoder, trained on the shapes world.

    python scripts/train_autoencoder.py                 # train (resumes if interrupted)
    python scripts/train_autoencoder.py --export-only   # write the safetensors from the checkpoint
    python scripts/train_autoencoder.py --decoder-only --run runs/decoder   # stage 1b (below)
    python scripts/train_autoencoder.py --report longvid/weights/shapes/autoencoder.safetensors

Stage 1b, `--decoder-only`: start from the exported autoencoder, freeze the encoder and the latent
statistics, and train the decoder alone. The latent space stays bit-for-bit the same, so a
generator trained on it keeps working; only the pictures it decodes to get better (the first
decoder, 1,800 joint steps, drew squares and triangles as round blobs). With `--decoder-channels`
the decoder starts afresh at the given widths (a wider decoder on the same latents); with
`--widen-decoder` it keeps what it has learnt and gains channels that start silent.

Clips are rendered on the fly (longvid.world). Most steps train on random crops (the network is
fully convolutional, so crops teach it the same thing 4x cheaper), the last ones on full frames.
Latents get a little noise during training so the decoder tolerates a generator's imperfect
latents. At the end the per-channel latent mean/std are measured and stored in the model, so the
generator works with unit-scale latents. Output: longvid/weights/shapes/autoencoder.safetensors.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import numpy as np
import torch

from trainutil import (REPO, Run, blur_latents, edge_loss, motion_loss, object_cover, parse_focus, parse_motion_values,
                       random_blur, shape_maps, track_loss, warmup_cosine)

from longvid.autoencoder import AutoencoderConfig, CausalAutoencoder
from longvid.evaluate import detect_frame, evaluate
from longvid.loading import load_autoencoder, save_autoencoder
from longvid.vae import from_uint8, to_uint8
from longvid.world import (BACKGROUNDS, COLOURS, MOTIONS, SHAPES, SIZES, SceneSpec, caption, make_clip,
                           random_spec, sample_switching_clip, switched_spec)


OBJECT_WEIGHT = 10.0
TF = AutoencoderConfig.temporal_factor  # pixel frames per latent frame


def sample_batch(rng: np.random.Generator, batch: int, frames: int, size: int, crop: int,
                 motion_share: dict[str, float] | None = None) -> torch.Tensor:
    """`batch` world clips of `frames` frames (half of them switching mid-clip), cropped to `crop`.
    `motion_share` {motion: p}: that share of the clips is one unswitched scene with that motion
    (the decoder's hardest motion, circling, needs more than the world's 1 in 7)."""
    clips = []
    forced = list((motion_share or {}).items())
    for _ in range(batch):
        motion = _forced_motion(rng, forced) if forced else None  # no draw without: old runs replay
        if motion is not None:
            clip, _ = make_clip(dataclasses.replace(random_spec(rng), motion=motion), frames, rng, size)
        elif rng.random() < 0.5:
            clip = sample_switching_clip(rng, frames, 1, size=size, min_segment_frames=2).frames
        else:
            clip, _ = make_clip(random_spec(rng), frames, rng, size)
        if crop < size:
            y, x = rng.integers(0, size - crop + 1, size=2)
            clip = clip[:, y : y + crop, x : x + crop]
        clips.append(clip)
    return from_uint8(np.stack(clips))


def _forced_motion(rng: np.random.Generator, forced: list[tuple[str, float]]) -> str | None:
    """One uniform draw -> the motion whose share it falls in, or None past all of them."""
    u = rng.random()
    for name, p in forced:
        if u < p:
            return name
        u -= p
    return None


def sample_shape_batch(rng: np.random.Generator, batch: int, frames: int, size: int, crop: int,
                       swap_share: float, square_share: float = 0.0, stand_in_shape: str | None = None,
                       aligned_switches: float = 0.0, focus: dict[str, object] | None = None,
                       focus_share: float = 0.0,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For `--shape-channels`: `batch` clips (half of them switching mid-clip); each frame's
    shape (B, F) as an index into SHAPES, and the same for the stand-in (below); each pixel's object coverage (B, F, H, W) in [0, 1],
    from the truth (a background switch leaves no colour to tell objects by); and each clip's
    stand-in: on `swap_share` of the clips the very same scene (same trajectory, colours, switch)
    drawn with other shapes, elsewhere the clip itself. Motion in the world never depends on the
    shape, so replaying the scene's draws with other shapes moves the objects the same way.
    `square_share` of the clips (before `swap_share` of the rest) are squares, always swapped: the
    decoder learns corners last, over a circle's or a triangle's latents. `stand_in_shape` (for
    `--shape-labels`): every clip's stand-in is the same scene drawn with that shape throughout,
    `swap_share` is not used, and the coverage is the stand-in's. `aligned_switches` of the
    switching clips switch on a latent frame's first pixel frame (4j - 3), where the engine's
    prompt switches always fall (they come with a block), so the decoder learns clean cuts there.
    `focus_share` of the clips are one unswitched scene with the attributes in `focus` (e.g.
    {"shape": "square", "motion": "circling", "background": "gray"}), the rest of it drawn as
    usual: a combination the decoder draws worst, far rarer than that in the world."""
    clips, stand_ins, shapes, stand_in_shapes, covers = [], [], [], [], []
    latent_frames = (frames + TF - 1) // TF
    aligned = aligned_switches > 0 and latent_frames > 2  # a latent frame start to switch on past the first
    for _ in range(batch):
        spec = random_spec(rng)
        forced = square_share > 0 and rng.random() < square_share  # no draw at 0: old runs replay
        if forced:
            spec = dataclasses.replace(spec, shape="square")
        focused = focus_share > 0 and rng.random() < focus_share  # no draw at 0: old runs replay
        if focused:
            spec = dataclasses.replace(spec, **focus)
        timeline = [(0, spec)]
        if not focused and rng.random() < 0.5:
            at = int(rng.integers(2, frames - 1))
            if aligned and rng.random() < aligned_switches:  # no draw at 0: old runs replay
                at = TF * int(rng.integers(2, latent_frames)) - (TF - 1)
            timeline.append((at, switched_spec(rng, spec)))
        twin = copy.deepcopy(rng)  # the scene's own draws, replayed for the stand-in
        clip, truth = make_clip(timeline, frames, rng, size)
        stand_in, stand_in_truth = clip, truth
        if stand_in_shape is not None:
            if any(s.shape != stand_in_shape for _, s in timeline):
                stand_in, stand_in_truth = make_clip([(f, dataclasses.replace(s, shape=stand_in_shape))
                                                      for f, s in timeline], frames, twin, size)
        elif forced or rng.random() < swap_share:
            others = [dataclasses.replace(s, shape=_other_shape(rng, s.shape)) for _, s in timeline]
            stand_in, stand_in_truth = make_clip([(f, s) for (f, _), s in zip(timeline, others)], frames, twin, size)
        covered = stand_in_truth if stand_in_shape is not None else truth
        cover = np.stack([object_cover(covered.spec_at(f), covered.positions[f], size) for f in range(frames)])
        if crop < size:
            y, x = rng.integers(0, size - crop + 1, size=2)
            clip, stand_in = clip[:, y : y + crop, x : x + crop], stand_in[:, y : y + crop, x : x + crop]
            cover = cover[:, y : y + crop, x : x + crop]
        clips.append(clip)
        stand_ins.append(stand_in)
        covers.append(cover)
        shapes.append([SHAPES.index(truth.spec_at(f).shape) for f in range(frames)])
        stand_in_shapes.append([SHAPES.index(stand_in_truth.spec_at(f).shape) for f in range(frames)])
    return (from_uint8(np.stack(clips)), from_uint8(np.stack(stand_ins)), torch.tensor(shapes),
            torch.tensor(stand_in_shapes), torch.from_numpy(np.stack(covers)))


def _other_shape(rng: np.random.Generator, shape: str) -> str:
    others = [s for s in SHAPES if s != shape]
    return others[int(rng.integers(len(others)))]


def with_shape_channels(ae: CausalAutoencoder) -> CausalAutoencoder:
    """`ae` with one more latent channel per world shape, decoding exactly what `ae` decodes
    until trained: the decoder's inputs from the new channels start at zero, the encoder's new
    outputs at a fresh initialisation, the old channels' latent statistics are kept."""
    c, n = ae.cfg.latent_channels, len(SHAPES)
    if ae.cfg.shape_channels:
        raise ValueError(f"this autoencoder already has {ae.cfg.shape_channels} shape channels")
    new = CausalAutoencoder(dataclasses.replace(ae.cfg, latent_channels=c + n, shape_channels=n))
    state = new.state_dict()
    for key, old in ae.state_dict().items():
        fresh = state[key]
        if fresh.shape == old.shape:
            state[key] = old
            continue
        grown = fresh.clone() if key.startswith("encoder.out.") else torch.zeros_like(fresh)
        if key == "latents_std":
            grown.fill_(1.0)
        if fresh.shape[0] != old.shape[0]:  # encoder outputs and latent statistics: new rows
            grown[:c] = old
        else:  # decoder inputs: new input channels
            grown[:, :c] = old
        state[key] = grown
    new.load_state_dict(state)
    return new


def shape_channel_losses(ae: CausalAutoencoder, reference: CausalAutoencoder | None, z: torch.Tensor, x: torch.Tensor,
                         stand_in: torch.Tensor, shapes: torch.Tensor, stand_in_shapes: torch.Tensor,
                         cover: torch.Tensor) -> dict[str, torch.Tensor]:
    """The `--shape-channels` terms of a step, for clips `x` encoded to `z` by `ae`: "shape", the
    shape channels' error from `shape_maps`; "anchor", the old channels' distance from where
    `reference` (the autoencoder grown from) puts them; and "stand_in", the old channels the
    decoder gets: the stand-in clip's where its shapes differ from the clip's; "maps", the shape maps.
    `reference` None (a decoder-only run, the encoder frozen): no anchor term."""
    c = ae.cfg.appearance_channels
    swapped = (stand_in_shapes != shapes).any(1).nonzero()[:, 0]
    old = z[:, :c]
    if len(swapped):
        old = old.index_put((swapped,), ae.encode(stand_in[swapped])[:, :c])
    target = shape_maps(cover, shapes, ae.spatial_factor, ae.temporal_factor)
    if reference is None:
        anchor = torch.zeros(())
    else:
        with torch.no_grad():
            anchor_target = reference.encode(x)
        anchor = (z[:, :c] - anchor_target).pow(2).mean()
    shape = (z[:, c:] - normalised_maps(ae, target)).pow(2).mean()
    return {"shape": shape, "anchor": anchor, "stand_in": old, "maps": target}


def label_channel_losses(ae: CausalAutoencoder, reference: CausalAutoencoder, z: torch.Tensor, stand_in: torch.Tensor,
                         shapes: torch.Tensor, cover: torch.Tensor) -> dict[str, torch.Tensor]:
    """The `--shape-labels` terms of a step, for clips encoded to `z` by `ae` whose `stand_in` is the
    same scene drawn as circles (`sample_shape_batch(stand_in_shape="circle")`, `cover` its
    coverage): the appearance channels' target is where `reference` puts the circles ("stand_in"),
    so a square and a circle on the same path encode to the same appearance and only the shape
    channels tell them apart; those hold each frame's shape as a label over the circles' coverage
    ("maps"). "anchor" and "shape" are the encoder's distances from both; the decoder learns from the
    targets themselves, so it never sees a shape's outline outside the shape channels."""
    c = ae.cfg.appearance_channels
    with torch.no_grad():
        appearance = reference.encode(stand_in)
    maps = shape_maps(cover, shapes, ae.spatial_factor, ae.temporal_factor)
    return {"shape": (z[:, c:] - normalised_maps(ae, maps)).pow(2).mean(),
            "anchor": (z[:, :c] - appearance).pow(2).mean(), "stand_in": appearance, "maps": maps}


def as_label_autoencoder(ae: CausalAutoencoder) -> CausalAutoencoder:
    """A coverage-map autoencoder (sessions 27-28) turned into the start of a `--shape-labels` one:
    its shape channels' statistics set to 0 and 1 (the labels' level is fixed, so latents made from
    targets need no measured statistics). The network sees raw maps either way."""
    c = ae.cfg.appearance_channels
    with torch.no_grad():
        ae.latents_mean[c:] = 0.0
        ae.latents_std[c:] = 1.0
    ae.cfg = dataclasses.replace(ae.cfg, shape_labels=True)
    return ae


def normalised_maps(ae: CausalAutoencoder, maps: torch.Tensor) -> torch.Tensor:
    """Shape maps (B, S, T, h, w) in the units the encoder writes (`shape_maps`) -> normalised as
    `ae`'s latents are (its shape channels' statistics): what the decoder and the loss compare
    with. While a grown autoencoder trains its statistics are 0 and 1; a decoder-only run keeps
    the measured ones, and decode() undoes them."""
    c = ae.cfg.appearance_channels
    mean, std = ae.latents_mean[c:, None, None, None], ae.latents_std[c:, None, None, None]
    return (maps - mean) / std


def raw_maps(ae: CausalAutoencoder, z: torch.Tensor) -> torch.Tensor:
    """`normalised_maps`' inverse: the shape channels of latents `z` (B, C, T, h, w) of `ae` -> the
    maps in the units the encoder writes."""
    c = ae.cfg.appearance_channels
    mean, std = ae.latents_mean[c:, None, None, None], ae.latents_std[c:, None, None, None]
    return z[:, c:] * std + mean


def hedge_problem(option: str, low: float, leak: float) -> str | None:
    """What is wrong with `option LOW LEAK` for `hedge_maps`, or None."""
    if 0.0 < low <= 1.0 and leak >= 0.0:
        return None
    return f"{option} LOW LEAK: LOW in (0, 1] and LEAK 0 or more, got {low:g} {leak:g}"


def hedge_maps(maps: torch.Tensor, low: float, leak: float) -> torch.Tensor:
    """Shape maps (B, S, T, h, w) as a generator hands them over (docs/training.md, session 30):
    per clip, scaled by U(`low`, 1), and every shape channel given a share U(0, `leak`) of each
    cell's total coverage, so the decoder learns to draw the shape whose channel leads rather than
    to read exact coverage values. `low` 1 and `leak` 0 return the maps as they are, drawing no
    random numbers (so earlier runs' commands replay)."""
    if low == 1.0 and leak == 0.0:
        return maps
    b, s = maps.shape[:2]
    scale = low + (1.0 - low) * torch.rand(b, 1, 1, 1, 1)
    shares = leak * torch.rand(b, s, 1, 1, 1)
    return scale * maps + shares * maps.sum(dim=1, keepdim=True)


def label_obedience(ae: CausalAutoencoder, size: int, clips: int = 24) -> tuple[float, dict[str, float]]:
    """For an autoencoder with shape channels: the share of frames that `longvid eval`'s detector
    reads as the shape the shape channels name when the other channels come from the same scene
    drawn with another shape (what the decoder does with a generator's round blob and the right
    shape word); and the same share by pair ("square over circle": a square named over a circle's
    latents)."""
    rng = np.random.default_rng(54321)
    c = ae.cfg.appearance_channels
    by_pair: dict[str, list[bool]] = {}
    with torch.no_grad():
        for _ in range(clips):
            x, stand_in, shapes, under, _ = sample_shape_batch(rng, 1, 13, size, size, swap_share=1.0)
            z, zs = ae.encode(x), ae.encode(stand_in)
            video = to_uint8(ae.decode(torch.cat([zs[:, :c], z[:, c:]], dim=1)))
            for f, s, u in zip(video, shapes[0], under[0]):
                named = SHAPES[int(s)]
                by_pair.setdefault(f"{named} over {SHAPES[int(u)]}", []).append(detect_frame(f).shape == named)
    every = [ok for oks in by_pair.values() for ok in oks]
    return float(np.mean(every)), {pair: float(np.mean(oks)) for pair, oks in sorted(by_pair.items())}


def palette_error(ae: CausalAutoencoder, size: int) -> tuple[float, str]:
    """Worst reconstruction error (max over RGB, grey levels) of any background colour and of any
    object colour on any background: an average L1 hides colours the codec merges."""
    worst, where = 0.0, ""
    for bg, bg_rgb in BACKGROUNDS.items():
        for colour, rgb in COLOURS.items():
            clip, _ = make_clip(SceneSpec(shape="square", colour=colour, background=bg, size="large"), 5, 0, size)
            with torch.no_grad():
                r = ae.decode(ae.encode(from_uint8(clip[None])))
            r = ((r[0, :, -1].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).numpy()
            obj = np.abs(clip[-1].astype(float) - np.array(bg_rgb)).sum(-1) > 60
            inner = obj & np.roll(obj, 4, 0) & np.roll(obj, -4, 0) & np.roll(obj, 4, 1) & np.roll(obj, -4, 1)
            for name, mask, truth in ((bg, ~obj, bg_rgb), (f"{colour} on {bg}", inner, rgb)):
                if mask.any():
                    e = float(np.abs(r[mask].mean(0) - np.array(truth)).max())
                    if e > worst:
                        worst, where = e, name
    return worst, where


def round_trip(ae: CausalAutoencoder, clip: np.ndarray, blur: float = 0.0) -> np.ndarray:
    """(F, H, W, 3) uint8 frames -> the same frames encoded and decoded by `ae` (with `blur` of a
    3x3 blur mixed into the latents: what a generator's blurred block would decode to)."""
    with torch.no_grad():
        return to_uint8(ae.decode(blur_latents(ae.encode(from_uint8(clip[None])), blur)))


def shape_accuracy(ae: CausalAutoencoder, size: int, clips: int = 24,
                   blur: float = 0.0) -> tuple[float, float, dict[str, float]]:
    """Share of reconstructed frames whose detected shape and object count are the truth's, by
    the evaluator's own detector (longvid.evaluate), on fixed clips: what `longvid eval` can
    score at best through this decoder. Also the shape share per shape and size ("square/small")."""
    rng = np.random.default_rng(12345)
    shape_ok, count_ok, by_kind = [], [], {}
    for _ in range(clips):
        spec = random_spec(rng)
        clip, _ = make_clip(spec, 13, rng, size)
        for f in round_trip(ae, clip, blur):
            d = detect_frame(f)
            shape_ok.append(d.shape == spec.shape)
            count_ok.append(len(d.objects) == spec.count)
            by_kind.setdefault(f"{spec.shape}/{spec.size}", []).append(shape_ok[-1])
    per_kind = {k: float(np.mean(v)) for k, v in sorted(by_kind.items())}
    return float(np.mean(shape_ok)), float(np.mean(count_ok)), per_kind


def motion_accuracy(ae: CausalAutoencoder, size: int, clips: int = 4) -> dict[str, float]:
    """Per world motion, the share of frames of reconstructed 6-second clips whose motion
    `longvid.evaluate` reads as the truth's (the ground-truth clips score 1.0): the best motion
    adherence a generator can reach through this autoencoder."""
    out = {}
    for motion in MOTIONS:
        ok = []
        for seed in range(clips):
            # every background: a decoder that kept motion on navy froze it on gray (session 7)
            spec = SceneSpec(shape=SHAPES[seed % len(SHAPES)], colour=("yellow", "green", "white", "red")[seed % 4],
                             background=list(BACKGROUNDS)[seed % len(BACKGROUNDS)], motion=motion,
                             size=SIZES[-1 - seed % 2])
            clip, _ = make_clip(spec, 97, seed, size)
            scores = evaluate(round_trip(ae, clip), [(0, caption(spec, np.random.default_rng(seed)))], fps=16)
            ok.append(scores["adherence"]["motion"])
        out[motion] = float(np.mean(ok))
    return out


def augment_latents(z: torch.Tensor, noise: float, blur: float) -> torch.Tensor:
    """What the decoder is trained on: the encoder's latents with a little noise and, on 3 in 4
    clips, a share drawn from U(0, `blur`) of a 3x3 blur. Gradients flow through to the encoder,
    so with `blur` it learns to write shapes in a form the blur does not erase."""
    # noise relative to each channel's own spread: a global scale drowns low-variance
    # channels (it erased navy vs dark green and cyan vs blue in a first run)
    ch_std = z.detach().std(dim=(0, 2, 3, 4), keepdim=True)
    z = z + noise * ch_std * torch.randn_like(z)
    return random_blur(z, blur)


def decoder_latents(ae: CausalAutoencoder, terms: dict[str, torch.Tensor], noise: float, blur: float,
                    shape_blur: float, hedge: tuple[float, float] = (1.0, 0.0)) -> torch.Tensor:
    """What the decoder of a shape-channel run decodes, from `shape_channel_losses`' terms: the
    old channels it is given (augmented with `noise` and `blur`), then the true shape maps,
    hedged (`hedge_maps`), normalised like the latents and augmented with `shape_blur`."""
    maps = normalised_maps(ae, hedge_maps(terms["maps"], *hedge))
    return torch.cat([augment_latents(terms["stand_in"], noise, blur), augment_latents(maps, noise, shape_blur)], dim=1)


def with_fresh_decoder(ae: CausalAutoencoder, channels: tuple[int, ...]) -> CausalAutoencoder:
    """`ae`'s encoder and latent statistics (so the same latent space) under a new, untrained
    decoder of the given widths."""
    new = CausalAutoencoder(dataclasses.replace(ae.cfg, decoder_channels=channels))
    new.encoder.load_state_dict(ae.encoder.state_dict())
    new.latents_mean.copy_(ae.latents_mean)
    new.latents_std.copy_(ae.latents_std)
    return new


def with_wider_latent_memory(ae: CausalAutoencoder, span: int) -> CausalAutoencoder:
    """`ae` with its decoder's first Memory block seeing `span` past latent frames, computing
    the same video as `ae` until trained (the new inputs start at zero)."""
    if span < ae.cfg.decoder_latent_span:
        raise ValueError(f"the decoder already sees {ae.cfg.decoder_latent_span} past latent frames; "
                         f"a span of {span} would drop some")
    new = CausalAutoencoder(dataclasses.replace(ae.cfg, decoder_latent_span=span))
    new.decoder.memory[0] = ae.decoder.memory[0].widened(span)
    kept = {k: v for k, v in ae.state_dict().items() if not k.startswith("decoder.memory.0.")}
    missing, unexpected = new.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith("decoder.memory.0.") for k in missing)
    return new


def with_wider_decoder(ae: CausalAutoencoder, channels: tuple[int, ...]) -> CausalAutoencoder:
    """`ae` with its decoder widened to `channels` (`Decoder.widened`): the same video until
    trained, with room for more."""
    new = CausalAutoencoder(dataclasses.replace(ae.cfg, decoder_channels=tuple(channels)))
    new.load_state_dict({k: v for k, v in ae.state_dict().items() if not k.startswith("decoder.")}, strict=False)
    new.decoder = ae.decoder.widened(tuple(channels))
    return new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(REPO / "runs" / "autoencoder"))
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--full-steps", type=int, default=400, help="final steps on full 128x128 frames")
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--frames", type=int, default=9, help="pixel frames per clip (4T-3)")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--latent-noise", type=float, default=0.03,
                    help="Gaussian noise, as a share of each latent channel's spread, on what the decoder decodes; "
                         "0.8 makes a label decoder read a generator's imperfect latents (docs/training.md, session 33)")
    ap.add_argument("--latent-blur", type=float, default=0.0, metavar="A",
                    help="on 3 in 4 clips, mix a share drawn from U(0, A) of a 3x3 blur into the latents "
                         "before decoding, so the encoder must write shapes in a form that survives the "
                         "blur a generator's blocks have (docs/training.md, session 13)")
    ap.add_argument("--finetune", action="store_true",
                    help="train encoder and decoder starting from --init (the latent space moves)")
    ap.add_argument("--motion-share", nargs="*", default=[], metavar="MOTION=P",
                    help="this share of training clips has that motion, e.g. circling=0.4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "longvid" / "weights" / "shapes" / "autoencoder.safetensors"))
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--decoder-only", action="store_true",
                    help="train the decoder of --init (encoder and latent statistics frozen), see above")
    ap.add_argument("--edge-weight", type=float, default=0.0,
                    help="weight of an L1 loss on image gradients (sharp corners; stage 1b uses 1)")
    ap.add_argument("--motion-weight", type=float, default=0.0,
                    help="weight of an L1 loss on frame-to-frame differences (smooth motion inside a latent frame)")
    ap.add_argument("--track-weight", type=float, default=0.0,
                    help="weight of a loss on the object's centroid path in pixels, its position and its "
                         "turns frame by frame (smooth orbits, not polygons; trainutil.track_loss)")
    ap.add_argument("--latent-channels", type=int, default=AutoencoderConfig.latent_channels,
                    help="channels per latent cell (Wan's VAE has 16); ignored with --decoder-only")
    ap.add_argument("--decoder-channels", type=int, nargs=4, default=None, metavar="C",
                    help="with --decoder-only: a fresh decoder of these widths (1/8, 1/4, 1/2, 1 resolution) "
                         "instead of --init's; the encoder and latent space stay --init's")
    ap.add_argument("--widen-decoder", type=int, nargs=4, default=None, metavar="C",
                    help="with --decoder-only: widen --init's decoder to these widths, keeping what it "
                         "computes (new channels start silent), so training adds capacity to a tuned decoder")
    ap.add_argument("--decoder-latent-span", type=int, default=None, metavar="N",
                    help="with --decoder-only: the decoder's first block sees N past latent frames "
                         "(at least as many as --init's; the default autoencoder's sees 1), so it can "
                         "draw curved paths inside a latent frame; starts out computing what --init's "
                         "decoder does")
    ap.add_argument("--shape-channels", action="store_true",
                    help="grow --init's latents by one channel per shape, which the encoder learns to fill with "
                         "each cell's coverage by objects of that shape, and train the decoder to draw the shape "
                         "they name, also over the other channels of the same scene drawn with another shape "
                         "(--swap-share): a generator then only has to write the shape word's channel "
                         "(docs/training.md, session 27)")
    ap.add_argument("--shape-weight", type=float, default=10.0,
                    help="with --shape-channels: weight of the encoder's shape-map loss")
    ap.add_argument("--anchor-weight", type=float, default=1.0,
                    help="with --shape-channels: weight of a loss keeping the old channels where --init's encoder "
                         "puts them, so a generator trained on --init's latents still fits")
    ap.add_argument("--swap-share", type=float, default=0.5,
                    help="with --shape-channels: share of clips decoded from the old channels of the same scene "
                         "drawn with other shapes")
    ap.add_argument("--square-share", type=float, default=0.0,
                    help="with --shape-channels: share of clips that are squares decoded over the old channels of "
                         "the same scene drawn as a circle or a triangle (before --swap-share of the rest): the "
                         "decoder learns a square's corners last (docs/training.md, session 28)")
    ap.add_argument("--focus", nargs="*", default=[], metavar="ATTRIBUTE=VALUE",
                    help="with shape channels: the scene that --focus-share of the clips show, e.g. shape=square "
                         "motion=circling background=gray (docs/training.md, session 42)")
    ap.add_argument("--focus-share", type=float, default=0.0, metavar="P",
                    help="with --focus: the share of clips that are one unswitched scene with those attributes")
    ap.add_argument("--aligned-switches", type=float, default=0.0, metavar="P",
                    help="with shape channels: this share of the clips that switch do so on a latent frame's first "
                         "pixel frame, as the engine's switches do, so the decoder learns clean cuts there "
                         "(docs/training.md, session 33)")
    ap.add_argument("--shape-labels", action="store_true",
                    help="with --shape-channels: the old channels of a shape are those of the same scene drawn as "
                         "circles (the encoder learns to write them), and the shape channels label each frame's shape "
                         "over the circles' coverage, so the decoder alone draws corners and a generator only has to "
                         "write a round blob and a label (docs/training.md, session 32)")
    ap.add_argument("--reference", default=str(REPO / "longvid" / "weights" / "shapes" / "autoencoder.safetensors"),
                    help="with --shape-labels and an --init that has shape channels already, or --decoder-only on a "
                         "--shape-labels autoencoder: the autoencoder whose latents of the circles are the appearance "
                         "channels' targets")
    ap.add_argument("--shape-blur", type=float, default=0.5, metavar="A",
                    help="with --shape-channels: --latent-blur for the shape channels")
    ap.add_argument("--hedge-maps", type=float, nargs=2, default=(1.0, 0.0), metavar=("LOW", "LEAK"),
                    help="with shape channels: the decoder's shape maps scaled by U(LOW, 1) per clip and each "
                         "channel given U(0, LEAK) of the cells' total coverage, as a generator's hedged maps "
                         "(docs/training.md, session 30); 1 0 leaves them exact")
    ap.add_argument("--appearance-blur", type=int, default=None, metavar="N",
                    help="with --decoder-only on an autoencoder with shape channels: the decoder sees its "
                         "appearance channels through N passes of a 3x3 blur (AutoencoderConfig.appearance_blur), "
                         "so it draws an object's outline from the shape channels alone (docs/training.md, session 29)")
    ap.add_argument("--init", default=str(REPO / "longvid" / "weights" / "shapes" / "autoencoder.safetensors"),
                    help="with --decoder-only: the autoencoder whose encoder is kept")
    ap.add_argument("--report", metavar="AUTOENCODER", default=None,
                    help="print the end-of-stage report (palette, shapes per shape and size, motions) of "
                         "an autoencoder file and exit")
    ap.add_argument("--report-blur", type=float, default=0.0, metavar="A",
                    help="with --report: also the shapes read when A of a 3x3 blur is mixed into the latents")
    args = ap.parse_args()
    if args.decoder_channels and not args.decoder_only:
        ap.error("--decoder-channels replaces the decoder of --init: add --decoder-only")
    if args.widen_decoder and not args.decoder_only:
        ap.error("--widen-decoder changes the decoder of --init: add --decoder-only")
    if args.widen_decoder and args.decoder_channels:
        ap.error("--widen-decoder keeps --init's decoder, --decoder-channels replaces it: pick one")
    if args.decoder_latent_span is not None and not args.decoder_only:
        ap.error("--decoder-latent-span widens the decoder of --init: add --decoder-only")
    if args.decoder_latent_span is not None and args.decoder_latent_span < 1:
        ap.error(f"--decoder-latent-span must be at least 1, got {args.decoder_latent_span}")
    if args.report_blur and not args.report:
        ap.error("--report-blur only changes a --report run: add --report AUTOENCODER, or drop --report-blur")
    if args.shape_labels and not args.shape_channels:
        ap.error("--shape-labels says what the shape channels hold: add --shape-channels")
    if args.shape_channels and (args.decoder_only or args.finetune):
        ap.error("--shape-channels trains encoder and decoder from --init: drop --decoder-only / --finetune")
    for name in ("swap_share", "square_share"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            ap.error(f"--{name.replace('_', '-')} must be between 0 and 1, got {getattr(args, name)}")
    if problem := hedge_problem("--hedge-maps", *args.hedge_maps):
        ap.error(problem)
    if not 0.0 <= args.aligned_switches <= 1.0:
        ap.error(f"--aligned-switches is a share of clips, in [0, 1]; got {args.aligned_switches:g}")
    if args.appearance_blur is not None and not args.decoder_only:
        ap.error("--appearance-blur changes what the decoder of --init sees: add --decoder-only")
    if args.finetune and args.decoder_only:
        ap.error("--finetune trains the encoder too; --decoder-only freezes it: pick one")
    motion_share = parse_motion_share(ap, args.motion_share)
    focus = parse_focus_option(ap, args.focus, args.focus_share)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.report:
        print(f"{args.report}: {report(load_autoencoder(args.report), args.size, args.report_blur)}")
        return

    run = Run(args.run, ["loss", "l1", "mse", "lr"] + (["track"] if args.track_weight else []))
    if args.decoder_only:
        ae = load_autoencoder(args.init)
        if args.decoder_channels:
            ae = with_fresh_decoder(ae, tuple(args.decoder_channels))
        if args.widen_decoder:
            try:
                ae = with_wider_decoder(ae, tuple(args.widen_decoder))
            except ValueError as e:
                ap.error(f"--widen-decoder: {e} (--init {args.init})")
        if args.decoder_latent_span is not None:
            try:
                ae = with_wider_latent_memory(ae, args.decoder_latent_span)
            except ValueError as e:
                ap.error(f"--decoder-latent-span: {e} (--init {args.init})")
        if args.appearance_blur is not None:
            if not ae.cfg.shape_channels:
                ap.error(f"--appearance-blur needs an autoencoder with shape channels (--init {args.init} has none)")
            if args.appearance_blur < 0:
                ap.error(f"--appearance-blur must be 0 or more, got {args.appearance_blur}")
            ae.cfg = dataclasses.replace(ae.cfg, appearance_blur=args.appearance_blur)
        ae.encoder.requires_grad_(False)
        trained = ae.decoder
        reference = None
        if ae.cfg.shape_labels:  # the decoder learns from the targets: the circles' latents by --reference
            reference = load_autoencoder(args.reference).requires_grad_(False)
            if reference.cfg.shape_channels or reference.cfg.latent_channels != ae.cfg.appearance_channels:
                ap.error(f"--reference {args.reference} must be the autoencoder whose latents of the circles "
                         f"are {args.init}'s appearance channels")
    elif args.shape_channels:
        reference = load_autoencoder(args.init).requires_grad_(False)
        if args.shape_labels and reference.cfg.shape_channels:
            # a decoder that already draws from coverage maps (sessions 27-28) starts closer
            ae, reference = as_label_autoencoder(load_autoencoder(args.init)), load_autoencoder(args.reference)
            if reference.cfg.shape_channels or reference.cfg.latent_channels != ae.cfg.appearance_channels:
                ap.error(f"--reference {args.reference} must be --init's autoencoder before its shape channels")
            reference.requires_grad_(False)
        else:
            try:
                ae = with_shape_channels(reference)
            except ValueError as e:
                ap.error(f"--shape-channels: {e} (--init {args.init})")
            ae.cfg = dataclasses.replace(ae.cfg, shape_labels=args.shape_labels)
        trained = ae
    else:
        ae = load_autoencoder(args.init) if args.finetune else CausalAutoencoder(
            AutoencoderConfig(latent_channels=args.latent_channels))
        trained = ae
    # with shape channels (grown now, or --init's for a decoder-only run): the old channels' count
    kept = ae.cfg.appearance_channels if ae.cfg.shape_channels else None
    labels = ae.cfg.shape_labels  # --shape-labels now, or --init's layout for a decoder-only run
    if args.aligned_switches and not kept:
        ap.error("--aligned-switches is for autoencoders with shape channels: add --shape-channels, or "
                 "--decoder-only on one")
    if focus and not kept:
        ap.error("--focus is for autoencoders with shape channels (use --motion-share otherwise): add "
                 "--shape-channels, or --decoder-only on one")
    opt = torch.optim.AdamW(trained.parameters(), lr=args.lr, weight_decay=1e-4)
    start = run.resume(model=ae, opt=opt)
    rng = np.random.default_rng([args.seed, start])  # fresh but reproducible stream after resume
    total = args.steps

    def lr_at(step: int) -> float:
        return warmup_cosine(step, args.lr, total, warmup=100, floor=0.05)

    ae.train()
    for step in range(start, 0 if args.export_only else total):
        full = step >= total - args.full_steps
        batch = args.batch // 2 if full else args.batch
        crop = args.size if full else args.crop
        if kept:
            x, stand_in, shapes, stand_in_shapes, cover = sample_shape_batch(
                rng, batch, args.frames, args.size, crop, args.swap_share, args.square_share,
                stand_in_shape="circle" if labels else None, aligned_switches=args.aligned_switches,
                focus=focus, focus_share=args.focus_share)
        else:
            x = sample_batch(rng, batch, args.frames, args.size, crop, motion_share)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.set_grad_enabled(not args.decoder_only):
            z = ae.encode(x)
        if kept:
            if labels:
                shape_terms = label_channel_losses(ae, reference, z, stand_in, shapes, cover)
            else:
                shape_terms = shape_channel_losses(ae, reference, z, x, stand_in, shapes, stand_in_shapes, cover)
            # the decoder reads the true maps, so it learns to draw from them while the encoder is
            # still learning to write them
            y = ae.decode(decoder_latents(ae, shape_terms, args.latent_noise, args.latent_blur, args.shape_blur,
                                          args.hedge_maps))
        else:
            y = ae.decode(augment_latents(z, args.latent_noise, args.latent_blur))
        # objects cover few pixels (and crops often miss them): weigh pixels that differ from the
        # clip's background (its top-left pixel) by OBJECT_WEIGHT, or object colours are under-fit
        bg = x[:, :, :, :1, :1]
        weight = 1 + (OBJECT_WEIGHT - 1) * ((x - bg).abs().amax(dim=1, keepdim=True) > 0.1).float()
        l1 = (weight * (y - x).abs()).mean() / weight.mean()
        mse = (weight * (y - x).pow(2)).mean() / weight.mean()
        loss = l1 + mse + (0.0 if args.decoder_only else 1e-4 * z.pow(2).mean())
        if kept and not args.decoder_only:  # the encoder's terms (a frozen encoder has no gradient)
            loss = loss + args.shape_weight * shape_terms["shape"] + args.anchor_weight * shape_terms["anchor"]
        if args.edge_weight:
            loss = loss + args.edge_weight * edge_loss(y, x, weight)
        if args.motion_weight:
            loss = loss + args.motion_weight * motion_loss(y, x, weight)
        track = track_loss(y, x, bg) if args.track_weight else None
        if track is not None:
            loss = loss + args.track_weight * track
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        if step % 10 == 0:
            extra = {} if track is None else {"track": track.item()}
            run.record(step, loss=loss.item(), l1=l1.item(), mse=mse.item(), lr=lr_at(step), **extra)
        if step % 50 == 0:
            run.log(f"step {step}/{total} loss {loss.item():.4f} l1 {l1.item():.4f} "
                    + ("" if not kept else f"shape {shape_terms['shape'].item():.4f} "
                       f"anchor {shape_terms['anchor'].item():.4f} ")
                    + ("" if track is None else f"track {track.item():.3f} px ")
                    + f"{'full' if full else 'crop'} {run.elapsed / 60:.1f} min")
        if (step + 1) % 100 == 0 or step + 1 == total:
            run.save(step + 1, model=ae, opt=opt)

    # Latent statistics over fresh full-size clips -> unit-scale latents for the generator
    # (kept as they are when only the decoder was trained: the latent space must not move).
    ae.eval()
    with torch.no_grad():
        if not args.decoder_only and not args.shape_labels:  # labels keep statistics 0 and 1: their level is set
            measured = slice(kept, None)  # with --shape-channels, the old channels keep --init's statistics
            ae.latents_mean[measured] = 0.0
            ae.latents_std[measured] = 1.0
            zs = torch.cat([ae.encode(sample_batch(rng, 4, 13, args.size, args.size)) for _ in range(8)], dim=0)
            zs = zs.transpose(0, 1).flatten(1)[measured]  # raw: their statistics are 0 and 1 here
            ae.latents_mean[measured] = zs.mean(1)
            ae.latents_std[measured] = zs.std(1).clamp_min(1e-3)
        x = sample_batch(rng, 4, 13, args.size, args.size)
        err = (ae.decode(ae.encode(x)) - x).abs().mean().item()
    save_autoencoder(ae, args.out)
    run.log(f"exported {args.out}: latent mean {ae.latents_mean.tolist()} std {ae.latents_std.tolist()}; "
            f"held-out L1 {err:.4f} ({err * 127.5:.2f} grey levels); {report(ae, args.size)}")


def parse_focus_option(ap: argparse.ArgumentParser, items: list[str], share: float) -> dict[str, object]:
    """--focus and --focus-share, checked together: a usage error names the fix."""
    try:
        focus = parse_focus(items)
    except ValueError as error:
        ap.error(f"--focus {error}")
    if not 0.0 <= share <= 1.0:
        ap.error(f"--focus-share is a share of clips, in [0, 1]; got {share:g}")
    if bool(focus) != bool(share):
        ap.error("--focus names the scene and --focus-share how often it is drawn: give both, or neither")
    return focus


def parse_motion_share(ap: argparse.ArgumentParser, items: list[str]) -> dict[str, float]:
    """["circling=0.4"] -> {"circling": 0.4}; unknown motions, bad numbers or shares summing past 1
    are a usage error naming the fix."""
    try:
        share = parse_motion_values(items, "MOTION=P with P a share, e.g. circling=0.4")
    except ValueError as error:
        ap.error(f"--motion-share {error}")
    for motion, p in share.items():
        if not 0.0 <= p <= 1.0:
            ap.error(f"--motion-share {motion}={p:g}: the share must be between 0 and 1")
    if sum(share.values()) > 1.0:
        ap.error("--motion-share: the shares add up to more than 1")
    return share


def report(ae: CausalAutoencoder, size: int, blur: float = 0.0) -> str:
    """What `longvid eval`'s detector reads in `ae`'s round trips of ground-truth clips (and, with
    `blur`, in round trips whose latents had that share of a 3x3 blur mixed in)."""
    with torch.no_grad():
        worst, where = palette_error(ae, size)
        shapes, counts, by_kind = shape_accuracy(ae, size, clips=60)
        motions = motion_accuracy(ae, size)
        blurred = shape_accuracy(ae, size, clips=60, blur=blur) if blur else None
    text = (f"worst palette error {worst:.1f} grey levels ({where}); reconstructed frames with the right "
            f"shape {shapes:.2f} ({_listed(by_kind)}), object count {counts:.2f} (longvid.evaluate's detector); "
            f"motion read right {_listed(motions)}")
    if blurred:
        text += f"; with {blur:g} of a 3x3 blur in the latents: shape {blurred[0]:.2f} ({_listed(blurred[2])})"
    if ae.cfg.shape_channels:
        obeyed, by_pair = label_obedience(ae, size)
        text += f"; shape named by the shape channels over another shape's latents: {obeyed:.2f} ({_listed(by_pair)})"
    return text


def _listed(figures: dict[str, float]) -> str:
    """{"circle/large": 0.991, ...} -> "circle/large 0.99, ..." for the report line."""
    return ", ".join(f"{k} {v:.2f}" for k, v in figures.items())


if __name__ == "__main__":
    main()
