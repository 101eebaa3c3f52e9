"""Loading the public Wan2.1-1.3B checkpoints, from fake files in every published layout.

No downloads: `wan_fixtures` writes tiny checkpoints with the real names and dict structure.
Each layout must load with every tensor in the parameter the Wan naming says.
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
import wan_fixtures as fx  # noqa: E402

from longvid import keymap, loading  # noqa: E402
from longvid.api import apply_lora  # noqa: E402
from longvid.config import ModelConfig, load_config  # noqa: E402
from longvid.errors import WeightsError  # noqa: E402
from longvid.lora import LoraAdapter  # noqa: E402
from longvid.model import build_transformer  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    """(config, model, diffusers-named random state, a second state for the EMA copy, tiny VAE)."""
    cfg = tiny_config()
    model = build_transformer(cfg.model).eval()
    return cfg, model, fx.random_state(model, 1), fx.random_state(model, 2), fx.tiny_vae()


def fresh(cfg):
    torch.manual_seed(123)
    return build_transformer(cfg.model).eval()


def assert_landed(model, state):
    own = model.state_dict()
    assert set(own) == set(state)
    for k, v in state.items():
        assert torch.equal(own[k], v), k


# --- names ---------------------------------------------------------------------------------------

# reference.md's original state-dict keys, written out by hand for block 0 and the top level.
REFERENCE_BLOCK = {
    *(f"blocks.0.{a}.{p}.{w}" for a in ("self_attn", "cross_attn") for p in "qkvo" for w in ("weight", "bias")),
    *(f"blocks.0.{a}.{n}.weight" for a in ("self_attn", "cross_attn") for n in ("norm_q", "norm_k")),
    "blocks.0.norm3.weight", "blocks.0.norm3.bias",
    "blocks.0.ffn.0.weight", "blocks.0.ffn.0.bias", "blocks.0.ffn.2.weight", "blocks.0.ffn.2.bias",
    "blocks.0.modulation",
}
REFERENCE_TOP = {
    "patch_embedding.weight", "patch_embedding.bias",
    *(f"{m}.{i}.{w}" for m in ("text_embedding", "time_embedding") for i in (0, 2) for w in ("weight", "bias")),
    "time_projection.1.weight", "time_projection.1.bias",
    "head.head.weight", "head.head.bias", "head.modulation",
}


def test_original_names_are_reference_names(tiny):
    _, model, state, _, _ = tiny
    orig = set(keymap.state_to_original(state))
    assert {k for k in orig if k.startswith("blocks.0.")} == REFERENCE_BLOCK
    assert {k for k in orig if not k.startswith("blocks.")} == REFERENCE_TOP


def test_names_round_trip(tiny):
    _, model, state, _, _ = tiny
    for name in state:
        assert keymap.to_diffusers(keymap.to_original(name)) == name
    for name in keymap.state_to_original(state):
        assert keymap.to_original(keymap.to_diffusers(name)) == name
    for name, module in model.named_modules():  # module paths too (LoRA targets)
        if isinstance(module, torch.nn.Linear):
            assert keymap.to_diffusers(keymap.to_original(name)) == name


def test_mapping_agrees_with_diffusers_converter(tiny):
    _, _, state, _, _ = tiny
    orig = keymap.state_to_original(state)
    theirs = convert_wan_transformer_to_diffusers({k: k for k in orig})  # values: original names
    ours = {keymap.to_diffusers(k): k for k in orig}
    assert theirs == ours


def test_wrapper_prefixes_are_stripped():
    for raw in ("model.blocks.1.self_attn.q.weight", "_fsdp_wrapped_module.model.blocks.1.self_attn.q.weight",
                "model.blocks.1._fsdp_wrapped_module.self_attn.q.weight", "model.diffusion_model.blocks.1.self_attn.q.weight",
                "_orig_mod.blocks.1.self_attn.q.weight"):
        assert keymap.strip_wrappers(raw) == "blocks.1.self_attn.q.weight"


# --- every layout ---------------------------------------------------------------------------------


def _write(layout: str, root: Path, tiny) -> tuple[Path, str | None, str]:
    """Write one layout; returns (path to load, checkpoint_key, which state should land)."""
    cfg, model, state, ema, vae = tiny
    if layout == "original-dir":
        return fx.write_original_base(root, model, state, vae), None, "main"
    if layout == "diffusers-dir":
        return fx.write_diffusers_base(root, model, state, vae), None, "main"
    if layout == "diffusers-transformer-dir":
        return fx.write_diffusers_base(root, model, state, vae) / "transformer", None, "main"
    path = root / "ckpt.pt"
    if layout == "pt-auto-ema":
        torch.save(fx.generator_checkpoint(state, ema), path)
        return path, None, "ema"
    if layout == "pt-generator":
        torch.save(fx.generator_checkpoint(state, ema), path)
        return path, "generator", "main"
    if layout == "pt-model":
        torch.save({"model": keymap.state_to_original(state), "step": 3000}, path)
        return path, None, "main"
    if layout == "pt-raw-prefixed":
        torch.save({f"model.{k}": v for k, v in keymap.state_to_original(state).items()}, path)
        return path, None, "main"
    if layout == "safetensors-original":
        path = root / "w.safetensors"
        save_file({k: v.contiguous() for k, v in keymap.state_to_original(state).items()}, str(path))
        return path, None, "main"
    if layout == "safetensors-diffusers":
        path = root / "w.safetensors"
        save_file(state, str(path))
        return path, None, "main"
    raise AssertionError(layout)


LAYOUTS = ["original-dir", "diffusers-dir", "diffusers-transformer-dir", "pt-auto-ema", "pt-generator",
           "pt-model", "pt-raw-prefixed", "safetensors-original", "safetensors-diffusers"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_loads_every_tensor(layout, tiny, tmp_path):
    cfg, _, state, ema, _ = tiny
    path, key, which = _write(layout, tmp_path, tiny)
    model = fresh(cfg)
    loading.load_transformer_weights(model, path, key)
    assert_landed(model, ema if which == "ema" else state)


@pytest.mark.parametrize("layout", ["original-dir", "diffusers-dir"])
def test_wan_vae_loads_from_base_dir(layout, tiny, tmp_path):
    _, _, _, _, vae = tiny
    path, _, _ = _write(layout, tmp_path, tiny)
    loaded = loading.load_wan_vae(path, vae_config=fx.TINY_VAE)
    assert_landed(loaded, vae.state_dict())


def test_bf16_load_casts_per_parameter(tiny, tmp_path):
    cfg, _, state, _, _ = tiny
    path, key, _ = _write("pt-generator", tmp_path, tiny)
    model = build_transformer(cfg.model, dtype=torch.bfloat16)
    loading.load_transformer_weights(model, path, key)
    own = model.state_dict()
    assert own["blocks.0.attn1.to_q.weight"].dtype == torch.bfloat16
    assert own["blocks.0.scale_shift_table"].dtype == torch.float32  # kept in fp32, as Wan runs it
    assert torch.equal(own["blocks.0.attn1.to_q.weight"], state["blocks.0.attn1.to_q.weight"].bfloat16())


# --- LoRA ------------------------------------------------------------------------------------------


def _with_lora(cfg, tmp_path, merge: bool, tiny):
    _, model0, state, _, _ = tiny
    lora_path = tmp_path / "lora.pt"
    if not lora_path.exists():
        torch.save(fx.lora_checkpoint(model0, rank=4), lora_path)
    model = fresh(cfg)
    model.load_state_dict(state)
    c = dataclasses.replace(cfg, weights=dataclasses.replace(cfg.weights, lora=str(lora_path), lora_alpha=8.0,
                                                             lora_merge=merge))
    n = apply_lora(model, c)
    return model, n


def _forward(model):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 3, 4, 4, generator=gen)
    with torch.no_grad():
        return model(x, torch.tensor([900.0, 500.0, 100.0]), model.text_context(torch.randn(1, 6, 16, generator=gen)))


def test_lora_merged_equals_unmerged(tiny, tmp_path):
    cfg, _, state, _, _ = tiny
    merged, n_merged = _with_lora(cfg, tmp_path, True, tiny)
    unmerged, n_unmerged = _with_lora(cfg, tmp_path, False, tiny)
    base = fresh(cfg)
    base.load_state_dict(state)
    # every Linear inside the blocks: self-attn q/k/v/o, cross-attn q/k/v/o, ffn 0/2
    assert n_merged == n_unmerged == cfg.model.num_layers * 10
    assert sum(isinstance(m, LoraAdapter) for m in unmerged.modules()) == n_unmerged
    out_merged, out_unmerged, out_base = _forward(merged), _forward(unmerged), _forward(base)
    assert torch.allclose(out_merged, out_unmerged, atol=1e-5)
    assert not torch.allclose(out_merged, out_base, atol=1e-3)  # the LoRA does something
    # the merge is W + (alpha / r) B A on the layer the original name says
    lora = torch.load(tmp_path / "lora.pt", weights_only=True)["generator_lora"]
    a = lora["base_model.model.blocks.1.cross_attn.o.lora_A.weight"]
    b = lora["base_model.model.blocks.1.cross_attn.o.lora_B.weight"]
    expected = state["blocks.1.attn2.to_out.0.weight"] + 2.0 * b @ a
    assert torch.allclose(merged.blocks[1].attn2.to_out[0].weight, expected, atol=1e-6)


def test_lora_peft_key_forms_read_alike(tiny, tmp_path):
    """lora.pt as LongLive saves it (get_peft_model_state_dict: `...q.lora_A.weight`, next to the
    critic's LoRA and the step) and with peft's adapter name kept (`...q.lora_A.default.weight`)
    give the same pairs: the generator's, never the critic's."""
    _, model, _, _, _ = tiny
    torch.save(fx.lora_checkpoint(model, rank=2), tmp_path / "saved.pt")
    torch.save(fx.lora_checkpoint(model, rank=2, adapter=".default"), tmp_path / "raw.pt")
    saved, raw = loading.read_lora(tmp_path / "saved.pt"), loading.read_lora(tmp_path / "raw.pt")
    assert set(saved) == set(raw) and len(saved) == len(fx.lora_targets(model))
    ckpt = fx.lora_checkpoint(model, rank=2)
    a = ckpt["generator_lora"]["base_model.model.blocks.0.ffn.2.lora_A.weight"]
    assert torch.equal(saved["blocks.0.ffn.net.2"][0], a) and torch.equal(raw["blocks.0.ffn.net.2"][0], a)
    assert not torch.equal(a, ckpt["critic_lora"]["base_model.model.blocks.0.ffn.2.lora_A.weight"])


def test_lora_missing_partner_is_an_error(tiny, tmp_path):
    _, model, _, _, _ = tiny
    ckpt = fx.lora_checkpoint(model, rank=2)
    del ckpt["generator_lora"]["base_model.model.blocks.0.self_attn.q.lora_B.weight"]
    torch.save(ckpt, tmp_path / "lora.pt")
    with pytest.raises(WeightsError, match="blocks.0.self_attn.q has lora_A but not its partner"):
        loading.read_lora(tmp_path / "lora.pt")


# --- the full 1.3B model ---------------------------------------------------------------------------


def wan_1_3b_parameters(dim=1536, ffn=8960, layers=30, text_dim=4096, freq=256, c_in=16, c_out=16, patch=4) -> int:
    """Parameter count of Wan2.1-T2V-1.3B from reference.md's layout, by hand."""
    linear = lambda i, o: i * o + o  # noqa: E731
    block = (8 * linear(dim, dim)      # self- and cross-attn q, k, v, o
             + 4 * dim                 # norm_q, norm_k of both (RMSNorm over the full dim)
             + 2 * dim                 # norm3 (affine LayerNorm)
             + linear(dim, ffn) + linear(ffn, dim)
             + 6 * dim)                # modulation [1, 6, dim]
    top = (c_in * patch * dim + dim    # patch_embedding Conv3d (1, 2, 2)
           + linear(text_dim, dim) + linear(dim, dim)
           + linear(freq, dim) + linear(dim, dim)
           + linear(dim, 6 * dim)
           + linear(dim, c_out * patch) + 2 * dim)
    return layers * block + top


def test_full_1_3b_builds_on_meta_with_the_published_count():
    with torch.device("meta"):
        model = build_transformer(ModelConfig(), device="meta")
    count = sum(p.numel() for p in model.parameters())
    assert count == wan_1_3b_parameters() == 1_418_996_800  # "1.3B": 1.42e9 parameters
    assert all(p.device.type == "meta" for p in model.parameters())
    # and the names are the ones the original checkpoints map to
    orig = {keymap.to_original(k) for k in model.state_dict()}
    assert None not in orig and "blocks.29.ffn.2.weight" in orig and "head.modulation" in orig


# --- errors --------------------------------------------------------------------------------------


def test_missing_file(tmp_path, tiny):
    with pytest.raises(WeightsError, match=r"weight file not found: .*nope\.pt"):
        loading.load_transformer_weights(fresh(tiny[0]), tmp_path / "nope.pt")


def test_missing_and_unexpected_keys_are_listed(tiny, tmp_path):
    cfg, _, state, _, _ = tiny
    orig = keymap.state_to_original(state)
    del orig["blocks.1.ffn.2.bias"]
    orig["blocks.1.self_attn.extra.weight"] = torch.zeros(3)
    torch.save({"generator": orig}, tmp_path / "g.pt")
    with pytest.raises(WeightsError) as err:
        loading.load_transformer_weights(fresh(cfg), tmp_path / "g.pt")
    assert "names that are not Wan2.1 transformer parameters: blocks.1.self_attn.extra.weight" in str(err.value)
    del orig["blocks.1.self_attn.extra.weight"]
    torch.save({"generator": orig}, tmp_path / "g.pt")
    with pytest.raises(WeightsError, match=r"g\.pt\[generator\] does not match the model \(missing keys: blocks\.1\.ffn\.net\.2\.bias\)"):
        loading.load_transformer_weights(fresh(cfg), tmp_path / "g.pt")
    state2 = dict(state)
    state2["blocks.0.attn1.bogus"] = torch.zeros(1)
    save_file(state2, str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match=r"unexpected keys: blocks\.0\.attn1\.bogus"):
        loading.load_transformer_weights(fresh(cfg), tmp_path / "w.safetensors")


def test_wrong_shape(tiny, tmp_path):
    cfg, _, state, _, _ = tiny
    bigger = dataclasses.replace(cfg.model, ffn_dim=64)
    torch.save({"generator": keymap.state_to_original(state)}, tmp_path / "g.pt")
    with pytest.raises(WeightsError, match=r"wrong shapes: blocks\.0\.ffn\.net\.0\.proj\.weight \(48, 24\) != \(64, 24\)"):
        loading.load_transformer_weights(build_transformer(bigger), tmp_path / "g.pt")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file(tiny, tmp_path, suffix):
    cfg, _, state, _, _ = tiny
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save({"generator": keymap.state_to_original(state)}, path)
    else:
        save_file(state, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=rf"cannot read weight file .*w\{suffix}: .*truncated"):
        loading.load_transformer_weights(fresh(cfg), path)


def test_empty_file(tmp_path, tiny):
    (tmp_path / "w.pt").write_bytes(b"")
    with pytest.raises(WeightsError, match="is empty"):
        loading.load_transformer_weights(fresh(tiny[0]), tmp_path / "w.pt")


class _RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > PWNED",))


def test_pickle_that_runs_code_is_refused(tmp_path, tiny, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"generator": {"x": torch.zeros(1)}, "payload": _RunsCode()}, path)
    with pytest.raises(WeightsError, match=r"refusing to open .*evil\.pt: the pickle asks to run code \(`(posix|os|nt)\.system`\)"):
        loading.load_transformer_weights(fresh(tiny[0]), path)
    assert not (tmp_path / "PWNED").exists()
    raw = tmp_path / "raw.pth"  # a plain (non-zip) pickle too
    raw.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(WeightsError, match="refusing to open"):
        loading.read_state_dict(raw)
    assert not (tmp_path / "PWNED").exists()


