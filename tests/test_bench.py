"""`longvid bench` and longvid/bench.py on the tiny config: it runs and reports; no speed is asserted."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import tiny_config, tiny_pipeline
from typer.testing import CliRunner

from cli.app import app
from longvid import bench
from longvid.config import config_to_dict

runner = CliRunner()


def test_recompute_equals_cached_while_nothing_leaves_the_window():
    pipe = tiny_pipeline(tiny_config(cache=dict(sink_frames=0, window_frames=60)))
    tl = bench.bench_timeline(pipe.config, 3.0, switch_every=None)
    cached = torch.cat([lat for _, lat, _ in pipe.latents(tl, 0)], dim=2)
    recomputed = torch.cat([lat for _, lat, _ in bench.recompute_latents(pipe, tl, 0)], dim=2)
    assert cached.shape == recomputed.shape
    assert torch.allclose(cached, recomputed, atol=1e-4), (cached - recomputed).abs().max()


def test_recompute_runs_past_the_window_with_sink_and_switches():
    pipe = tiny_pipeline(tiny_config(cache=dict(sink_frames=3, window_frames=3, rope="compact")))
    tl = bench.bench_timeline(pipe.config, 4.0, switch_every=1.5)
    cached = torch.cat([lat for _, lat, _ in pipe.latents(tl, 0)], dim=2)
    recomputed = torch.cat([lat for _, lat, _ in bench.recompute_latents(pipe, tl, 0)], dim=2)
    assert cached.shape == recomputed.shape
    first_block = pipe.schedule.block_frames
    assert torch.allclose(cached[:, :, :first_block], recomputed[:, :, :first_block], atol=1e-4)


def test_flop_count_counts_attention_and_reaches_a_steady_block():
    pipe = tiny_pipeline()
    fl = bench.count_block_flops(pipe)
    assert fl["steady_forwards"] == len(pipe.config.schedule.timesteps) + 1  # steps + commit
    assert fl["per_block"][-1] == fl["per_block"][-2] > 0  # window full: constant cost
    # the first block attends to less than later ones, so it costs less
    assert fl["per_block"][0] < fl["per_block"][-1]
    model_forward = pipe.model.forward
    assert "forward" not in vars(pipe.model) and model_forward.__func__ is type(pipe.model).forward


def test_sdpa_on_cpu_is_counted():
    q, k = torch.randn(1, 2, 8, 4), torch.randn(1, 2, 16, 4)
    with bench.flop_counter() as counter:
        torch.nn.functional.scaled_dot_product_attention(q, k, k, attn_mask=torch.ones(8, 16, dtype=torch.bool))
    assert counter.get_total_flops() == 4 * 2 * 8 * 16 * 4


def test_per_window_and_drift():
    rows = [{"block": i, "video_s": 0.75 * (i + 1), "block_ms": 100.0 + (50 if i == 0 else 0),
             "rss_mib": 500.0} for i in range(16)]
    w = bench.per_window(rows, 6.0)
    assert [r["blocks"] for r in w] == [7, 8]  # block 0 (warm-up) left out
    assert w[0]["mean_block_ms"] == 100.0
    assert bench.drift(w) == {"block_time": 0.0, "rss": 0.0}


def test_run_bench_report_has_every_figure():
    pipe = tiny_pipeline()
    report = bench.run_bench(pipe, seconds=2.0, switch_every=1.0, compare=True, compare_seconds=2.0,
                              peak_seconds=0.01)
    assert {"settings", "machine", "end_to_end", "windows", "blocks", "matmul_peak", "generator",
            "compare"} <= set(report)
    e = report["end_to_end"]
    assert e["frames"] == 32 and e["fps"] > 0 and 0 < e["ttff_s"] <= e["wall_s"]
    assert set(e["stages"]) == {"text_s", "generator_s", "recache_s", "decode_s", "encode_s"}
    assert e["recaches"] >= 1
    assert report["matmul_peak"]["flops"] > 0 and report["generator"]["achieved_flops"] > 0
    c = report["compare"]
    assert set(c["engines"]) == {"longvid", "recompute", "diffusers"}
    for name, r in c["engines"].items():
        assert r["frames"] == 32 and r["fps"] > 0, name
    assert set(c["ratios"]) == {"recompute", "diffusers"}
    # same number of denoising forwards per frame: the peer ran 4 steps per chunk
    assert c["engines"]["diffusers"]["forwards"] > 0
    assert c["engines"]["diffusers"]["settings"]["num_inference_steps"] == 4
    json.dumps(report)  # JSON-able


def test_cli_bench_writes_json_and_table(tmp_path):
    threads = torch.get_num_threads()
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(config_to_dict(tiny_config(runtime={"threads": 1}))), encoding="utf-8")
    out = tmp_path / "bench.json"
    try:
        result = runner.invoke(app, ["bench", "--config", str(cfg), "--seconds", "1.5", "--no-flops",
                                     "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert "end to end" in result.output and "time to first frame" in result.output
    report = json.loads(out.read_text())
    assert report["end_to_end"]["frames"] == 24
    assert report["settings"]["config"] == "tiny"
    assert "matmul_peak" not in report


@pytest.mark.parametrize("args", [["--seconds", "0"], ["--seconds", "2", "--minutes", "1"]])
def test_cli_bench_bad_length_is_one_line(args):
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:")


def test_int8_quantization_close_to_float_and_resume_fingerprint_kept():
    from longvid.quantize import is_quantized, quantize_transformer
    from longvid.state import weights_fingerprint

    pipe = tiny_pipeline()
    tl = bench.bench_timeline(pipe.config, 2.0, switch_every=None)
    ref = torch.cat([lat for _, lat, _ in pipe.latents(tl, 0)], dim=2)
    before = weights_fingerprint(pipe.model)
    quantize_transformer(pipe.model, "int8", torch.device("cpu"))
    assert is_quantized(pipe.model)
    def quantized(module):
        return [m for m in module.modules() if type(m).__module__.endswith("quantized.dynamic.modules.linear")]

    assert len(quantized(pipe.model.blocks[0])) == 10  # q, k, v, out of both attentions; 2 in the ffn
    assert quantized(pipe.model.condition_embedder) == [] and quantized(pipe.model.proj_out) == []
    assert weights_fingerprint(pipe.model) == before
    q = torch.cat([lat for _, lat, _ in pipe.latents(tl, 0)], dim=2)
    assert q.shape == ref.shape and not torch.equal(q, ref)
    assert (q - ref).abs().mean() < 0.1 * ref.abs().mean()


def test_int8_is_refused_off_cpu_float32():
    from longvid.errors import ConfigError
    from longvid.model import build_transformer
    from longvid.quantize import quantize_transformer

    model = build_transformer(tiny_config().model, dtype=torch.bfloat16)
    with pytest.raises(ConfigError, match="float32"):
        quantize_transformer(model, "int8", torch.device("cpu"))


def test_cli_generate_int8(tmp_path):
    threads = torch.get_num_threads()
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(config_to_dict(tiny_config(runtime={"threads": 1}))), encoding="utf-8")
    try:
        result = runner.invoke(app, ["generate", "a red circle", "--seconds", "1", "--config", str(cfg),
                                     "--set", "runtime.quantize=int8", "--out", str(tmp_path / "q.mp4")])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "q.json").read_text())["info"]
    assert info["config"]["runtime"]["quantize"] == "int8"


def test_bench_of_an_int8_model_says_why_flops_are_missing():
    from longvid.quantize import quantize_transformer

    pipe = tiny_pipeline()
    quantize_transformer(pipe.model, "int8", torch.device("cpu"))
    report = bench.run_bench(pipe, seconds=1.0, peak_seconds=0.01, compare=True, compare_seconds=1.0)
    assert "generator" not in report and "int8" in report["notes"][0]
    assert set(report["compare"]["engines"]) == {"longvid", "recompute"}
    assert "quantized" in report["compare"]["notes"]["diffusers"]
