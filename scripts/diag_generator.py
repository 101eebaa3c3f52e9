"""Does the generator continue its context? A teacher-forced check of one inference step.

    python scripts/diag_generator.py --weights runs/generator-p4/transformer.safetensors

For samples drawn exactly as training draws them (`train_generator.build_batch`: sink + window
of ground-truth latents, the next block as the target), run the engine's few-step sampler on the
target block and compare its x0 with the truth, against two baselines:

- copy: every target frame = the last context frame (a model that only persists the scene);
- blind: the same sampler with the context hidden (a model that only reads the prompt).

A model that uses its context must beat `blind` by far and `copy` somewhat (objects move). Errors
are latent MSEs over object positions (where the truth differs from the frame's median latent)
and over all positions. No learned judge, no pixels: this isolates the generator from the decoder.

`--shape-sources` (a shape-channel autoencoder, `train_autoencoder.py --shape-channels`) also
decodes the model's block with its shape channels taken from the truth, and the truth with the
model's shape channels: which half of the model's latents (appearance or shape channels) keeps
the decoder from drawing the shape.

`--pairs` (shards from `prepare_latents.py --partners`) instead checks whether the model draws
the shape the caption names: for each sample, the clip's and its partner's target block (shapes
exchanged) under the same noise, the clip's context and each one's caption. It prints, per
denoising level, `train_generator.pair_loss` for first blocks and for continuing ones, beside
what a model blind to the shape word would score there (1 / sigma^2: with the same noise it sees
only the share (1 - sigma) of the difference in its input), then the sampler's blocks decoded
and read, by prompted shape: the clip's caption, and the partner's (a shape switch at the block).

`--reflections` instead asks whether the model bounces off a wall as sharply as the world when its
context is the truth: blocks of unswitched one-object bouncing scenes, the window and the target
decoded and tracked (`longvid.evaluate.detect_frame`), the model's path against the truth's, for
blocks where the truth reflects and where it runs straight, and the sharpest turn in the reflecting
blocks. A free-running model whose bounces are rounded while this check finds them sharp loses them
to its own context, not to the one-block prediction.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from train_generator import (CaptionBank, Data, build_batch, motion_clip_weights, pair_batch, pair_loss,
                             prompt_context, sample_target, sampler_setup, target_start)

from longvid.config import load_config, weight_path
from longvid.evaluate import detect_frame
from longvid.loading import load_autoencoder
from longvid.vae import to_uint8
from longvid.loading import load_into, load_minilm, read_state_dict
from longvid.model import build_transformer
from longvid.text import HFTextEncoder
from trainutil import REPO, blur_latents


def errors(pred: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """(object MSE, overall MSE) over target frames; pred/truth (B, C, F, h, w)."""
    background = truth.flatten(3).median(dim=3).values[..., None, None]
    obj = ((truth - background).norm(dim=1, keepdim=True) > 1.0).float()
    se = (pred - truth).pow(2).mean(dim=1, keepdim=True)
    return float((se * obj).sum() / obj.sum().clamp_min(1)), float(se.mean())


def channel_mass(shape_channels: torch.Tensor) -> np.ndarray:
    """One block's shape channels (S, T, h, w) -> each channel's share of their summed positive
    values: which shape the block names, and how firmly."""
    m = shape_channels.float().clamp_min(0).sum(dim=(1, 2, 3))
    return (m / m.sum().clamp_min(1e-6)).numpy()


def mix_shape_channels(appearance: torch.Tensor, shape: torch.Tensor, n_shape: int) -> torch.Tensor:
    """Latents (B, C, F, h, w) with the first C - n_shape channels of `appearance` and the last
    n_shape channels (the shape channels) of `shape`."""
    return torch.cat([appearance[:, : appearance.shape[1] - n_shape], shape[:, shape.shape[1] - n_shape :]], dim=1)


def pixel_scores(ae, pred: torch.Tensor, specs: list, warm: int = 0) -> np.ndarray:
    """Decode each sample's latents (the target block alone, or after `warm` frames that warm up
    the causal decoder and are not scored) and detect them with longvid.evaluate's detector: per
    sample, the share of frames with the spec's colour, shape and object count. -> (B, 3)."""
    with torch.no_grad():
        video = ae.decode(pred, None, warm == 0)  # (B, 3, T, H, W)
        video = video[:, :, ae.temporal_factor * warm :]
    out = []
    for i, spec in enumerate(specs):
        frames = to_uint8(video[i : i + 1])  # (T, H, W, 3)
        dets = [detect_frame(f) for f in frames]
        out.append([np.mean([d.colour == spec.colour for d in dets]),
                    np.mean([d.shape == spec.shape for d in dets]),
                    np.mean([len(d.objects) == spec.count for d in dets])])
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="longvid-shapes")
    ap.add_argument("--weights", default=None, help="default: the config's transformer weights")
    ap.add_argument("--autoencoder", default=None, help="decoder of the pixel scores; default: the config's")
    ap.add_argument("--data", default=str(REPO / "runs" / "latents" / "shard_*.pt"))
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timesteps", type=float, nargs="+", default=None,
                    help="the sampler's timesteps (before the shift) instead of the config's")
    ap.add_argument("--shift", type=float, default=None, help="the sampler's shift instead of the config's")
    ap.add_argument("--one-step", type=float, nargs="+", default=[], metavar="T",
                    help="also score one x0 prediction from the true block noised to each timestep T "
                         "(does the model keep detail it is given, where the sampler must make it?)")
    ap.add_argument("--blur-truth", type=float, nargs="+", default=[], metavar="A",
                    help="also score the true block with each share A of a 3x3 binomial blur mixed into "
                         "its latents (spatial detail only; compare with the model's row)")
    ap.add_argument("--shape-sources", action="store_true",
                    help="also decode the model's appearance channels with the true shape channels and the "
                         "reverse (a shape-channel autoencoder)")
    ap.add_argument("--reflections", action="store_true",
                    help="the bounce check instead (module docstring): --samples blocks of bouncing scenes")
    ap.add_argument("--pairs", action="store_true",
                    help="the shape-pair check instead (shards made with prepare_latents.py --partners)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if args.timesteps:
        cfg.schedule.timesteps = args.timesteps
    if args.shift is not None:
        cfg.schedule.shift = args.shift
    S, W, k, steps_t, flow = sampler_setup(cfg)
    model = build_transformer(cfg.model).eval()
    args.weights = args.weights or weight_path(cfg, "transformer")
    state, _ = read_state_dict(args.weights)
    load_into(model, state, args.weights)
    text_model, tok = load_minilm()
    bank = CaptionBank(HFTextEncoder(text_model, tok, cfg.text.max_length))
    data = Data(args.data)
    ae = load_autoencoder(args.autoencoder or weight_path(cfg, "vae")).eval()
    rng = np.random.default_rng(1234)
    n_shape = ae.cfg.shape_channels
    if args.shape_sources and not n_shape:
        raise SystemExit(f"--shape-sources: {args.autoencoder or weight_path(cfg, 'vae')} has no shape channels; "
                         "pass a shape-channel autoencoder (--autoencoder or the config's vae)")
    if args.pairs:
        if data.partner_latents is None:
            raise SystemExit("--pairs needs shards made with prepare_latents.py --partners")
        return pair_check(model, bank, data, ae, rng, args, (S, W, k, steps_t, flow))
    if args.reflections:
        return reflection_check(model, bank, data, ae, rng, args, (S, W, k, steps_t, flow))
    pix: dict[str, list] = {"truth": [], "model": [], "first-step": [], "blind": []}
    shapes: list[str] = []  # the spec's shape of each scored block
    mass: dict[str, list] = {}  # --shape-sources: per true shape, the shape channels' mass (model, truth)
    positions = torch.arange(S + W + k)
    totals: dict[str, list[tuple[float, float]]] = {"model": [], "blind": [], "copy": [], "first-step": []}
    for _ in range(args.samples // args.batch):
        clips, x0, masks, target, seg_of_slot, _ = build_batch(data, rng, args.batch, S, W, k, 0.0)
        B = target.shape[0]
        keep = target.sum(1) == k
        text = prompt_context(model, bank, data, clips, seg_of_slot, rng)
        blind_mask = masks & ~(~target[:, None, :] & target[:, :, None])  # target cannot see context
        pick = lambda y: torch.stack([y[i][:, target[i]] for i in range(B)])[keep]  # noqa: E731
        truth = pick(x0)  # the target blocks of complete samples

        def sample(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return sample_target(model, x0, target, steps_t, flow, torch.Generator().manual_seed(0),
                                 text=text, frame_positions=positions, frame_mask=mask)

        pred, first = sample(masks)
        blind, _ = sample(blind_mask)
        last_ctx = torch.stack([x0[i][:, target[i].nonzero()[0, 0] - 1] for i in range(B)])
        copy = last_ctx[keep][:, :, None].expand_as(truth)
        totals["model"].append(errors(pick(pred), truth))
        totals["first-step"].append(errors(pick(first), truth))
        totals["blind"].append(errors(pick(blind), truth))
        totals["copy"].append(errors(copy, truth))
        specs = [data.specs[c][int(seg_of_slot[i, target[i]][0])] for i, c in enumerate(clips) if keep[i]]
        for name, y in (("truth", truth), ("model", pick(pred)), ("first-step", pick(first)), ("blind", pick(blind))):
            pix[name].append(pixel_scores(ae, y, specs))
        if args.shape_sources:
            pix.setdefault("model, true shape channels", []).append(
                pixel_scores(ae, mix_shape_channels(pick(pred), truth, n_shape), specs))
            pix.setdefault("truth, model's shape channels", []).append(
                pixel_scores(ae, mix_shape_channels(truth, pick(pred), n_shape), specs))
            for spec, mine, true in zip(specs, pick(pred)[:, -n_shape:], truth[:, -n_shape:]):
                mass.setdefault(spec.shape, []).append((channel_mass(mine), channel_mass(true)))
        for t_one in args.one_step:
            t = torch.where(target, torch.full(target.shape, t_one), torch.zeros(target.shape))
            x_t = flow.add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), t)
            with torch.no_grad():
                v = model(x_t, t, text=text, frame_positions=positions, frame_mask=masks).float()
            row = pixel_scores(ae, pick(flow.to_x0(x_t, v, t)), specs)
            pix.setdefault(f"one step from the truth at t={t_one:g}", []).append(row)
        for share in args.blur_truth:
            row = pixel_scores(ae, blur_latents(truth, share), specs)
            pix.setdefault(f"truth, latents {share:g} blurred", []).append(row)
        shapes.extend(spec.shape for spec in specs)
    if mass:
        print("| true shape | the model's shape channels' shares | the truth's |\n|---|---|---|")
        for kind, rows in sorted(mass.items()):
            mine, true = (np.mean([r[i] for r in rows], 0) for i in (0, 1))
            print(f"| {kind} | {' / '.join(f'{x:.2f}' for x in mine)} | {' / '.join(f'{x:.2f}' for x in true)} |")
    print(f"{args.weights}: {args.samples} teacher-forced blocks, sampler timesteps "
          f"{[round(t, 1) for t in steps_t]}")
    print("| predictor | object MSE | overall MSE |\n|---|---|---|")
    for name, v in totals.items():
        a = np.array(v).mean(0)
        print(f"| {name} | {a[0]:.3f} | {a[1]:.4f} |")
    kinds = sorted(set(shapes))
    print("\n| decoded | colour | shape | " + " | ".join(f"shape: {k}s" for k in kinds) + " | object count |")
    print("|---" * (4 + len(kinds)) + "|")
    for name, v in pix.items():
        a = np.concatenate(v)
        by_shape = [a[[s == k for s in shapes], 1].mean() for k in kinds]
        print(f"| {name} | {a[:, 0].mean():.2f} | {a[:, 1].mean():.2f} | "
              + " | ".join(f"{x:.2f}" for x in by_shape) + f" | {a[:, 2].mean():.2f} |")


@torch.no_grad()
def pair_check(model, bank, data, ae, rng, args, setup) -> None:
    """The `--pairs` report (module docstring)."""
    S, W, k, steps_t, flow = setup
    positions = torch.arange(S + W + k)
    rel: dict[int, dict[str, list[float]]] = {j: {"first": [], "continuing": []} for j in range(len(steps_t))}
    reads: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.samples // args.batch):
        clips, x0, masks, target, seg, starts = build_batch(data, rng, args.batch, S, W, k, 0.0)
        x_partner, caps, index_a, index_b = pair_batch(data, clips, x0, target, seg, starts, S, rng)
        context = model.text_context(bank.embed(caps))
        text_a, text_b = context.per_frame(index_a.flatten()), context.per_frame(index_b.flatten())
        for j, tj in enumerate(steps_t):
            t = torch.where(target, torch.full(target.shape, float(tj)), torch.zeros(target.shape))
            sigma = flow.sigma(t)[:, None, :, None, None]
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(j))
            v_a = model((1 - sigma) * x0 + sigma * noise, t, text_a, frame_positions=positions, frame_mask=masks).float()
            v_b = model((1 - sigma) * x_partner + sigma * noise, t, text_b, frame_positions=positions,
                        frame_mask=masks).float()
            for i in range(len(clips)):
                one = slice(i, i + 1)
                kind = "first" if starts[i] == 0 else "continuing"
                rel[j][kind].append(float(pair_loss(v_a[one], v_b[one], x0[one], x_partner[one], target[one])))
        first = target_start(target)
        pick = lambda y: torch.stack([y[i][:, target[i]] for i in range(len(clips))])  # noqa: E731
        specs_a = [data.specs[c][int(seg[i, first[i]])] for i, c in enumerate(clips)]
        specs_b = [data.partner_specs[c][int(seg[i, first[i]])] for i, c in enumerate(clips)]
        drawn_a, _ = sample_target(model, x0, target, steps_t, flow, torch.Generator().manual_seed(0),
                                   text=text_a, frame_positions=positions, frame_mask=masks)
        drawn_b, _ = sample_target(model, x_partner, target, steps_t, flow, torch.Generator().manual_seed(0),
                                   text=text_b, frame_positions=positions, frame_mask=masks)
        for name, y, specs in (("truth", x0, specs_a), ("model", drawn_a, specs_a),
                               ("truth, partner", x_partner, specs_b), ("model, partner caption", drawn_b, specs_b)):
            for spec, right in zip(specs, pixel_scores(ae, pick(y), specs)[:, 1]):
                reads.setdefault((name, spec.shape), []).append(float(right))
    print(f"{args.weights}: {args.samples} teacher-forced shape pairs")
    print("| level | pair loss, first blocks | continuing blocks | blind to the word |\n|---|---|---|---|")
    for j, tj in enumerate(steps_t):
        sigma = float(flow.sigma(torch.tensor(float(tj))))
        print(f"| {tj:.0f} | {np.mean(rel[j]['first']):.2f} | {np.mean(rel[j]['continuing']):.2f} | {1 / sigma**2:.2f} |")
    names = list(dict.fromkeys(name for name, _ in reads))
    kinds = sorted({shape for _, shape in reads})
    print("\n| decoded, shape read right | " + " | ".join(f"{s}s" for s in kinds) + " |\n" + "|---" * (1 + len(kinds)) + "|")
    for name in names:
        cells = [f"{np.mean(reads[name, s]):.2f} ({len(reads[name, s])})" if (name, s) in reads else "-" for s in kinds]
        print(f"| {name} | " + " | ".join(cells) + " |")


