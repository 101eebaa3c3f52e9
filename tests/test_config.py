"""Typed configs: defaults, YAML loading, overrides, type and semantic errors, every shipped config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from longvid.config import (
    REPO_ROOT, Config, ModelConfig, apply_override, available_configs, config_from_dict,
    config_to_dict, load_config, resolve_path, validate,
)
from longvid.errors import ConfigError, LongvidError


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config directory that `load_config(NAME)` searches."""
    directory = tmp_path / "configs"
    directory.mkdir()
    monkeypatch.setenv("LONGVID_CONFIG_DIR", str(directory))
    return directory


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def error_of(data: dict, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"name": "t", **data}, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults and loading ----------------------------------------------------------------------


def test_defaults_are_the_wan_1_3b_self_forcing_setting() -> None:
    config = Config(name="x")
    assert config.model.dim == config.model.num_heads * config.model.head_dim == 1536
    assert config.model.patch_size == (1, 2, 2)
    assert (config.video.height, config.video.width, config.video.fps) == (480, 832, 16)
    assert config.schedule.timesteps == [1000, 750, 500, 250]
    assert config.cache.ema_alpha is None and config.switch.mode == "recache"
    assert config.text.kind == "umt5" and config.vae.kind == "wan"
    validate(config)


def test_load_by_name_and_by_path(config_dir: Path) -> None:
    path = write(config_dir / "tiny.yaml", "description: tiny\nvideo: {height: 64, width: 64}\n")
    by_name = load_config("tiny")
    by_path = load_config(str(path))
    assert by_name == by_path
    assert by_name.name == "tiny" and by_name.video.height == 64
    assert by_name.video.fps == 16  # untouched keys keep the defaults
    assert available_configs() == ["tiny"]


def test_precedence_defaults_yaml_overrides(config_dir: Path) -> None:
    write(config_dir / "p.yaml", "schedule: {kind: lagged, shift: 3.0}\ncache: {sink_frames: 1}\n")
    config = load_config("p", ["schedule.kind=rolling", "cache.window_frames=9"])
    assert config.schedule.kind == "rolling"  # override beats YAML
    assert config.schedule.shift == 3.0  # YAML beats default
    assert config.cache.sink_frames == 1 and config.cache.window_frames == 9
    assert config.schedule.block_frames == 3  # default


def test_name_key_in_yaml_wins_over_file_stem(tmp_path: Path) -> None:
    assert load_config(str(write(tmp_path / "a.yaml", "name: other\n"))).name == "other"


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path / "empty.yaml", "")))
    assert config == Config(name="empty")


def test_exponent_without_dot_is_a_float(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path / "e.yaml", "model: {eps: 1e-5}\n")))
    assert config.model.eps == pytest.approx(1e-5)


@pytest.mark.parametrize(
    ("override", "get", "expected"),
    [
        ("schedule.kind=rolling", lambda c: c.schedule.kind, "rolling"),
        ("cache.ema_alpha=0.999", lambda c: c.cache.ema_alpha, 0.999),
        ("cache.ema_alpha=null", lambda c: c.cache.ema_alpha, None),
        ("schedule.timesteps=[1000,800,600]", lambda c: c.schedule.timesteps, [1000.0, 800.0, 600.0]),
        ("schedule.shift=3", lambda c: c.schedule.shift, 3.0),  # int accepted for float
        ("model.patch_size=[1, 4, 4]", lambda c: c.model.patch_size, (1, 4, 4)),
        ("runtime.compile=true", lambda c: c.runtime.compile, True),
        ("runtime.threads=2", lambda c: c.runtime.threads, 2),
        ("weights.transformer=ckpt/model.safetensors", lambda c: c.weights.transformer, "ckpt/model.safetensors"),
        ("description=[unclosed", lambda c: c.description, "[unclosed"),  # not YAML -> plain text
        ("cache={sink_frames: 1, window_frames: 12}", lambda c: (c.cache.sink_frames, c.cache.window_frames, c.cache.rope), (1, 12, "absolute")),
    ],
)
def test_overrides(override: str, get, expected) -> None:
    config = config_from_dict({"name": "t"}, [override])
    assert get(config) == expected
    assert type(get(config)) is type(expected)


