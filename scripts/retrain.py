"""The built-in models retrained from nothing: every stage in order, resumable, timed. First the
base model (`configs/longvid-shapes.yaml`), then the default since session 35,
`longvid-shapes-labels`, grown from it (docs/training.md, "Session 27" to "Session 37").

    python scripts/retrain.py                       # runs/retrain/: autoencoder -> latents -> generator -> labels
    python scripts/retrain.py --smoke --out runs/retrain-smoke   # every stage for 3 steps: the wiring
    python scripts/retrain.py --dry-run             # print the stages' commands and what is done
    python scripts/retrain.py --generator-steps 6000 --out runs/retrain-short

Stages (each one of the training scripts, in its own run directory under --out):

1. `autoencoder`: the 16-channel causal autoencoder with the motion loss, from random weights
   (`train_autoencoder.py`, the recipe of `autoencoder-16ch-m3`);
2. `autoencoder-blur`: fine-tuned to decode blurred latents to sharp frames (the recipe of the
   default `autoencoder.safetensors`, docs/training.md "Session 15");
3. `latents`: clips of the world encoded by it (`prepare_latents.py`);
4. `generator`: the causal Wan generator from random weights on those latents, with the
   default's recipe (self-context, sampler rollouts, context blur, caption dropout), no earlier
   generator's weights (`train_generator.py`);
5. `generator-tail`: a short fine-tune on a fresh cosine schedule from stage 4's EMA, as the
   default's last stage.

Then the label model, the default since session 35 (`--with-labels`, on by default), grown from
that base by the commands of docs/training.md "Session 27" to "Session 37", in order:

6. `autoencoder-shapes`, `autoencoder-shapes-squares`: the base autoencoder grown by one latent
   channel per shape (`--shape-channels`), then resumed with squares drawn over other shapes;
7. `latents-labels`: label latents built from the world's targets with the base autoencoder;
8. `autoencoder-labels`: the label autoencoder (`--shape-labels`) from stage 6;
9. `generator-labels-1` ... `-4`: the base generator widened to the 19 channels and trained on
   them, 1,100 + 3 x 1,500 steps;
10. `decoder-noise-1` ... `-3`: decoder-only rounds on noisier latents (0.3, 0.5, 0.8);
11. `decoder-tune-1` ... `-4`, `decoder-noise-4`: the decoder tuned on the generator's own blocks
    at switches, then a decoder-only round (the default until session 38);
12. `decoder-wholeframe`, `decoder-noise-5`: tuned once more on the generator's blocks, over whole
    frames, then a last decoder-only round (the default from session 38 to 39);
13. `decoder-outline-1` ... `-4`: four more tuning rounds over whole frames with the outline terms
    (`--corner-weight`, `--adv-weight`; three in session 40, a fourth in session 41: the committed
    `autoencoder-labels`).

A stage is done when its output file exists; a stage that was interrupted resumes from its run
directory's checkpoint (every training script checkpoints), so after a stop the same command
carries on. `stages.csv` in --out records each stage's wall time on this machine, and
`longvid-shapes.yaml` and `longvid-shapes-labels.yaml` there are the built-in configs pointed at
the new weights:

    longvid generate --config runs/retrain/longvid-shapes-labels.yaml --timeline prompts/example.yaml --out out/retrained.mp4
    python scripts/eval_builtin.py --config runs/retrain/longvid-shapes-labels.yaml --modes recache

The label chain reproduces the recipe, not the bytes: some of its runs were made in parts
(docs/training.md says which), and the machine's other jobs changed their thread counts.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from trainutil import REPO

SCRIPTS = REPO / "scripts"
BUILTIN_CONFIG = REPO / "configs" / "longvid-shapes.yaml"
LABELS_CONFIG = REPO / "configs" / "longvid-shapes-labels.yaml"


@dataclass
class Stage:
    name: str
    argv: list[str]  # a script under scripts/ and its arguments
    output: Path  # the stage is done when this exists


def stages(out: Path, threads: int, generator_steps: int, tail_steps: int, clips: int,
           compile_model: bool) -> list[Stage]:
    ae, ae_blur, latents = out / "autoencoder", out / "autoencoder-blur", out / "latents"
    gen, tail = out / "generator", out / "generator-tail"
    config = out / "longvid-shapes.yaml"
    t = ["--threads", str(threads)]
    recipe = ["--batch", "16", "--ema", "0.995", "--rollout-prob", "0.3", "--caption-dropout", "0.1",
              "--context-blur", "1.0"] + (["--compile"] if compile_model else [])
    return [
        Stage("autoencoder", ["train_autoencoder.py", "--run", str(ae), "--latent-channels", "16",
                              "--edge-weight", "3", "--motion-weight", "3", "--steps", "2500", "--full-steps", "400",
                              "--out", str(ae / "autoencoder.safetensors"), *t], ae / "autoencoder.safetensors"),
        Stage("autoencoder-blur", ["train_autoencoder.py", "--finetune", "--init", str(ae / "autoencoder.safetensors"),
                                   "--latent-blur", "1.0", "--edge-weight", "3", "--motion-weight", "4",
                                   "--steps", "1800", "--full-steps", "300", "--lr", "5e-4", "--seed", "4",
                                   "--run", str(ae_blur), "--out", str(ae_blur / "autoencoder.safetensors"), *t],
              ae_blur / "autoencoder.safetensors"),
        Stage("latents", ["prepare_latents.py", "--autoencoder", str(ae_blur / "autoencoder.safetensors"),
                          "--out", str(latents), "--clips", str(clips), *t], latents / "done"),
        Stage("generator", ["train_generator.py", "--config", str(config), "--data", str(latents / "shard_*.pt"),
                            "--run", str(gen), "--steps", str(generator_steps), "--lr", "4e-4",
                            "--self-context-from", "800", *recipe, *t, "--out", str(gen / "transformer.safetensors")],
              gen / "done"),
        Stage("generator-tail", ["train_generator.py", "--config", str(config), "--data", str(latents / "shard_*.pt"),
                                 "--run", str(tail), "--init-from", str(gen / "transformer.safetensors"),
                                 "--steps", str(tail_steps), "--lr", "1.5e-4", "--self-context-from", "0", "--seed", "1",
                                 *recipe, *t, "--out", str(tail / "transformer.safetensors")],
              tail / "done"),
    ]


def label_stages(out: Path, threads: int, compile_model: bool) -> list[Stage]:
    """The label model on top of `stages`' base (docs/training.md, "Session 27" to "Session 37")."""
    base_ae = str(out / "autoencoder-blur" / "autoencoder.safetensors")
    base_gen = str(out / "generator-tail" / "transformer.safetensors")
    latents = out / "latents-labels"
    data = str(latents / "shard_*.pt")
    t = ["--threads", str(threads)]

    def file(name: str, what: str = "autoencoder") -> Path:
        return out / name / f"{what}.safetensors"

    def autoencoder(name: str, *argv: str, run: str | None = None) -> Stage:
        """A `train_autoencoder.py` stage writing <out>/<name>/autoencoder.safetensors."""
        return Stage(name, ["train_autoencoder.py", "--run", str(out / (run or name)), "--out", str(file(name)),
                            "--reference", base_ae, "--edge-weight", "3", "--motion-weight", "4", *argv, *t], file(name))

    def noise_round(name: str, init: str, steps: str, full: str, noise: str, squares: str, seed: str) -> Stage:
        return autoencoder(name, "--decoder-only", "--init", str(file(init)), "--steps", steps, "--full-steps", full,
                           "--batch", "6", "--latent-noise", noise, "--latent-blur", "1.0", "--lr", "1e-4",
                           "--square-share", squares, "--hedge-maps", "0.7", "0.25", "--seed", seed)

    def generator(name: str, init: str, steps: str, weight: str, seed: str, *extra: str) -> Stage:
        return Stage(name, ["train_generator.py", "--config", str(out / "labels-train.yaml"), "--data", data,
                            "--run", str(out / name), "--init-from", init, *extra, "--steps", steps, "--batch", "16",
                            "--lr", "2e-4", "--ema", "0.995", "--self-context-from", "0", "--rollout-prob", "0.3",
                            "--caption-dropout", "0.1", "--context-blur", "1.0", "--shape-channel-weight", weight,
                            "--seed", seed, *t, *(["--compile"] if compile_model else []),
                            "--out", str(file(name, "transformer"))], out / name / "done")

    def tune(name: str, init: str, steps: str, seed: str, *argv: str, batch: str = "8", crop: str = "8") -> Stage:
        return Stage(name, ["tune_decoder.py", "--config", str(out / "longvid-shapes-labels.yaml"), "--data", data,
                            "--autoencoder", str(file(init)), "--run", str(out / name), "--out", str(file(name)),
                            "--steps", steps, "--batch", batch, "--crop", crop, "--lr", "1e-4", "--motion-weight", "4",
                            "--seed", seed, *argv, *t], file(name))

    # session 37's tuning over whole frames: switches, new backgrounds and noisy true latents
    whole_frames = ("--switch-share", "0.5", "--background-switch-share", "0.6", "--halo-weight", "10",
                    "--generated-object-weight", "1", "--true-share", "0.5", "--true-latent-noise", "0.8",
                    "--true-latent-blur", "1.0", "--true-shape-blur", "0.5", "--true-hedge-maps", "0.7", "0.25")

    def outline(name: str, init: str, seed: str) -> Stage:
        return tune(name, init, "500", seed, *whole_frames, "--corner-weight", "20", "--adv-weight", "0.15",
                    batch="4", crop="0")

    return [
        autoencoder("autoencoder-shapes", "--shape-channels", "--init", base_ae, "--steps", "2700", "--full-steps", "300",
                    "--batch", "6", "--latent-blur", "1.0", "--lr", "3e-4", "--seed", "27"),
        # session 28 resumed session 27's run (same run directory) on a longer schedule with squares
        autoencoder("autoencoder-shapes-squares", "--shape-channels", "--init", base_ae, "--steps", "4200",
                    "--full-steps", "300", "--batch", "6", "--latent-blur", "1.0", "--lr", "3e-4", "--square-share", "0.4",
                    "--seed", "28", run="autoencoder-shapes"),
        Stage("latents-labels", ["prepare_latents.py", "--shape-labels", "--autoencoder", base_ae, "--out", str(latents),
                                 "--clips", "400", *t], latents / "done"),
        autoencoder("autoencoder-labels", "--shape-channels", "--shape-labels",
                    "--init", str(file("autoencoder-shapes-squares")), "--steps", "1400", "--full-steps", "200",
                    "--batch", "6", "--latent-blur", "1.0", "--lr", "3e-4", "--square-share", "0.3",
                    "--hedge-maps", "0.7", "0.25", "--seed", "32"),
        generator("generator-labels-1", base_gen, "1100", "4", "32", "--widen-latents"),
        generator("generator-labels-2", str(file("generator-labels-1", "transformer")), "1500", "16", "33"),
        generator("generator-labels-3", str(file("generator-labels-2", "transformer")), "1500", "16", "34"),
        generator("generator-labels-4", str(file("generator-labels-3", "transformer")), "1500", "16", "35"),
        noise_round("decoder-noise-1", "autoencoder-labels", "600", "150", "0.3", "0.3", "40"),
        noise_round("decoder-noise-2", "decoder-noise-1", "800", "200", "0.5", "0.5", "41"),
        noise_round("decoder-noise-3", "decoder-noise-2", "800", "200", "0.8", "0.5", "42"),
        tune("decoder-tune-1", "decoder-noise-3", "800", "0", "--switch-share", "0.7"),
        tune("decoder-tune-2", "decoder-tune-1", "800", "1", "--switch-share", "1.0", "--halo-weight", "5"),
        tune("decoder-tune-3", "decoder-tune-2", "800", "2", "--switch-share", "1.0", "--background-switch-share", "0.6",
             "--halo-weight", "5"),
        tune("decoder-tune-4", "decoder-tune-3", "800", "3", "--switch-share", "1.0", "--background-switch-share", "0.8",
             "--halo-weight", "10"),
        noise_round("decoder-noise-4", "decoder-tune-4", "400", "100", "0.8", "0.5", "46"),
        # session 37: tuned on whole frames (no teleport in 20 runs), then one more noise round
        tune("decoder-wholeframe", "decoder-noise-4", "600", "70", *whole_frames, batch="4", crop="0"),
        noise_round("decoder-noise-5", "decoder-wholeframe", "400", "100", "0.8", "0.5", "71"),
        # session 40: the outline of what it draws judged (corner cover and a silhouette critic)
        outline("decoder-outline-1", "decoder-noise-5", "93"),
        outline("decoder-outline-2", "decoder-outline-1", "94"),
        outline("decoder-outline-3", "decoder-outline-2", "95"),
        outline(FINAL_DECODER, "decoder-outline-3", "96"),  # session 41: a fourth round
    ]


