"""Load and save MambaLM checkpoints in mamba_ssm's official layout (and read the transformers "-hf" one).

Official (state-spaces/mamba-*): ``config.json`` with MambaConfig's fields + ``pytorch_model.bin``;
its keys are exactly MambaLM's, so nothing is renamed. transformers (state-spaces/mamba-*-hf):
``config.json`` with MambaConfig's transformers names (hidden_size, num_hidden_layers, state_size, ...)
and ``backbone.embeddings.weight`` instead of ``backbone.embedding.weight``.

Nothing here unpickles arbitrary objects: ``.bin`` files go through ``torch.load(weights_only=True)``
and must hold only tensors.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

from .config import CONFIG_FIELDS

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
BIN_NAME = "pytorch_model.bin"
# transformers' MambaConfig name -> (our field, where it goes)
_HF_TOP_LEVEL = {"hidden_size": "d_model", "num_hidden_layers": "n_layer", "vocab_size": "vocab_size",
                 "residual_in_fp32": "residual_in_fp32", "tie_word_embeddings": "tie_embeddings",
                 "layer_norm_epsilon": "norm_epsilon"}
_HF_SSM = {"state_size": "d_state", "expand": "expand", "conv_kernel": "d_conv", "time_step_rank": "dt_rank",
           "use_bias": "bias", "use_conv_bias": "conv_bias", "time_step_min": "dt_min", "time_step_max": "dt_max",
           "time_step_floor": "dt_init_floor", "time_step_scale": "dt_scale", "time_step_init_scheme": "dt_init"}
# Fields of a transformers config that do not change the network's math.
_HF_IGNORED = {"model_type", "architectures", "torch_dtype", "transformers_version", "bos_token_id",
               "eos_token_id", "pad_token_id", "initializer_range", "rescale_prenorm_residual", "use_cache",
               "use_mambapy", "intermediate_size", "hidden_act", "_name_or_path", "use_associative_scan"}
# ssm_cfg keys that only steer seqmamba and must not reach mamba_ssm's Mamba(**ssm_cfg).
_SEQMAMBA_ONLY_SSM_KEYS = ("scan_backend",)


# ---------------------------------------------------------------------------------------- reading files
def load_state_dict_file(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read one ``.safetensors`` or ``.bin`` file into a {name: tensor} dict on the CPU, never unpickling objects."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refusing to load: the file holds pickled objects other than tensors, and "
                         f"loading it would run arbitrary code (torch.load(weights_only=True) said: "
                         f"{str(err).splitlines()[0]})") from None
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: expected a dict of tensors, found a {type(state_dict).__name__}")
    not_tensors = sorted(k for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ValueError(f"{path}: expected a dict of tensors; these entries are not tensors: {not_tensors[:10]}"
                         + (f" (and {len(not_tensors) - 10} more)" if len(not_tensors) > 10 else ""))
    return state_dict


def _weight_files(directory: Path):
    """The weight file(s) of a checkpoint directory: safetensors preferred, sharded indexes followed."""
    for single, index in ((SAFETENSORS_NAME, SAFETENSORS_NAME + ".index.json"), (BIN_NAME, BIN_NAME + ".index.json")):
        if (directory / single).is_file():
            return [directory / single]
        if (directory / index).is_file():
            weight_map = json.loads((directory / index).read_text())["weight_map"]
            return [directory / name for name in sorted(set(weight_map.values()))]
    raise FileNotFoundError(f"{directory}: no {SAFETENSORS_NAME} or {BIN_NAME} (or a sharded index of either)")


def read_checkpoint(path: Union[str, os.PathLike]) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """(MambaLM constructor kwargs, state_dict with official key names) from a checkpoint directory."""
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory (expected one holding {CONFIG_NAME} and weights)")
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_NAME}")
    config = config_from_dict(json.loads(config_path.read_text()))
    state_dict = {}
    for file in _weight_files(directory):
        state_dict.update(load_state_dict_file(file))
    return config, official_key_names(state_dict)


def config_from_dict(raw: Dict[str, Any]) -> Dict[str, Any]:
    """An official or transformers config.json -> MambaLM constructor kwargs (unknown fields warn and are dropped)."""
    if "hidden_size" in raw or raw.get("model_type") == "mamba":
        return _config_from_hf(raw)
    unknown = sorted(set(raw) - set(CONFIG_FIELDS))
    if unknown:
        warnings.warn(f"config.json: ignoring unknown field(s) {unknown}")
    return {k: v for k, v in raw.items() if k in CONFIG_FIELDS}


def _config_from_hf(raw: Dict[str, Any]) -> Dict[str, Any]:
    if raw.get("hidden_act", "silu") not in ("silu", "swish"):
        raise ValueError(f"config.json: hidden_act={raw['hidden_act']!r} is not supported; Mamba uses 'silu'")
    config: Dict[str, Any] = {"ssm_cfg": {}, "rms_norm": True, "fused_add_norm": False,
                              # the -hf vocab_size is the embedding's row count, already padded
                              "pad_vocab_size_multiple": 1}
    for key, value in raw.items():
        if key in _HF_TOP_LEVEL:
            config[_HF_TOP_LEVEL[key]] = value
        elif key in _HF_SSM:
            config["ssm_cfg"][_HF_SSM[key]] = value
        elif key not in _HF_IGNORED and key not in CONFIG_FIELDS:
            # Converted "-hf" configs also carry the official names (d_model, ssm_cfg, ...); the
            # transformers names above are the ones transformers reads, so they win.
            warnings.warn(f"config.json (transformers layout): ignoring unknown field {key!r}")
    if "intermediate_size" in raw and "hidden_size" in raw:
        expected = int(config["ssm_cfg"].get("expand", 2) * raw["hidden_size"])
        if raw["intermediate_size"] != expected:
            raise ValueError(f"config.json: intermediate_size={raw['intermediate_size']} but expand * hidden_size "
                             f"= {expected}; seqmamba needs them to agree")
    return config


def official_key_names(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename the transformers layout's keys to the official ones (the only difference is the embedding)."""
    renamed = {}
    for key, value in state_dict.items():
        if key == "backbone.embeddings.weight":
            key = "backbone.embedding.weight"
        renamed[key] = value
    return renamed