def test_override_keeps_yaml_siblings() -> None:
    config = config_from_dict({"name": "t", "cache": {"sink_frames": 2, "rope": "compact"}}, ["cache={sink_frames: 1}"])
    assert (config.cache.sink_frames, config.cache.rope) == (1, "compact")


# --- type errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"video": {"height": "480"}}, ["video.height", "an integer", "'480'"]),
        ({"video": {"height": True}}, ["video.height", "an integer", "True"]),  # bool is not an int
        ({"video": {"fps": 16.5}}, ["video.fps", "an integer"]),
        ({"schedule": {"shift": True}}, ["schedule.shift", "a number"]),
        ({"schedule": {"shift": "5"}}, ["schedule.shift", "a number"]),
        ({"schedule": {"shift": float("nan")}}, ["schedule.shift", "finite"]),
        ({"schedule": {"kind": "rollin"}}, ["schedule.kind", "'block', 'lagged', 'rolling'", "did you mean 'rolling'"]),
        ({"runtime": {"dtype": "fp16"}}, ["runtime.dtype", "'float32', 'bfloat16', 'float16'"]),
        ({"schedule": {"timesteps": [1000, "x"]}}, ["schedule.timesteps[1]", "a number"]),
        ({"schedule": {"timesteps": 1000}}, ["schedule.timesteps", "a list"]),
        ({"model": {"patch_size": [1, 2]}}, ["model.patch_size", "3 values"]),
        ({"model": {"patch_size": [1, 2, 2.0]}}, ["model.patch_size[2]", "an integer"]),
        ({"runtime": {"compile": 1}}, ["runtime.compile", "true or false"]),
        ({"runtime": {"threads": "4"}}, ["runtime.threads", "an integer or null"]),
        ({"weights": {"vae": 3}}, ["weights.vae", "a string or null"]),
        ({"description": 5}, ["description", "a string"]),
        ({"cache": 3}, ["'cache'", "mapping"]),
    ],
)
def test_type_errors_name_key_expected_type_and_value(data: dict, fragments: list[str]) -> None:
    message = error_of(data)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("video.height=abc", ["--set video.height=abc", "video.height", "an integer", "'abc'"]),
        ("cache.ema_alpha=yes", ["cache.ema_alpha", "a number or null", "True"]),
        ("schedule.kind=zigzag", ["schedule.kind", "'block', 'lagged', 'rolling'"]),
        ("schedule.knd=block", ["unknown key 'schedule.knd'", "did you mean 'schedule.kind'"]),
        ("sink_frames=2", ["unknown key 'sink_frames'", "did you mean 'cache.sink_frames'"]),
        ("cache.sink_frames.x=1", ["'cache.sink_frames' is a value"]),
        ("cache=3", ["'cache' is a section"]),
        ("description=a: b", ["description", "a string", "{'a': 'b'}"]),  # YAML parses a mapping
        ("nothing", ["must look like key.sub=value"]),
        ("=3", ["must look like key.sub=value"]),
    ],
)
def test_override_errors(override: str, fragments: list[str]) -> None:
    message = error_of({}, (override,))
    for fragment in fragments:
        assert fragment in message


def test_override_type_error_beats_valid_yaml(config_dir: Path) -> None:
    write(config_dir / "ok.yaml", "video: {height: 64}\n")
    with pytest.raises(ConfigError, match="video.height"):
        load_config("ok", ["video.height=tall"])