def test_wrong_checkpoint_key(tiny, tmp_path):
    cfg, _, state, ema, _ = tiny
    torch.save(fx.generator_checkpoint(state, ema), tmp_path / "g.pt")
    with pytest.raises(WeightsError, match=r"has no entry 'model' \(it holds: generator, generator_ema\)"):
        loading.load_transformer_weights(fresh(cfg), tmp_path / "g.pt", "model")


def test_base_dir_without_transformer(tmp_path, tiny):
    with pytest.raises(WeightsError, match="holds no Wan transformer"):
        loading.load_transformer_weights(fresh(tiny[0]), tmp_path)
    with pytest.raises(WeightsError, match="holds no Wan VAE"):
        loading.load_wan_vae(tmp_path)


# --- the published configs -----------------------------------------------------------------------

# name: (schedule kind, block frames, timesteps, shift, sink, window, ema alpha, rope, checkpoint entry)
# Sources per value: the YAML comments of each config (the released configs and inference code).
PUBLISHED = {
    # self_forcing_dmd.yaml: [1000, 750, 500, 250] warped by shift 5, 3-frame blocks; no local
    # attention: a 32760-token (21-frame) cache = 18 committed + 3 in the block; --use_ema
    "self-forcing": ("block", 3, [1000, 750, 500, 250], 5.0, 0, 18, None, "absolute", "generator_ema"),
    # wan_causal_dmd.yaml: [1000, 757, 522, (0)] already warped (shift 8, warp off) -> no second
    # warp; 32760-token cache; autoregressive_inference.py loads "generator"
    "causvid": ("block", 3, [1000, 757, 522], 1.0, 0, 18, None, "absolute", "generator"),
    # longlive_inference.yaml: local_attn_size 12 = 3 sink + 6 window + 3-frame block; shift 5;
    # use_ema false
    "longlive-1.3b": ("block", 3, [1000, 750, 500, 250], 5.0, 3, 6, None, "absolute", "generator"),
    # rolling_forcing_dmd.yaml + causal_model.py: 5 blocks x 3 in flight, [1000, 800, 600, 400, 200]
    # shift 5; 21-frame span = 3 sink (first block, re-RoPEd) + 3 committed + 15 in flight; --use_ema
    "rolling-forcing": ("rolling", 3, [1000, 800, 600, 400, 200], 5.0, 3, 3, None, "compact", "generator_ema"),
    # reward_forcing.yaml + causal_model.py: local_attn_size 9 = 3 sink + 3 window + 3-frame block,
    # EMA sink a = 0.999 (compression_alpha), K without RoPE; --use_ema
    "reward-forcing": ("block", 3, [1000, 750, 500, 250], 5.0, 3, 3, 0.999, "compact", "generator_ema"),
}

