"""The state of a stream between two engine steps, and its file format (for resuming a run).

`StreamState` is what the pipeline loop carries from step to step: the KV cache, the latents of
the frames in flight, the clean latents the cache may still need, the prompt context in effect,
how far the schedule has got, and how many frames have been handed out. Together with the model,
the timeline and the seed (noise is a pure function of (seed, frame, use)) it determines the
rest of the video, so a run restarted from a saved state gives the same frames as a run that was
never stopped.

File format: one safetensors file. Tensors are stored as tensors; everything else (counters,
the prompt key, the decoder's causal cache layout, run metadata) as JSON in the file's metadata,
with each tensor replaced by a reference. Nothing is pickled, so loading a state file can never
run code. Files are written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from longvid.cache import KVCache
from longvid.errors import ResumeError

STATE_FORMAT = "longvid-stream-state"
STATE_VERSION = 1
_TENSOR_REF = "__tensor__"
_META_KEY = "longvid_state"


@dataclass
class StreamState:
    """Everything the loop carries between engine steps (see the module docstring).

    seed: the run's seed. cache: the KV cache. step: engine steps of the schedule done.
    x: frames in flight -> current noisy latents (C, h, w). clean: frame -> clean latents
    (C, h, w) the cache may still need (recache) or that wait for their commit step.
    prompt_key: key of the text context in effect ((prompts...), blend weight), None before the
    first step. frames / blocks: pixel frames and latent blocks handed out.
    decoder: the streaming decoder's causal cache, filled in by `StreamPipeline.snapshot`.
    pending: finished latent blocks not yet decoded and handed out, as (block, latents
    (1, C, k, h, w), prompt index): with `runtime.overlap` the generator is one block ahead of
    the decoder (see `stages.py`); empty otherwise.
    """

    seed: int
    cache: KVCache
    step: int = 0
    x: dict[int, torch.Tensor] = field(default_factory=dict)
    clean: dict[int, torch.Tensor] = field(default_factory=dict)
    prompt_key: tuple | None = None
    frames: int = 0
    blocks: int = 0
    decoder: dict | None = None
    pending: list = field(default_factory=list)


# --- file format -------------------------------------------------------------------------------


def save_state(path: str | os.PathLike, state: StreamState, meta: dict[str, Any]) -> None:
    """Write `state` (a snapshot: see `StreamPipeline.snapshot`) and JSON-able `meta` to `path`
    atomically: a reader sees the old file or the new one, never a mix."""
    tree = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "meta": meta,
        "seed": state.seed,
        "step": state.step,
        "frames": state.frames,
        "blocks": state.blocks,
        "prompt_key": None if state.prompt_key is None else [list(state.prompt_key[0]), state.prompt_key[1]],
        "x": {str(f): t for f, t in state.x.items()},
        "clean": {str(f): t for f, t in state.clean.items()},
        "cache": state.cache.state_dict(),
        "decoder": state.decoder,
        "pending": [[int(b), lat, int(p)] for b, lat, p in state.pending],
    }
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(tree, tensors)
    from safetensors.torch import save

    blob = save(tensors, metadata={_META_KEY: json.dumps(skeleton)})
    _atomic_write_bytes(Path(path), blob)


def load_state(path: str | os.PathLike, cache: KVCache) -> tuple[StreamState, dict[str, Any]]:
    """Read a state file written by `save_state` into `cache` (an empty cache of the same
    layout) -> (state, meta). Raises ResumeError naming the file and the fix."""
    path = Path(path)
    fix = "start the run again without --resume"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ResumeError(f"resume state {path} not found; it is written beside the manifest "
                          f"at each checkpoint; {fix}") from None
    except OSError as error:
        raise ResumeError(f"cannot read resume state {path} ({error.strerror}); {fix}") from None
    try:
        from safetensors.torch import load

        tensors = load(data)  # checks the header and every tensor's extent
        header_len = int.from_bytes(data[:8], "little")
        raw = json.loads(data[8 : 8 + header_len])["__metadata__"][_META_KEY]
        tree = _unpack(json.loads(raw), tensors)
        if tree.get("format") != STATE_FORMAT:
            raise ValueError("not a longvid stream state")
        if tree.get("version") != STATE_VERSION:
            raise ValueError(f"state format version {tree.get('version')}, expected {STATE_VERSION}")
        cache.load_state_dict(tree["cache"])
        key = tree["prompt_key"]
        state = StreamState(
            seed=int(tree["seed"]), cache=cache, step=int(tree["step"]),
            x={int(f): t for f, t in tree["x"].items()},
            clean={int(f): t for f, t in tree["clean"].items()},
            prompt_key=None if key is None else (tuple(key[0]), float(key[1])),
            frames=int(tree["frames"]), blocks=int(tree["blocks"]), decoder=tree["decoder"],
            pending=[(int(b), lat, int(p)) for b, lat, p in tree.get("pending", [])],
        )
    except ResumeError:
        raise
    except Exception as error:  # noqa: BLE001 - any damage becomes one clear message
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ResumeError(f"resume state {path} is damaged or not a longvid state ({reason}); "
                          f"{fix}") from None
    return state, tree["meta"]


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (e.g. config, timeline, seed)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def weights_fingerprint(module: torch.nn.Module, samples: int = 4096) -> str:
    """A short hash of a model's parameters: names, shapes and an evenly strided sample of each
    one's values (cheap even for billions of parameters; different weights differ here). A model
    quantized by `quantize.py` carries the fingerprint of its float weights."""
    if getattr(module, "_weights_fingerprint", None) is not None:
        return module._weights_fingerprint
    h = hashlib.blake2b(digest_size=8)
    for name, p in module.state_dict().items():
        flat = p.detach().reshape(-1)
        stride = max(1, flat.numel() // samples)
        h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
        h.update(flat[::stride].float().cpu().numpy().tobytes())
    return h.hexdigest()


# --- helpers -----------------------------------------------------------------------------------


def _pack(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON skeleton of a tree of dicts / lists / scalars / tensors; tensors go to `tensors`."""
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().contiguous().clone()  # no shared storage
        return {_TENSOR_REF: name}
    if isinstance(value, dict):
        if _TENSOR_REF in value:
            raise ValueError(f"key {_TENSOR_REF!r} is reserved")
        return {str(k): _pack(v, tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_pack(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a stream state")


def _unpack(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TENSOR_REF}:
            return tensors[value[_TENSOR_REF]]
        return {k: _unpack(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v, tensors) for v in value]
    return value


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