# --- unknown keys, files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"cach": {}}, ["unknown key 'cach'", "did you mean 'cache'"]),
        ({"cache": {"sink_frame": 2}}, ["unknown key 'cache.sink_frame'", "did you mean 'cache.sink_frames'", "window_frames"]),
        ({"sink_frames": 2}, ["unknown key 'sink_frames'", "did you mean 'cache.sink_frames'"]),
        ({"schedule": {"timestep": [1]}}, ["did you mean 'schedule.timesteps'"]),
        ({"zzzz": 1}, ["unknown key 'zzzz'", "valid keys: name"]),
    ],
)
def test_unknown_key_suggests_closest(data: dict, fragments: list[str]) -> None:
    message = error_of(data)
    for fragment in fragments:
        assert fragment in message


def test_missing_config_name_lists_available(config_dir: Path) -> None:
    write(config_dir / "tiny.yaml", "")
    write(config_dir / "wan_1_3b.yaml", "")
    with pytest.raises(ConfigError) as info:
        load_config("tinny")
    message = str(info.value)
    assert "unknown config 'tinny'" in message and "did you mean 'tiny'" in message
    assert "tiny, wan_1_3b" in message


def test_missing_config_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("video:\n  height: 64\n  width: [1, 2\n", ["bad.yaml:", "malformed YAML", "line"]),
        ("video: {height: 64}\nvideo: {width: 64}\n", ["bad.yaml:2", "duplicate key 'video'"]),
        ("- a\n- b\n", ["top level", "mapping"]),
        ("description: 2024-13-45\n", ["bad.yaml", "malformed YAML"]),
    ],
)
def test_bad_yaml_names_file_and_line(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(write(tmp_path / "bad.yaml", text)))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_malformed_yaml_reports_line_number(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "name: x\nvideo:\n  height: 64\n width: 32\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:4"):
        load_config(str(path))


def test_non_utf8_config(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes("description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(str(path))


# --- semantic checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"model": {"num_heads": 0}}, "model.num_heads=0 must be > 0"),
        ({"model": {"patch_size": [1, 0, 2]}}, "model.patch_size[1]=0 must be > 0"),
        ({"video": {"fps": 0}}, "video.fps=0 must be > 0"),
        ({"vae": {"temporal_factor": -1}}, "vae.temporal_factor=-1 must be > 0"),
        ({"video": {"height": 500}}, "video.height=500 must be divisible by 16"),
        ({"video": {"width": 830}}, "nearest valid: 832 (or 816)"),
        ({"video": {"height": 8}}, "nearest valid: 16"),
        ({"vae": {"spatial_factor": 16}, "video": {"height": 464}}, "must be divisible by 32"),
        ({"schedule": {"block_frames": 0}}, "schedule.block_frames=0 must be >= 1"),
        ({"schedule": {"timesteps": [750, 1000]}}, "strictly decreasing"),
        ({"schedule": {"timesteps": [1000, 1000]}}, "strictly decreasing"),
        ({"schedule": {"timesteps": [1200, 500]}}, "must lie in (0, 1000]"),
        ({"schedule": {"timesteps": [500, 0]}}, "must lie in (0, 1000]"),
        ({"schedule": {"timesteps": []}}, "schedule.timesteps is empty"),
        ({"schedule": {"shift": 0}}, "schedule.shift=0.0 must be > 0"),
        ({"schedule": {"ar_step": 0}}, "schedule.ar_step=0 must be >= 1"),
        ({"cache": {"sink_frames": -1}}, "cache.sink_frames=-1 must be >= 0"),
        ({"cache": {"window_frames": 2}}, "cache.window_frames=2 must be >= schedule.block_frames=3"),
        ({"cache": {"ema_alpha": 1.0}}, "cache.ema_alpha=1.0 must be in [0, 1)"),
        ({"cache": {"ema_alpha": -0.1}}, "cache.ema_alpha=-0.1 must be in [0, 1)"),
        ({"schedule": {"guidance": -1}}, "schedule.guidance=-1.0 must be >= 0"),
        ({"switch": {"blend_blocks": -1}}, "switch.blend_blocks=-1 must be >= 0"),
        ({"runtime": {"threads": 0}}, "runtime.threads=0 must be >= 1"),
    ],
)
def test_semantic_errors(data: dict, fragment: str) -> None:
    message = error_of(data)
    assert fragment in message
    assert "config 't'" in message


