"""`longvid convert`: a config's transformer (any layout, LoRA merged) -> one safetensors file.

The public generators ship as pickled training checkpoints (several copies of the weights, original
Wan names, a separate LoRA). Converting once gives a file that loads with no unpickling, no
renaming and no LoRA merge: point `weights.transformer` at it and set `weights.lora` to null.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from longvid import loading
from longvid.api import DTYPES, apply_lora
from longvid.config import Config, config_to_dict, weight_path
from longvid.errors import OutputError, WeightsError
from longvid.model import build_transformer, num_parameters

CONVERTED_FROM_KEY = "longvid_converted_from"


def convert_transformer(config: Config, out: str | os.PathLike[str], overwrite: bool = False) -> dict:
    """Load the config's transformer (+ LoRA, merged) and write it to `out` (.safetensors) in
    diffusers' names and the config's runtime dtype. Returns a summary for the CLI."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise OutputError(f"{out}: the converted file must end in .safetensors")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise OutputError(f"cannot write {out}: directory {out.parent} does not exist")
    source = weight_path(config, "transformer")
    if source is None:
        raise WeightsError(f"config '{config.name}' names no transformer weights (weights.transformer)")
    model = build_transformer(config.model, "cpu", DTYPES[config.runtime.dtype])
    what = loading.load_transformer_weights(model, source, config.weights.checkpoint_key)
    merge = dataclasses.replace(config, weights=dataclasses.replace(config.weights, lora_merge=True))
    adapted = apply_lora(model, merge)
    lora = weight_path(config, "lora")
    meta = {
        CONVERTED_FROM_KEY: json.dumps({"transformer": what, "lora": None if lora is None else str(lora)}),
        "longvid_model_config": json.dumps(config_to_dict(config)["model"]),
    }
    loading.save_safetensors(model, out, meta)
    return {"source": what, "lora": None if lora is None else str(lora), "lora_layers": adapted,
            "parameters": num_parameters(model), "dtype": str(DTYPES[config.runtime.dtype]).replace("torch.", ""),
            "bytes": out.stat().st_size, "out": str(out)}


__all__ = ["convert_transformer", "CONVERTED_FROM_KEY"]