# The attention span of one block's forward in the released code, in latent frames (sink + committed
# window + the frames being denoised): local_attn_size, or the 21-frame / 32760-token cap.
ATTENTION_SPAN = {"self-forcing": 21, "causvid": 21, "longlive-1.3b": 12, "rolling-forcing": 21, "reward-forcing": 9}


@pytest.mark.parametrize("name", PUBLISHED)
def test_config_matches_the_paper(name):
    c = load_config(name)
    kind, block, steps, shift, sink, window, alpha, rope, entry = PUBLISHED[name]
    s = c.schedule
    assert (s.kind, s.block_frames, s.timesteps, s.shift) == (kind, block, steps, shift)
    assert (c.cache.sink_frames, c.cache.window_frames, c.cache.ema_alpha, c.cache.rope) == (sink, window, alpha, rope)
    assert c.weights.checkpoint_key == entry
    in_flight = block * (len(steps) if kind == "rolling" else 1)
    assert sink + window + in_flight == ATTENTION_SPAN[name]
    assert c.model == ModelConfig()  # Wan2.1-T2V-1.3B
    assert (c.video.height, c.video.width, c.video.fps) == (480, 832, 16)
    assert (c.text.kind, c.text.max_length, c.vae.kind) == ("umt5", 512, "wan")
    assert c.runtime.dtype == "bfloat16"