FINAL_DECODER = "decoder-outline-4"  # the label chain's last stage: the committed autoencoder-labels

SMOKE = {"--steps": "3", "--full-steps": "1", "--clips": "50", "--batch": "4", "--eval-samples": "4"}


def smoke(stage: Stage) -> Stage:
    """`stage` cut to a few steps on one shard of clips (`--smoke`): every script, option and file
    of the chain is exercised in minutes, nothing is learnt."""
    argv = list(stage.argv)
    for i, arg in enumerate(argv[:-1]):
        if arg in SMOKE:
            argv[i + 1] = SMOKE[arg]
    if argv[0] == "tune_decoder.py":
        argv += ["--eval-samples", SMOKE["--eval-samples"]]
    return Stage(stage.name, argv, stage.output)


def write_config(out: Path) -> Path:
    """The built-in config with its weights pointed at this retrain's final files."""
    cfg = yaml.safe_load(BUILTIN_CONFIG.read_text())
    cfg["weights"] = {"transformer": str((out / "generator-tail" / "transformer.safetensors").resolve()),
                      "vae": str((out / "autoencoder-blur" / "autoencoder.safetensors").resolve())}
    path = out / "longvid-shapes.yaml"
    path.write_text(f"# the built-in model retrained by scripts/retrain.py into {out}\n"
                    + yaml.safe_dump(cfg, sort_keys=False))
    return path