def target_track(ae, latents: torch.Tensor, k: int) -> np.ndarray:
    """Latents (C, F, h, w) decoded from the stream's start -> the first object's centroid (x, y)
    in each pixel frame of the last `k` latent frames, NaN where none is seen -> (4k, 2)."""
    frames = to_uint8(ae.decode(latents[None], None, True))[-ae.temporal_factor * k:]
    objects = [detect_frame(f).objects for f in frames]
    return np.array([found[0].centroid if found else (np.nan, np.nan) for found in objects], float)


def sharpest_turn(path: np.ndarray) -> float:
    """The largest change of heading between two consecutive steps of `path` (n, 2), degrees."""
    step = np.diff(path, axis=0)
    heading = np.degrees(np.arctan2(step[:, 1], step[:, 0]))
    return float(np.nanmax(np.abs((np.diff(heading) + 180) % 360 - 180)))


@torch.no_grad()
def reflection_check(model, bank, data, ae, rng, args, setup, max_batches: int = 200) -> None:
    """The `--reflections` report (module docstring)."""
    S, W, k, steps_t, flow = setup
    positions = torch.arange(S + W + k)
    weights = motion_clip_weights(data, {"bouncing": 50.0})
    rows: dict[str, list[tuple[float, float]]] = {"reflecting": [], "straight": []}
    turns: dict[str, list[float]] = {"truth": [], "model": []}
    for _ in range(max_batches):
        if sum(map(len, rows.values())) >= args.samples:
            break
        clips, x0, masks, target, seg, starts = build_batch(data, rng, args.batch, S, W, k, 0.0, weights)
        scene = [data.specs[c][int(seg[i, -1])] for i, c in enumerate(clips)]
        picked = [i for i in range(len(clips)) if starts[i] >= S + W and len(set(seg[i].tolist())) == 1
                  and scene[i].motion == "bouncing" and scene[i].count == 1]
        if not picked:
            continue
        text = prompt_context(model, bank, data, clips, seg, rng)
        pred, _ = sample_target(model, x0, target, steps_t, flow, torch.Generator().manual_seed(0),
                                text=text, frame_positions=positions, frame_mask=masks)
        for i in picked:
            truth = target_track(ae, x0[i, :, S:], k)
            drawn = target_track(ae, torch.where(target[i][None, :, None, None], pred[i], x0[i])[:, S:], k)
            half = len(truth) // 2  # reflecting: an axis runs > 2 px one way, then > 2 px back
            before, after = truth[half - 1] - truth[0], truth[-1] - truth[half]
            kind = "reflecting" if np.any((before * after < 0) & (np.abs(before) > 2) & (np.abs(after) > 2)) else "straight"
            error = np.linalg.norm(drawn - truth, axis=1)
            rows[kind].append((float(np.nanmean(error)), float(np.nanmax(error))))
            if kind == "reflecting":
                turns["truth"].append(sharpest_turn(truth))
                turns["model"].append(sharpest_turn(drawn))
    print(f"{args.weights}: teacher-forced blocks of one-object bouncing scenes")
    print("| blocks | n | model's distance from the true path, px: mean | worst frame (mean over blocks) |\n|---|---|---|---|")
    for kind, r in rows.items():
        a = np.array(r).reshape(-1, 2)
        print(f"| {kind} | {len(a)} | {np.nanmean(a[:, 0]):.2f} | {np.nanmean(a[:, 1]):.2f} |")
    print("\n| reflecting blocks | sharpest turn, median (deg) | share of blocks with a turn over 60 deg |\n|---|---|---|")
    for name, t in turns.items():
        print(f"| {name} | {np.nanmedian(t):.0f} | {np.mean(np.array(t) > 60):.2f} |")


if __name__ == "__main__":
    main()