def test_longlive_lora_and_attention_span():
    c = load_config("longlive-1.3b")
    assert c.weights.lora and c.weights.lora_alpha == 256 and c.weights.lora_merge


def test_warped_steps_match_reference():
    from longvid.schedule import shift_timesteps

    c = load_config("self-forcing")
    assert shift_timesteps(c.schedule.timesteps, c.schedule.shift) == pytest.approx([1000, 937.5, 833.333, 625.0], abs=1e-3)


# --- the CLI: generate --weights DIR, convert ---------------------------------------------------


def _public_layout(tmp_path, tiny) -> tuple[Path, Path]:
    """A --weights DIR as docs/models.md lays it out (LongLive: base .pt + lora.pt, diffusers VAE),
    and a config naming it the way configs/longlive-1.3b.yaml does, at tiny sizes."""
    import yaml

    from longvid.config import config_to_dict

    cfg, model, state, ema, vae = tiny
    root = tmp_path / "models"
    (root / "LongLive-1.3B" / "models").mkdir(parents=True)
    torch.save(fx.generator_checkpoint(state, ema), root / "LongLive-1.3B" / "models" / "longlive_base.pt")
    torch.save(fx.lora_checkpoint(model, rank=4), root / "LongLive-1.3B" / "models" / "lora.pt")
    fx.write_diffusers_base(root, model, state, vae)
    c = tiny_config(vae={"kind": "wan"}, runtime={"threads": 1},
                    weights={"transformer": "LongLive-1.3B/models/longlive_base.pt", "checkpoint_key": "generator",
                             "lora": "LongLive-1.3B/models/lora.pt", "lora_alpha": 4.0,
                             "vae": "Wan2.1-T2V-1.3B-Diffusers"})
    path = tmp_path / "tiny-longlive.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(c)))
    return root, path