def write_label_configs(out: Path) -> Path:
    """The label config pointed at this retrain's final files (`longvid-shapes-labels.yaml`, also
    what the tuning stages read the generator from), and the one its generator stages train with
    (`labels-train.yaml`: its vae is the shape-channel autoencoder, read for its channels)."""
    cfg = yaml.safe_load(LABELS_CONFIG.read_text())
    final = out / "longvid-shapes-labels.yaml"
    for path, vae in ((final, out / FINAL_DECODER / "autoencoder.safetensors"),
                      (out / "labels-train.yaml", out / "autoencoder-shapes-squares" / "autoencoder.safetensors")):
        cfg["weights"] = {"transformer": str((out / "generator-labels-4" / "transformer.safetensors").resolve()),
                          "vae": str(vae.resolve())}
        path.write_text(f"# the built-in label model retrained by scripts/retrain.py into {out}\n"
                        + yaml.safe_dump(cfg, sort_keys=False))
    return final


def record(out: Path, name: str, seconds: float) -> None:
    path = out / "stages.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["stage", "minutes", "finished"])
        w.writerow([name, f"{seconds / 60:.1f}", time.strftime("%Y-%m-%d %H:%M:%S")])


def run_stages(todo: list[Stage], out: Path, run=subprocess.run, dry_run: bool = False) -> list[str]:
    """Run the stages whose output is missing, in order; returns the names of those run. A stage
    that fails stops the chain (its run directory keeps what it did, for the next attempt)."""
    ran = []
    for stage in todo:
        cmd = [sys.executable, str(SCRIPTS / stage.argv[0]), *stage.argv[1:]]
        if stage.output.exists():
            print(f"{'[done]':7} {stage.name}: {stage.output}", flush=True)
            continue
        print(f"{'[todo]' if dry_run else '[run]':7} {stage.name}: {' '.join(cmd[1:])}", flush=True)
        if dry_run:
            continue
        t0 = time.time()
        done = run(cmd, cwd=REPO)
        if done.returncode != 0:
            raise SystemExit(f"stage {stage.name} failed (exit {done.returncode}); run the same command again "
                             f"to resume it from {out}")
        if stage.output.name == "done":  # stages whose scripts write several files
            stage.output.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
        record(out, stage.name, time.time() - t0)
        ran.append(stage.name)
    return ran


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "runs" / "retrain"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--generator-steps", type=int, default=10000)
    ap.add_argument("--tail-steps", type=int, default=1500)
    ap.add_argument("--clips", type=int, default=400, help="latent clips (50 a shard)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="the generator's forwards through torch.compile (train_generator.py --compile)")
    ap.add_argument("--with-labels", action=argparse.BooleanOptionalAction, default=True,
                    help="also the label model grown from the base (the default config since session 35)")
    ap.add_argument("--dry-run", action="store_true", help="print the stages and what is done; run nothing")
    ap.add_argument("--smoke", action="store_true",
                    help="every stage for 3 steps on 50 clips, no compile (checks the chain's wiring in minutes)")
    args = ap.parse_args()
    if args.smoke:
        args.compile = False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = write_config(out)
    todo = stages(out, args.threads, args.generator_steps, args.tail_steps, args.clips, args.compile)
    if args.with_labels:
        config = write_label_configs(out)
        todo += label_stages(out, args.threads, args.compile)
    if args.smoke:
        todo = [smoke(stage) for stage in todo]
    ran = run_stages(todo, out, dry_run=args.dry_run)
    if not args.dry_run:
        print(f"all stages done ({', '.join(ran) or 'nothing left to run'}); stage times in {out / 'stages.csv'}; "
              f"config: {config}")


if __name__ == "__main__":
    main()
