"""The base built-in model (`configs/longvid-shapes.yaml`) retrained from nothing: every stage in
order, resumable, timed. The default since session 35, `longvid-shapes-labels`, is grown from this
base by the label stages of docs/training.md ("Session 27" to "Session 35"), not run here yet.

    python scripts/retrain.py                       # runs/retrain/: autoencoder -> latents -> generator
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

A stage is done when its output file exists; a stage that was interrupted resumes from its run
directory's checkpoint (every training script checkpoints), so after a stop the same command
carries on. `stages.csv` in --out records each stage's wall time on this machine, and
`longvid-shapes.yaml` there is the built-in config pointed at the new weights:

    longvid generate --config runs/retrain/longvid-shapes.yaml --timeline prompts/example.yaml --out out/retrained.mp4
    python scripts/eval_builtin.py --config runs/retrain/longvid-shapes.yaml --modes recache
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


def write_config(out: Path) -> Path:
    """The built-in config with its weights pointed at this retrain's final files."""
    cfg = yaml.safe_load(BUILTIN_CONFIG.read_text())
    cfg["weights"] = {"transformer": str((out / "generator-tail" / "transformer.safetensors").resolve()),
                      "vae": str((out / "autoencoder-blur" / "autoencoder.safetensors").resolve())}
    path = out / "longvid-shapes.yaml"
    path.write_text(f"# the built-in model retrained by scripts/retrain.py into {out}\n"
                    + yaml.safe_dump(cfg, sort_keys=False))
    return path


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
    ap.add_argument("--dry-run", action="store_true", help="print the stages and what is done; run nothing")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = write_config(out)
    ran = run_stages(stages(out, args.threads, args.generator_steps, args.tail_steps, args.clips, args.compile),
                     out, dry_run=args.dry_run)
    if not args.dry_run:
        print(f"all stages done ({', '.join(ran) or 'nothing left to run'}); stage times in {out / 'stages.csv'}; "
              f"config: {config}")


if __name__ == "__main__":
    main()