def test_cli_generate_with_weights_dir_and_convert(tiny, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.app import app
    from longvid.api import load_pipeline

    monkeypatch.setenv("CI", "true")
    root, config = _public_layout(tmp_path, tiny)
    runner = CliRunner()
    out = tmp_path / "v.mp4"
    result = runner.invoke(app, ["generate", "a ball", "--seconds", "0.5", "--config", str(config),
                                 "--weights", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0

    # without --weights the relative paths point into the repo: a clear error naming the file
    result = runner.invoke(app, ["generate", "a ball", "--config", str(config), "--out", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2 and "longlive_base.pt" in result.stderr
    result = runner.invoke(app, ["generate", "a ball", "--config", str(config), "--weights", str(tmp_path / "nope"),
                                 "--out", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2 and "no such directory" in result.stderr

    # convert: one safetensors with the LoRA merged, equal to loading base + LoRA
    converted = tmp_path / "longlive.safetensors"
    result = runner.invoke(app, ["convert", "--config", str(config), "--weights", str(root), "--out", str(converted)])
    assert result.exit_code == 0, result.output
    assert "merged" in result.output
    expected = load_pipeline(_with_root(load_config(str(config)), root)).model.state_dict()
    state, meta = loading.read_state_dict(converted)
    assert "longvid_converted_from" in meta
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], expected[k]) for k in state)
    result = runner.invoke(app, ["convert", "--config", str(config), "--weights", str(root), "--out", str(converted)])
    assert result.exit_code == 2 and "--overwrite" in result.stderr


def _with_root(c, root):
    c.weights.root = str(root)
    return c
