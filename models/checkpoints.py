"""Network checkpoints in the diffusers layout: `config.json` + `*.safetensors`, plus `samenoise.json`
naming how the network is wrapped (kernel, prediction, time input) and how it was made."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save

from models.atomic import atomic_write

META = "samenoise.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"  # diffusers' file name, so UNet2DModel.from_pretrained reads it
FILES = ("config.json", WEIGHTS, META)  # what a checkpoint folder holds; load_checkpoint reads all three


class CheckpointError(ValueError):
    """A checkpoint folder whose files cannot be used; the message names the file and the problem."""


def build_network(config: dict[str, Any]) -> torch.nn.Module:
    """A network from its saved config: diffusers' UNet2DModel or the suite's U-ViT."""
    kind = config.get("_class_name")
    if kind == "UNet2DModel":
        from diffusers import UNet2DModel

        return UNet2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    if kind == "UViT":
        from models.uvit import UViT

        return UViT(**{k: v for k, v in config.items() if not k.startswith("_")})
    from models.vae import VAES

    if kind in VAES:
        return VAES[kind](**{k: v for k, v in config.items() if not k.startswith("_")})
    raise CheckpointError(f"unknown network class {kind!r} in config.json; valid: UNet2DModel, UViT, "
                          f"{', '.join(VAES)}")


def network_config(net: torch.nn.Module) -> dict[str, Any]:
    """The constructor arguments that `build_network` needs, tagged with the class name."""
    return {"_class_name": type(net).__name__, **{k: v for k, v in dict(net.config).items() if not k.startswith("_")}}


def save_checkpoint(folder: str | os.PathLike, net: torch.nn.Module, meta: dict[str, Any],
                    dtype: Optional[torch.dtype] = None) -> Path:
    """Write config.json, the weights (optionally cast, e.g. float16) and samenoise.json, each atomically."""
    folder = Path(folder)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in net.state_dict().items()}
    atomic_write(folder / "config.json", lambda f: f.write(json.dumps(network_config(net), indent=1).encode()))
    atomic_write(folder / WEIGHTS, lambda f: f.write(save(state)))
    atomic_write(folder / META, lambda f: f.write(json.dumps(meta, indent=1, sort_keys=True).encode()))
    return folder


def load_checkpoint(folder: str | os.PathLike, dtype: torch.dtype = torch.float32
                    ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network (eval mode, `dtype`) and its samenoise.json."""
    folder = Path(folder)
    for name in FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"checkpoint {folder} has no {name}; expected config.json, {WEIGHTS} and {META}")
    config, meta = (_read_json(folder / name) for name in ("config.json", META))
    try:
        net = build_network(config)
    except (TypeError, ValueError) as e:  # an argument the class does not take, or of the wrong type
        raise CheckpointError(f"checkpoint config {folder / 'config.json'} does not build its network "
                              f"({type(e).__name__}: {e})") from e
    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as e:  # safetensors raises its own error type on a truncated or foreign file
        raise CheckpointError(f"checkpoint weights {folder / WEIGHTS} cannot be read ({type(e).__name__}: {e}); "
                              f"the file is truncated or not safetensors") from e
    try:
        net.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as e:  # torch lists the missing, unexpected and mis-shaped tensors on the lines after the first
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        detail = "; ".join(lines[1:]) or lines[0]
        detail = detail if len(detail) <= 600 else detail[:600] + " ..."
        raise CheckpointError(f"checkpoint weights {folder / WEIGHTS} do not fit its config.json: {detail}") from e
    return cast(net, dtype=dtype).eval(), meta


def cast(net: torch.nn.Module, device: Optional[str | torch.device] = None, dtype: Optional[torch.dtype] = None
         ) -> torch.nn.Module:
    """`net` on `device` in `dtype`, cast only where a parameter differs: diffusers logs a float32 warning on every
    `.to(dtype)` of a model with float32-only modules, even when nothing changes."""
    if device is not None:
        net = net.to(device)
    if dtype is not None and any(p.dtype != dtype for p in net.parameters()):
        net = net.to(dtype)
    return net


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's config.json (the network's class and constructor arguments), without building the network."""
    return _read_json(Path(folder) / "config.json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint file {path} cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(doc, dict):
        raise CheckpointError(f"checkpoint file {path} holds {type(doc).__name__}, expected a JSON object")
    return doc
