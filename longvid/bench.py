"""Benchmarks: where the time goes, how fast the machine is, and longvid against its peers.

`longvid bench` (cli/app.py) is a thin wrapper around `run_bench`, which measures, in one
process and one run:

- the settings: config, threads, dtype, torch / diffusers versions, CPU model;
- the machine's matmul peak: the best FLOP/s of square matmuls in the model's dtype on the same
  threads (`matmul_peak`);
- end to end, everything `longvid generate` does but the manifest: text encoding, generation,
  KV-recache at prompt switches, streaming decode and the fragmented MP4 (to a scratch file),
  with the frames per second, each stage's seconds, the time to the first frame after the model
  is loaded, and the wall time and process memory of every block (`run_stream`), summarised per
  window of video (per minute for a long stream, `per_window`);
- the generator's achieved FLOP/s: the transformer forwards of one steady-state block, counted
  with `torch.utils.flop_counter` (`count_block_flops`), over the measured generator seconds per
  block, against the matmul peak;
- with `compare`: the same frames made three ways in the same process (`compare_engines`):
  longvid's KV-cached engine, the same engine recomputing its whole attention context at every
  denoising step with no cache (`recompute_latents`), and diffusers'
  `SkyReelsV2DiffusionForcingPipeline` built from the same transformer weights
  (`skyreels_latents`); each decoded by the same streaming decoder, no MP4 encode.

Nothing here asserts a speed; the figures and their commands are in docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .cache import frame_mask
from .config import Config, config_to_dict
from .model import cast_model
from .pipeline import StreamPipeline, frame_noise
from .timeline import Prompt, Timeline, seconds_to_latent_frame
from .vae import to_uint8
from .writers import Mp4Writer

PROMPTS = (
    "a red circle bouncing on a black background",
    "a blue square moving right on a gray background",
    "a yellow triangle circling on a navy background",
    "a green ball moving up on a dark green background",
)


# --- the machine ---------------------------------------------------------------------------------


def _proc_status(key: str) -> float:
    """A /proc/self/status field in MiB (nan where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mib() -> float:
    """Resident memory of this process now, MiB."""
    return _proc_status("VmRSS")


def peak_rss_mib() -> float:
    """Highest resident memory since the process started or since `reset_peak_rss`, MiB."""
    return _proc_status("VmHWM")


def reset_peak_rss() -> bool:
    """Restart the peak-RSS counter (Linux: /proc/self/clear_refs). False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the figures depend on besides the config."""
    try:
        import diffusers
        diffusers_version = diffusers.__version__
    except Exception:  # noqa: BLE001 - optional
        diffusers_version = None
    flags = set()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "isa": [x for x in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if x in flags],
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers_version,
        "python": platform.python_version(),
        "blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                           "MKL_NUM_THREADS", "KMP_BLOCKTIME") if k in os.environ},
    }