def test_semantic_errors_are_all_reported_at_once() -> None:
    message = error_of({"video": {"height": 500, "width": 830}, "schedule": {"shift": -1.0}})
    assert "video.height" in message and "video.width" in message and "schedule.shift" in message


def test_ema_alpha_zero_is_valid() -> None:
    assert config_from_dict({"name": "t", "cache": {"ema_alpha": 0}}).cache.ema_alpha == 0.0


def test_all_errors_are_longvid_errors() -> None:
    assert issubclass(ConfigError, LongvidError)


# --- dict round trip, paths, shipped configs ---------------------------------------------------


def test_config_to_dict_round_trips_through_load(tmp_path: Path) -> None:
    config = config_from_dict(
        {"name": "rt", "description": "round trip", "model": {"patch_size": [1, 4, 4], "eps": 1e-5}},
        ["cache.ema_alpha=0.99", "schedule.timesteps=[1000, 500]", "weights.vae=w/vae.pth"],
    )
    data = config_to_dict(config)
    assert data["model"]["patch_size"] == [1, 4, 4]  # plain lists for YAML / JSON
    path = write(tmp_path / "dumped.yaml", yaml.safe_dump(data))
    assert load_config(str(path)) == config


def test_resolve_path_is_relative_to_repo_root() -> None:
    assert resolve_path("checkpoints/model.pt") == REPO_ROOT / "checkpoints" / "model.pt"
    assert resolve_path("/abs/model.pt") == Path("/abs/model.pt")
    assert not resolve_path("surely/not/there.pt").exists()  # no existence check, no error


def test_model_dim_follows_heads() -> None:
    assert ModelConfig(num_heads=2, head_dim=8).dim == 16


def test_apply_override_in_place() -> None:
    config = Config(name="x")
    apply_override(config, "video.fps=8")
    assert config.video.fps == 8


SYNTHETIC = "synthetic"
SHIPPED = sorted((REPO_ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("source", [SYNTHETIC, *SHIPPED], ids=lambda p: p if p == SYNTHETIC else p.name)
def test_every_config_loads_and_validates(source, tmp_path: Path) -> None:
    if source == SYNTHETIC:
        source = write(
            tmp_path / "synthetic.yaml",
            "description: two-layer model on a 32x32 video\n"
            "model: {num_heads: 2, head_dim: 8, num_layers: 2, ffn_dim: 32, text_dim: 16}\n"
            "text: {kind: hash, max_length: 8}\nvae: {kind: preview}\n"
            "video: {height: 32, width: 32, fps: 8}\n"
            "schedule: {kind: rolling, timesteps: [1000, 500]}\n",
        )
    config = load_config(str(source))
    validate(config)
    assert config.name
    assert load_config(str(source)) == config


# --- property: any YAML either loads or raises ConfigError ------------------------------------

KEYS = st.sampled_from(["model", "cache", "schedule", "video", "name", "kind", "height", "timesteps", "ema_alpha", "patch_size"]) | st.text(max_size=5)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.sampled_from(["block", "auto"])
STRUCTURES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(KEYS, c, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(data=STRUCTURES, text=st.text(max_size=120), raw=st.booleans(), overrides=st.lists(st.text(max_size=20), max_size=2))
def test_random_yaml_loads_or_raises_config_error(tmp_path_factory, data, text: str, raw: bool, overrides: list[str]) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text if raw else yaml.safe_dump(data), encoding="utf-8")
    try:
        load_config(str(path), overrides)
    except ConfigError as error:
        assert "\n" not in str(error)