# ---------------------------------------------------------------------------------------- model level
def load_into(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], strict: bool = True) -> None:
    """Copy a state_dict into ``model``; missing/unexpected keys and shape mismatches raise ValueError listing them."""
    expected = model.state_dict()
    state_dict = dict(state_dict)
    tied = getattr(getattr(model, "config", None), "tie_embeddings", False)
    if tied and "lm_head.weight" not in state_dict and "backbone.embedding.weight" in state_dict:
        state_dict["lm_head.weight"] = state_dict["backbone.embedding.weight"]  # saved once, used twice
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shapes = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)}"
                          for k in set(expected) & set(state_dict) if state_dict[k].shape != expected[k].shape)
    problems = []
    if wrong_shapes:
        problems.append(f"wrong shapes: {wrong_shapes}")
    if strict and missing:
        problems.append(f"missing keys: {missing}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if problems:
        raise ValueError("checkpoint does not match the model; " + "; ".join(problems))
    # load_state_dict copies into the existing parameters, so a tied head stays tied.
    model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)


def load_pretrained(cls, path, device=None, dtype=None, strict: bool = True):
    config, state_dict = read_checkpoint(path)
    model = cls(**config, device=device, dtype=dtype)
    load_into(model, state_dict, strict=strict)
    return model


def save_pretrained(model, path, safe_serialization: bool = True) -> None:
    """config.json (mamba_ssm's MambaConfig fields only) + model.safetensors or pytorch_model.bin."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config = dataclasses.asdict(model.config)
    config["ssm_cfg"] = {k: v for k, v in config["ssm_cfg"].items() if k not in _SEQMAMBA_ONLY_SSM_KEYS}
    if config.get("norm_epsilon") == 1e-5:
        del config["norm_epsilon"]  # mamba_ssm's MambaConfig has no such field; 1e-5 is its fixed value
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if safe_serialization:
        from safetensors.torch import save_file

        if model.config.tie_embeddings:
            # safetensors refuses two names for one storage; the loader re-ties lm_head to the embedding.
            state_dict.pop("lm_head.weight", None)
        save_file(state_dict, str(directory / SAFETENSORS_NAME), metadata={"format": "pt"})
    else:
        torch.save(state_dict, directory / BIN_NAME)
