"""A latent shape probe for the generator's shape loss (`train_generator.py --shape-probe`).

    python scripts/train_shape_probe.py --data 'runs/latents/shard_*.pt' --out runs/shape-probe.pt

The generator's blocks come out with one generic blob for every shape (flat bottom, round top:
the mean of a circle, a square and an upward triangle), because the few latent pixels where the
shapes differ weigh almost nothing in a latent MSE. This probe, a small CNN, reads the shape
(circle / square / triangle) from one true latent frame of the prepared shards; the generator
is then asked to make latents it reads as the prompted shape. Trained on noised latents too
(up to `--noise` x their std), so it does not hang on details finer than the shape. Minutes on
one core; written with its held-out accuracy.

`--adversarial EPS` trains the probe on latents perturbed against it (L2 PGD, radius EPS x the
latent std per element), as in adversarial training for robustness. A plain probe is easy to
fool: used as a loss, it drove the generator to fragments with coloured fringes that it read
as squares (docs/training.md, "Session 16"). A robust classifier's gradients point along features
the classes really differ by, which is what the generator's shape loss needs.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from train_generator import Data
from trainutil import REPO, ShapeProbe, warmup_cosine

from longvid.world import SHAPES


def frame_labels(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """(clip, latent frame) pairs of every frame and its segment's shape index."""
    pairs, labels = [], []
    for c in range(data.n):
        for f in range(data.t):
            pairs.append((c, f))
            labels.append(SHAPES.index(data.specs[c][int(data.segments[c, f])].shape))
    return torch.tensor(pairs), torch.tensor(labels)


def pgd_perturb(probe: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, radius: float,
                steps: int = 3) -> torch.Tensor:
    """A perturbation of `x` (N, ...) inside the L2 ball of `radius` x sqrt(elements per sample)
    that raises the probe's cross-entropy: `steps` normalised gradient steps from a random start."""
    bound = radius * float(np.sqrt(x[0].numel()))

    def norm(d: torch.Tensor) -> torch.Tensor:  # per sample, broadcastable against d
        return d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (d.dim() - 1)))

    def project(d: torch.Tensor) -> torch.Tensor:
        return d * (bound / norm(d)).clamp(max=1.0)

    delta = project(torch.randn_like(x) * radius * 0.5)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(probe(x + delta), labels)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = project(delta.detach() + 0.5 * bound * grad / norm(grad))
    return delta.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO / "runs" / "latents" / "shard_*.pt"))
    ap.add_argument("--out", default=str(REPO / "runs" / "shape-probe.pt"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--adversarial", type=float, default=0.0,
                    help="train on PGD-perturbed latents within this L2 radius (x the latent std per element)")
    ap.add_argument("--adv-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    data = Data(args.data)
    pairs, labels = frame_labels(data)
    held = torch.from_numpy(np.isin(pairs[:, 0].numpy(), np.arange(0, data.n, 10)))  # every 10th clip
    train_idx, test_idx = (~held).nonzero()[:, 0], held.nonzero()[:, 0]
    std = float(data.latents[:50].float().std())
    probe = ShapeProbe(data.latents.shape[2])
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=0.01)

    def frames(idx: torch.Tensor) -> torch.Tensor:
        return data.latents[pairs[idx, 0], pairs[idx, 1]].float()

    for step in range(args.steps):
        idx = train_idx[torch.from_numpy(rng.integers(len(train_idx), size=args.batch))]
        x = frames(idx)
        x = x + torch.rand(len(x), 1, 1, 1) * args.noise * std * torch.randn_like(x)
        if args.adversarial:
            x = x + pgd_perturb(probe, x, labels[idx], args.adversarial * std, args.adv_steps)
        loss = torch.nn.functional.cross_entropy(probe(x), labels[idx])
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, 1e-3, args.steps, warmup=0, floor=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)

    probe.eval()
    with torch.no_grad():
        pred = torch.cat([probe(frames(test_idx[i : i + 512])).argmax(1) for i in range(0, len(test_idx), 512)])
    truth = labels[test_idx]
    accuracy = {s: float((pred[truth == i] == i).float().mean()) for i, s in enumerate(SHAPES)}
    print(f"held-out accuracy ({len(test_idx)} latent frames): {accuracy}")
    if args.adversarial:
        idx = test_idx[:512]
        x = frames(idx)
        delta = pgd_perturb(probe, x, labels[idx], args.adversarial * std, 10)
        with torch.no_grad():
            attacked = probe(x + delta).argmax(1)
        print(f"held-out accuracy under a 10-step attack of the same radius: "
              f"{float((attacked == labels[idx]).float().mean()):.3f}")
    torch.save(probe.state_dict(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