def matmul_peak(dtype: torch.dtype = torch.float32, sizes: tuple[int, ...] = (512, 1024, 2048),
                seconds: float = 0.4) -> dict[str, Any]:
    """The best FLOP/s of square (n x n) @ (n x n) matmuls in `dtype` on the current threads:
    the machine's practical peak, which the generator's achieved FLOP/s is compared to."""
    per_size = {}
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        out = torch.empty(n, n, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up
        reps, t0 = 0, time.perf_counter()
        while True:
            torch.mm(a, b, out=out)
            reps += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds and reps >= 3:
                break
        per_size[n] = 2 * n**3 * reps / elapsed
    best = max(per_size, key=per_size.get)
    return {"dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
            "flops": per_size[best], "size": best,
            "per_size": {str(n): round(f / 1e9, 2) for n, f in per_size.items()}}


# --- FLOPs of the generator ----------------------------------------------------------------------


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Dense attention: Q K^T and P V (masked-out pairs are computed too)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter():
    """A `FlopCounterMode` that also counts PyTorch's CPU attention kernel."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_block_flops(pipe: StreamPipeline, blocks: int | None = None) -> dict[str, Any]:
    """FLOPs of the transformer forwards of each block of a one-prompt stream (denoising steps and
    the commit pass; text and decode excluded). The stream runs until the sink and window are full
    and every ring slot is in use (`blocks`, default: that plus two), and the last block's count
    (its denoising steps and the previous block's commit pass) is the steady state."""
    k = pipe.schedule.block_frames
    cc = pipe.config.cache
    if blocks is None:
        blocks = -(-(cc.sink_frames + cc.window_frames) // k) + 3
    fps, tf = pipe.config.video.fps, pipe.config.vae.temporal_factor
    seconds = (blocks * k + pipe.schedule.max_chunk_frames) * tf / fps
    tl = Timeline((Prompt(PROMPTS[0], 0.0, 0),), seconds, fps, tf)
    pipe.context((PROMPTS[0],))  # text encoding outside the count
    per_block, forwards = [], []
    counter = flop_counter()
    model_forward = pipe.model.forward
    calls = 0

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return model_forward(*args, **kwargs)

    pipe.model.forward = counting  # count forwards per block too
    try:
        with counter:
            last, last_calls = 0, 0
            for i, _ in enumerate(pipe.latents(tl, seed=0)):
                total = counter.get_total_flops()
                per_block.append(total - last)
                forwards.append(calls - last_calls)
                last, last_calls = total, calls
                if i + 1 >= blocks:
                    break
    finally:
        del pipe.model.forward
    return {"per_block": per_block, "forwards_per_block": forwards, "steady_block_flops": per_block[-1],
            "steady_forwards": forwards[-1]}


# --- one stream, end to end ----------------------------------------------------------------------


def bench_timeline(config: Config, seconds: float, switch_every: float | None = 20.0) -> Timeline:
    """`seconds` of video, the prompt changing every `switch_every` seconds (None: one prompt)."""
    fps, tf = config.video.fps, config.vae.temporal_factor
    step = switch_every if switch_every else seconds
    starts = [i * step for i in range(int(seconds // step) + 1) if i * step < seconds] or [0.0]
    prompts = tuple(Prompt(PROMPTS[i % len(PROMPTS)], s, seconds_to_latent_frame(s, fps, tf))
                    for i, s in enumerate(starts))
    return Timeline(prompts, seconds, fps, tf)


def run_stream(pipe: StreamPipeline, timeline: Timeline, seed: int = 0,
               video: Path | None = None, stream_fn: Callable | None = None) -> dict[str, Any]:
    """Everything `longvid generate` does but the manifest, timed: frames from `pipe.stream`
    into an Mp4Writer at `video` (None: a scratch file, deleted after). Returns the frame count,
    wall seconds, time to first frame, per-stage seconds and one row per block (wall seconds
    from the end of the previous block's last frame write to the end of this one's, and RSS)."""
    fps = pipe.config.video.fps
    with contextlib.ExitStack() as stack:
        if video is None:
            video = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="longvid-bench-"))) / "bench.mp4"
        writer = Mp4Writer(video, fps, fsync=False)
        frames = (stream_fn or pipe.stream)(timeline, seed=seed)
        rows: list[dict[str, Any]] = []
        write_s, ttff, count = 0.0, None, 0
        block, t_block = None, None
        t_start = time.perf_counter()
        t_last = t_start
        try:
            for frame in frames:
                now = time.perf_counter()
                if ttff is None:
                    ttff = now - t_start
                if frame.block != block:
                    if block is not None:
                        rows.append(_block_row(block, count, fps, t_last - t_block))
                    block, t_block = frame.block, t_last
                writer.write(frame)
                count += 1
                t_last = time.perf_counter()
                write_s += t_last - now
            if block is not None:
                rows.append(_block_row(block, count, fps, t_last - t_block))
        finally:
            t0 = time.perf_counter()
            writer.close()
            write_s += time.perf_counter() - t0
        wall = time.perf_counter() - t_start
    stats = pipe.stats.as_dict()
    stages = {"text_s": stats["text_s"], "generator_s": stats["generator_s"],
              "recache_s": stats["recache_s"], "decode_s": stats["decode_s"],
              "encode_s": round(write_s, 4)}
    return {"frames": count, "video_seconds": count / fps, "wall_s": wall,
            "fps": count / wall if wall > 0 else 0.0, "realtime": count / fps / wall if wall > 0 else 0.0,
            "ttff_s": ttff, "stages": stages, "stage_fps": {
                k[:-2]: (count / v if v > 0 else None) for k, v in stages.items()},
            "forwards": stats["forwards"], "recaches": stats["recaches"], "blocks": stats["blocks"],
            "block_rows": rows}


def _block_row(block: int, frames_done: int, fps: int, seconds: float) -> dict[str, Any]:
    return {"block": block, "video_s": round(frames_done / fps, 4), "block_ms": round(1000 * seconds, 3),
            "rss_mib": round(rss_mib(), 1)}


def per_window(rows: list[dict[str, Any]], window_s: float, skip_first: bool = True) -> list[dict[str, Any]]:
    """Block rows -> one row per `window_s` seconds of video: blocks, mean / p95 block ms, RSS
    at the window's end and its max. The first block (warm-up: its cost is the time to first
    frame) is left out when `skip_first`."""
    use = rows[1:] if skip_first and len(rows) > 1 else rows
    if not use:
        return []
    out = []
    for w in range(int(-(-use[-1]["video_s"] // window_s))):
        rs = [r for r in use if w * window_s < r["video_s"] <= (w + 1) * window_s + 1e-9]
        if not rs:
            continue
        times = sorted(r["block_ms"] for r in rs)
        out.append({"window": w + 1, "until_s": round(min((w + 1) * window_s, rs[-1]["video_s"]), 3),
                    "blocks": len(rs), "mean_block_ms": round(statistics.mean(times), 2),
                    "p95_block_ms": round(times[int(0.95 * (len(times) - 1))], 2),
                    "rss_mib": rs[-1]["rss_mib"], "max_rss_mib": max(r["rss_mib"] for r in rs)})
    return out


def drift(windows: list[dict[str, Any]]) -> dict[str, float] | None:
    """Last window against the first: relative change of mean block time and of max RSS."""
    if len(windows) < 2:
        return None
    first, last = windows[0], windows[-1]
    return {"block_time": round(last["mean_block_ms"] / first["mean_block_ms"] - 1, 4),
            "rss": round(last["max_rss_mib"] / first["max_rss_mib"] - 1, 4)}


# --- the peers: full recompute, diffusers' SkyReels-V2 diffusion forcing ------------------------


def recompute_latents(pipe: StreamPipeline, timeline: Timeline, seed: int = 0,
                      ) -> Iterator[tuple[int, torch.Tensor, int]]:
    """`pipe.latents` without a KV cache: every denoising step runs one forward over the whole
    attention context (the committed sink and window frames, clean at t = 0, recomputed every
    time) and the frames in flight, under `cache.frame_mask`; no commit pass. A prompt switch
    needs no recache (the context is recomputed under the prompt in effect anyway).

    Same noise, schedule, positions and visibility rule as the cached engine; equal to it while
    nothing has left the window. After that, a window frame's keys are computed from the part of
    its own history that is still in the context, so the two differ slightly (the price of not
    recomputing the whole stream, which would grow without bound)."""
    cfg, sched, flow = pipe.config, pipe.schedule, pipe.flow
    S, W, k = cfg.cache.sink_frames, cfg.cache.window_frames, sched.block_frames
    shape = (pipe.latent_channels, *pipe.latent_hw)
    predicted = cfg.schedule.renoise == "predicted"
    x: dict[int, torch.Tensor] = {}
    clean: dict[int, torch.Tensor] = {}
    block_t0 = time.perf_counter()
    for st in sched.steps(timeline.num_latent_frames):
        if st.commit:
            continue
        n = st.start
        _, ctx = pipe._block_context(timeline, (st.stop - 1) // k)
        start = max(S, n - W)
        context = list(range(min(S, n))) + list(range(start, n))
        for f, lvl in zip(st.frames, st.denoise_index.tolist()):
            if lvl == 0:
                x[f] = frame_noise(seed, f, 0, shape)
        frames = torch.tensor(context + list(st.frames))
        positions = frames.clone()
        if cfg.cache.rope == "compact" and n > S + W:
            n_sink = min(S, n)
            positions[:n_sink] = start - n_sink + frames[:n_sink]
        mask = frame_mask(frames, k, S, W, in_flight_from=n)
        xs = torch.stack([clean[f] for f in context] + [x[f] for f in st.frames], dim=1)[None]
        t = torch.cat([torch.zeros(len(context)), st.t])
        t0 = time.perf_counter()
        with torch.no_grad():
            out = pipe.model(xs.to(pipe.device, pipe.dtype), t.to(pipe.device), ctx,
                             frame_positions=positions, frame_mask=mask)
        pipe.stats.forwards += 1
        pipe.stats.generator_s += time.perf_counter() - t0
        out = out[:, :, len(context):].float()
        xt = xs[:, :, len(context):]
        x0 = flow.to_x0(xt, out, st.t)
        noise_pred = flow.to_noise(xt, out, st.t) if predicted else None
        for i, f in enumerate(st.frames):
            t_next = st.t_next[i : i + 1]
            if float(t_next) > 0:
                noise = (noise_pred[:, :, i : i + 1] if predicted else
                         frame_noise(seed, f, int(st.denoise_index[i]) + 1, shape)[None, :, None])
                x[f] = flow.add_noise(x0[:, :, i : i + 1], noise, t_next)[0, :, 0]
            else:
                clean[f] = x0[0, :, i]
                del x[f]
        for f in [f for f in clean if f < start and f >= S]:
            del clean[f]  # out of every later context
        done = st.finished
        if len(done):
            block = done.start // k
            pipe.stats.blocks += 1
            pipe.stats.block_seconds.append(time.perf_counter() - block_t0)
            block_t0 = time.perf_counter()
            yield block, torch.stack([clean[f] for f in done], dim=1)[None], timeline.prompt_index_at(block * k)


def skyreels_pipeline(pipe: StreamPipeline):
    """diffusers' `SkyReelsV2DiffusionForcingPipeline` around a `SkyReelsV2Transformer3DModel`
    of the same size holding the same weights as `pipe.model` (the parameter names are the same),
    a UniPC flow scheduler with the config's shift, and no text encoder or VAE (prompt embeddings
    are passed in, latents come out and go through `pipe.decoder` like longvid's)."""
    from diffusers import SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Transformer3DModel, UniPCMultistepScheduler

    from diffusers.utils import logging as diffusers_logging

    mc = pipe.model.config
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its advice on fp32 modules: we cast as it asks below
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sky = SkyReelsV2Transformer3DModel(
            patch_size=tuple(mc.patch_size), num_attention_heads=mc.num_attention_heads,
            attention_head_dim=mc.attention_head_dim, in_channels=mc.in_channels,
            out_channels=mc.out_channels, text_dim=mc.text_dim, freq_dim=mc.freq_dim, ffn_dim=mc.ffn_dim,
            num_layers=mc.num_layers, cross_attn_norm=mc.cross_attn_norm, qk_norm=mc.qk_norm, eps=mc.eps,
            num_frame_per_block=pipe.schedule.block_frames)
    state = {k: v.float() for k, v in pipe.model.state_dict().items()}
    sky.load_state_dict(state, strict=True)
    sky = cast_model(sky.to(pipe.device), pipe.dtype).eval().requires_grad_(False)
    diffusers_logging.set_verbosity(verbosity)
    sc = pipe.config.schedule
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=sc.shift, num_train_timesteps=sc.num_train_timesteps)
    peer = SkyReelsV2DiffusionForcingPipeline(tokenizer=None, text_encoder=None, transformer=sky,
                                              vae=None, scheduler=scheduler)
    peer.set_progress_bar_config(disable=True)
    peer.forwards = 0

    def count(*_args) -> None:
        peer.forwards += 1

    sky.register_forward_pre_hook(count)
    return peer


def skyreels_settings(pipe: StreamPipeline, num_latent_frames: int) -> dict[str, Any]:
    """The peer's call arguments for the same work as longvid: the same latent frames, the same
    denoising steps per frame, the same attention span (each chunk holds the sink + window frames
    of history and one new block), block-causal attention in blocks of the same size,
    synchronous denoising within a chunk (ar_step 0), no classifier-free guidance. The frame count
    is rounded up to whole blocks (longvid makes whole blocks too; the pipeline fails on a last
    chunk of less than a block)."""
    cfg, tf = pipe.config, pipe.config.vae.temporal_factor
    k = pipe.schedule.block_frames
    num_latent_frames = -(-num_latent_frames // k) * k  # whole blocks, as longvid makes them
    history = cfg.cache.sink_frames + cfg.cache.window_frames
    history -= history % k  # the pipeline truncates the history to whole blocks
    base = history + k
    return {"num_frames": tf * (num_latent_frames - 1) + 1, "base_num_frames": tf * (base - 1) + 1,
            "overlap_history": tf * (history - 1) + 1, "causal_block_size": k, "ar_step": 0,
            "num_inference_steps": len(cfg.schedule.timesteps), "guidance_scale": 1.0,
            "height": cfg.video.height, "width": cfg.video.width, "fps": cfg.video.fps}


def skyreels_latents(pipe: StreamPipeline, peer, timeline: Timeline, seed: int = 0,
                     ) -> Iterator[tuple[int, torch.Tensor, int]]:
    """Run the diffusers pipeline once (it returns the whole video at the end) and yield its
    latents block by block, like `pipe.latents` (one prompt: the timeline's first)."""
    settings = skyreels_settings(pipe, timeline.num_latent_frames)
    emb = pipe.text_encoder.encode([timeline.prompts[0].text])
    peer.forwards = 0
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latents = peer(prompt=None, prompt_embeds=emb.to(pipe.device, pipe.dtype), output_type="latent",
                       generator=torch.Generator().manual_seed(seed), **settings).frames
    pipe.stats.generator_s += time.perf_counter() - t0
    latents = latents[:, :, : timeline.num_latent_frames].float()
    pipe.stats.forwards += peer.forwards
    k = pipe.schedule.block_frames
    for block in range(-(-latents.shape[2] // k)):
        pipe.stats.blocks += 1
        yield block, latents[:, :, block * k : (block + 1) * k], 0


def run_engine(pipe: StreamPipeline, latents: Iterator, timeline: Timeline) -> dict[str, Any]:
    """Decode the blocks of a latents iterator with `pipe.decoder` (no MP4), timed: frames per
    second, time to first frame, peak RSS during the run."""
    pipe.decoder.reset()
    gc.collect()
    peak_ok = reset_peak_rss()
    rss0 = rss_mib()
    total, count, ttff = timeline.num_pixel_frames, 0, None
    t_start = time.perf_counter()
    for _, lat, _ in latents:
        t0 = time.perf_counter()
        with torch.no_grad():
            images = to_uint8(pipe.decoder.decode(lat))
        pipe.stats.decode_s += time.perf_counter() - t0
        if ttff is None and len(images):
            ttff = time.perf_counter() - t_start
        count += len(images)
        if count >= total:
            break
    wall = time.perf_counter() - t_start
    count = min(count, total)
    stats = pipe.stats.as_dict()
    return {"frames": count, "wall_s": round(wall, 4), "fps": round(count / wall, 3),
            "ttff_s": round(ttff or wall, 4), "generator_s": stats["generator_s"],
            "recache_s": stats["recache_s"], "decode_s": stats["decode_s"], "forwards": stats["forwards"],
            "rss_before_mib": round(rss0, 1),
            "peak_rss_mib": round(peak_rss_mib(), 1) if peak_ok else None}


def compare_engines(pipe: StreamPipeline, seconds: float, seed: int = 0,
                    peers: tuple[str, ...] = ("recompute", "diffusers")) -> dict[str, Any]:
    """The same frames (one prompt, `seconds` of video, same transformer weights, same steps)
    made by longvid's cached engine and by each peer; every engine's latents are decoded by the
    same streaming decoder. Returns each engine's figures and longvid's ratio to each peer."""
    from .pipeline import StreamStats

    tl = bench_timeline(pipe.config, seconds, switch_every=None)
    pipe.context((tl.prompts[0].text,))  # text encoding is not what is compared
    engines: dict[str, Any] = {}

    def run(name: str, make: Callable[[], Iterator]) -> None:
        pipe.stats = StreamStats()
        engines[name] = run_engine(pipe, make(), tl)

    run("longvid", lambda: pipe.latents(tl, seed))
    if "recompute" in peers:
        run("recompute", lambda: recompute_latents(pipe, tl, seed))
    notes = {}
    if "diffusers" in peers and getattr(pipe.model, "_quantized", "none") != "none":
        notes["diffusers"] = "not run: the transformer is int8-quantized (compare in float32)"
    elif "diffusers" in peers:
        try:
            peer = skyreels_pipeline(pipe)
        except ImportError as error:  # pragma: no cover - diffusers is a dependency
            notes["diffusers"] = f"not run: {error}"
        else:
            run("diffusers", lambda: skyreels_latents(pipe, peer, tl, seed))
            engines["diffusers"]["settings"] = skyreels_settings(pipe, tl.num_latent_frames)
            del peer
    ours = engines["longvid"]
    ratios = {name: {"throughput": round(ours["fps"] / e["fps"], 3),
                     "ttff": round(e["ttff_s"] / ours["ttff_s"], 3),
                     "peak_rss": (round(e["peak_rss_mib"] / ours["peak_rss_mib"], 3)
                                  if e.get("peak_rss_mib") and ours.get("peak_rss_mib") else None)}
              for name, e in engines.items() if name != "longvid"}
    return {"seconds": seconds, "frames": tl.num_pixel_frames, "latent_frames": tl.num_latent_frames,
            "engines": engines, "ratios": ratios, "notes": notes}


# --- everything ----------------------------------------------------------------------------------


def run_bench(pipe: StreamPipeline, *, seconds: float = 60.0, seed: int = 0, switch_every: float | None = 20.0,
              window_s: float | None = None, load_s: float | None = None, flops: bool = True,
              peak: bool = True, peak_seconds: float = 0.4, compare: bool = False, compare_seconds: float = 20.0,
              video: Path | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """All of the module docstring's measurements on a loaded pipeline -> a JSON-able report."""
    say = progress or (lambda _msg: None)
    cfg = pipe.config
    report: dict[str, Any] = {
        "settings": {"config": cfg.name, "threads": torch.get_num_threads(), "dtype": cfg.runtime.dtype,
                     "quantize": cfg.runtime.quantize,
                     "compile": cfg.runtime.compile, "seed": seed, "seconds": seconds,
                     "switch_every_s": switch_every, "video": f"{cfg.video.width}x{cfg.video.height} @ {cfg.video.fps} fps",
                     "block_frames": pipe.schedule.block_frames, "steps": len(cfg.schedule.timesteps),
                     "sink_frames": cfg.cache.sink_frames, "window_frames": cfg.cache.window_frames,
                     "parameters": sum(p.numel() for p in pipe.model.parameters()),
                     "kv_cache_mib": round(pipe.new_cache().memory_bytes() / 2**20, 3),
                     "config_full": config_to_dict(cfg)},
        "machine": machine_info(),
    }
    if load_s is not None:
        report["load_s"] = round(load_s, 4)
    say(f"end to end: {seconds:g} s of video")
    tl = bench_timeline(cfg, seconds, switch_every)
    e2e = run_stream(pipe, tl, seed, video)
    rows = e2e.pop("block_rows")
    window_s = window_s or (60.0 if seconds >= 120 else 10.0 if seconds >= 30 else 3.0)
    windows = per_window(rows, window_s)
    report["end_to_end"] = e2e
    report["windows"] = {"window_s": window_s, "rows": windows, "drift": drift(windows)}
    report["blocks"] = rows
    if peak:
        say("matmul peak")
        report["matmul_peak"] = matmul_peak(pipe.dtype, seconds=peak_seconds)
    if flops and getattr(pipe.model, "_quantized", "none") != "none":
        report["notes"] = ["generator FLOP/s not measured: the int8 layers' work is not counted by "
                           "torch's FLOP counter (run without runtime.quantize for it)"]
    elif flops:
        say("counting the generator's FLOPs")
        fl = count_block_flops(pipe)
        blocks = max(e2e["blocks"], 1)
        gen_s_per_block = e2e["stages"]["generator_s"] / blocks
        # the stream's generator FLOPs: the counted first blocks (sink and window filling), then
        # the steady block's count for every later one (prompt switches do not change the work)
        counted = fl["per_block"]
        total = sum(counted[:blocks]) + fl["steady_block_flops"] * max(blocks - len(counted), 0)
        achieved = total / e2e["stages"]["generator_s"] if e2e["stages"]["generator_s"] > 0 else 0.0
        report["generator"] = {**fl, "generator_s_per_block": round(gen_s_per_block, 5),
                               "stream_flops": total, "achieved_flops": achieved}
        if peak:
            report["generator"]["fraction_of_peak"] = round(achieved / report["matmul_peak"]["flops"], 4)
    if compare:
        say(f"compare: {compare_seconds:g} s of video, three engines")
        report["compare"] = compare_engines(pipe, compare_seconds, seed)
    return report


# --- presentation --------------------------------------------------------------------------------


def _g(flops: float) -> str:
    return f"{flops / 1e9:.1f} GFLOP/s"


def render(report: dict[str, Any], console) -> None:
    """Print a report as rich tables."""
    from rich import box
    from rich.table import Table

    s, m = report["settings"], report["machine"]
    console.print(f"[bold]longvid bench[/]: config {s['config']} ({s['parameters'] / 1e6:.2f} M parameters, "
                  f"{s['video']}, block {s['block_frames']} latent frames, {s['steps']} steps + commit, "
                  f"sink {s['sink_frames']} + window {s['window_frames']}, KV cache {s['kv_cache_mib']:.2f} MiB)")
    console.print(f"  {m['cpu']}, {m['cores']} cores ({', '.join(m['isa']) or 'no AVX2'}), torch {m['torch']} "
                  f"threads {s['threads']}, dtype {s['dtype']}, quantize {s['quantize']}, compile {s['compile']}, "
                  f"load average {', '.join(f'{x:.2f}' for x in m['load_average'] or [])}")
    e = report["end_to_end"]
    t = Table(title=f"end to end: {e['frames']} frames ({e['video_seconds']:.1f} s of video)",
              box=box.SIMPLE_HEAD)
    for col in ("stage", "seconds", "frames/s alone"):
        t.add_column(col, justify="right" if col != "stage" else "left")
    for name, secs in e["stages"].items():
        fps = e["stage_fps"][name[:-2]]
        t.add_row(name[:-2], f"{secs:.3f}", f"{fps:.1f}" if fps else "-")
    t.add_row("[bold]wall[/]", f"{e['wall_s']:.3f}", f"[bold]{e['fps']:.1f}[/] ({e['realtime']:.2f}x real time)")
    console.print(t)
    load = f"model load {report['load_s']:.2f} s; " if "load_s" in report else ""
    console.print(f"  {load}time to first frame after load {e['ttff_s']:.3f} s; {e['blocks']} blocks, "
                  f"{e['forwards']} forwards, {e['recaches']} recaches")
    w = report["windows"]
    t = Table(title=f"per {w['window_s']:g} s of video (first block left out: it is the time to first frame)",
              box=box.SIMPLE_HEAD)
    for col in ("until s", "blocks", "mean ms/block", "p95 ms/block", "RSS MiB", "max RSS MiB"):
        t.add_column(col, justify="right")
    for r in w["rows"]:
        t.add_row(f"{r['until_s']:g}", str(r["blocks"]), f"{r['mean_block_ms']:.1f}", f"{r['p95_block_ms']:.1f}",
                  f"{r['rss_mib']:.1f}", f"{r['max_rss_mib']:.1f}")
    console.print(t)
    if w["drift"]:
        console.print(f"  last window vs first: block time {100 * w['drift']['block_time']:+.1f}%, "
                      f"max RSS {100 * w['drift']['rss']:+.1f}%")
    if "matmul_peak" in report:
        p = report["matmul_peak"]
        console.print(f"matmul peak ({p['dtype']}, {p['threads']} threads): {_g(p['flops'])} at n={p['size']} "
                      f"(per size GFLOP/s: {p['per_size']})")
    if "generator" in report:
        g = report["generator"]
        frac = f" = {100 * g['fraction_of_peak']:.1f}% of the matmul peak" if "fraction_of_peak" in g else ""
        console.print(f"generator: {g['steady_block_flops'] / 1e9:.2f} GFLOP per steady block "
                      f"({g['steady_forwards']} forwards), {1000 * g['generator_s_per_block']:.1f} ms per block "
                      f"on average: {_g(g['achieved_flops'])}{frac}")
    for note in report.get("notes", []):
        console.print(f"note: {note}")
    if "compare" in report:
        c = report["compare"]
        t = Table(title=f"same work: {c['frames']} frames ({c['seconds']:g} s of video, {c['latent_frames']} "
                        "latent frames, one prompt)", box=box.SIMPLE_HEAD)
        for col in ("engine", "frames/s", "1st frame s", "gen s", "decode s", "forwards", "peak RSS MiB",
                    "longvid is faster", "1st frame sooner"):
            t.add_column(col, justify="left" if col == "engine" else "right")
        for name, r in c["engines"].items():
            ratio = c["ratios"].get(name)
            t.add_row(name, f"{r['fps']:.1f}", f"{r['ttff_s']:.3f}", f"{r['generator_s']:.2f}",
                      f"{r['decode_s']:.2f}", str(r["forwards"]),
                      f"{r['peak_rss_mib']:.0f}" if r.get("peak_rss_mib") else "-",
                      f"{ratio['throughput']:.2f}x" if ratio else "", f"{ratio['ttff']:.1f}x" if ratio else "")
        console.print(t)
        console.print("  longvid: the KV-cached engine; recompute: the same engine with no cache, recomputing "
                      "the sink + window context at every step; diffusers: SkyReelsV2DiffusionForcingPipeline "
                      "with the same transformer weights (it returns the video at the end). Same decoder, "
                      "no MP4; peak RSS is the whole process's.")
        for name, note in c["notes"].items():
            console.print(f"  {name}: {note}")
