"""Network checkpoints in the diffusers layout: `config.json` + `*.safetensors`, plus `samenoise.json`
naming how the network is wrapped (kernel, prediction, time input) and how it was made."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save

from models.atomic import atomic_write, file_sha256

META = "samenoise.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"  # diffusers' file name, so UNet2DModel.from_pretrained reads it
FILES = ("config.json", WEIGHTS, META)  # what a checkpoint folder holds; load_checkpoint reads all three


class CheckpointError(ValueError):
    """A checkpoint folder whose files cannot be used; the message names the file and the problem."""


def build_network(config: dict[str, Any]) -> torch.nn.Module:
    """A network from its saved config: diffusers' UNet2DModel or the suite's U-ViT."""
    kind = config.get("_class_name")
    if kind == "UNet2DModel":
        import inspect

        from diffusers import UNet2DModel

        from models.versions import package_versions

        args = {k: v for k, v in config.items() if not k.startswith("_")}
        # diffusers' from_config logs and drops a key it does not know: a typo (act_fun) built another network
        unknown = sorted(set(args) - set(inspect.signature(UNet2DModel.__init__).parameters))
        if unknown:
            installed = package_versions(("diffusers",))["diffusers"]
            raise CheckpointError(f"config.json has keys UNet2DModel does not take: {', '.join(unknown)} (diffusers "
                                  f"{installed}; a typo, or a config of another diffusers release)")
        return UNet2DModel.from_config(args)
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


WRITTEN_WITH = "written_with"  # samenoise.json's key: the sha256 of the config and weights it was written with


def save_checkpoint(folder: str | os.PathLike, net: torch.nn.Module, meta: dict[str, Any],
                    dtype: Optional[torch.dtype] = None) -> Path:
    """Write config.json, the weights (optionally cast, e.g. float16) and samenoise.json, each atomically. All
    three are serialised before any is written (a meta that JSON cannot hold wrote nothing half), and samenoise.json,
    written last, records the other two files' sha256: a save cut short between the files leaves a folder that
    `load_checkpoint` refuses, not new weights wrapped by the previous checkpoint's kernel and prediction."""
    folder = Path(folder)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in net.state_dict().items()}
    config, weights = json.dumps(network_config(net), indent=1).encode(), save(state)
    digests = {"config.json": hashlib.sha256(config).hexdigest(), WEIGHTS: hashlib.sha256(weights).hexdigest()}
    try:
        meta_bytes = json.dumps({**meta, WRITTEN_WITH: digests}, indent=1, sort_keys=True).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {folder}: its samenoise.json cannot be written as JSON ({e}); nothing was "
                         f"written") from e
    atomic_write(folder / WEIGHTS, lambda f: f.write(weights))
    atomic_write(folder / "config.json", lambda f: f.write(config))
    atomic_write(folder / META, lambda f: f.write(meta_bytes))
    return folder


def load_checkpoint(folder: str | os.PathLike, dtype: torch.dtype = torch.float32
                    ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network (eval mode, `dtype`) and its samenoise.json (without the files' digests it keeps)."""
    folder = Path(folder)
    if folder.is_file():
        raise CheckpointError(f"checkpoint {folder} is a file; give the folder that holds config.json, {WEIGHTS} and "
                              f"{META}")
    for name in FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"checkpoint {folder} has no {name}; expected config.json, {WEIGHTS} and {META}")
    config, meta = (_read_json(folder / name) for name in ("config.json", META))
    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as e:  # safetensors raises its own error type on a truncated or foreign file
        raise CheckpointError(f"checkpoint weights {folder / WEIGHTS} cannot be read ({type(e).__name__}: {e}); "
                              f"the file is truncated or not safetensors") from e
    # files that read but were not written together (a save cut short between them); checkpoints saved before the
    # digests were recorded have none
    recorded = meta.get(WRITTEN_WITH, {})
    if not isinstance(recorded, dict):
        raise CheckpointError(f"checkpoint file {folder / META}: {WRITTEN_WITH} is a {type(recorded).__name__}, "
                              f"expected an object of file names and sha256 digests")
    if WRITTEN_WITH in meta and set(recorded) != {"config.json", WEIGHTS}:  # an empty record checked nothing
        raise CheckpointError(f"checkpoint file {folder / META}: {WRITTEN_WITH} records {sorted(recorded)}, expected "
                              f"the sha256 of config.json and {WEIGHTS}")
    for name, want in recorded.items():
        got = file_sha256(folder / name) if name in FILES else None
        if got != want:
            raise CheckpointError(f"checkpoint {folder}: {name} is not the file {META} was written with (sha256 "
                                  f"{(got or 'none')[:12]}, recorded {str(want)[:12]}): a save was cut short or a "
                                  f"file was replaced; save the checkpoint again")
    try:
        net = build_network(config)
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint config {folder / 'config.json'}: {e}") from e
    except Exception as e:  # an argument the class does not take or of the wrong type, a negative size, no blocks
        raise CheckpointError(f"checkpoint config {folder / 'config.json'} does not build its network "
                              f"({type(e).__name__}: {e})") from e
    try:
        net.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as e:  # torch lists the missing, unexpected and mis-shaped tensors on the lines after the first
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        detail = "; ".join(lines[1:]) or lines[0]
        detail = detail if len(detail) <= 600 else detail[:600] + " ..."
        raise CheckpointError(f"checkpoint weights {folder / WEIGHTS} do not fit its config.json: {detail}") from e
    return cast(net, dtype=dtype).eval(), {k: v for k, v in meta.items() if k != WRITTEN_WITH}


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
