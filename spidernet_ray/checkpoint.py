"""Checkpoints: genome JSON + safetensors weights, so loading never executes pickled code.

A checkpoint directory holds ``genome.json``, ``weights.safetensors`` and ``network.json`` (what
kind of network it is and the settings needed to rebuild it exactly). A trainer may add
``momentum.safetensors``: the SGD momentum buffers keyed by parameter name, so a member paused and
restored (or cloned) keeps training where it left off.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from spidernet_ray.genome import Genome, GenomeError
from spidernet_ray.rundir import atomic_write
from spidernet_ray.supernet import CellNetwork, DiscreteNet, SuperNet

GENOME_FILE = "genome.json"
WEIGHTS_FILE = "weights.safetensors"
NETWORK_FILE = "network.json"
MOMENTUM_FILE = "momentum.safetensors"
TRAINER_STATE_FILE = "trainer_state.json"
CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")  # how Ray names a trial's checkpoints, oldest first


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or does not match its genome."""


def save_checkpoint(model: CellNetwork, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(model, SuperNet):
        network = {"kind": "supernet", "gate": model.gate_kind, "gate_scale": model.gate_scale, "window": model.window}
        if model.channel_search:  # channel gates are weights too; narrowed widths live in the genome
            network["channel_search"] = True
    else:
        edge_ops = [[k, s, d, list(ops)] for (k, s, d), ops in model.edge_ops.items()]
        network = {"kind": "discrete", "edge_ops": edge_ops}
    network["drop_path"] = model.drop_path_prob
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, str(p)))
    atomic_write(directory / GENOME_FILE, lambda p: p.write_text(model.genome.to_json()))
    atomic_write(directory / NETWORK_FILE, lambda p: p.write_text(json.dumps(network)))
    return directory


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> CellNetwork:
    """Rebuild the network a checkpoint describes and load its weights (no pickle involved)."""
    directory = Path(directory)
    files = [directory / GENOME_FILE, directory / WEIGHTS_FILE, directory / NETWORK_FILE]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {directory} lacks {', '.join(missing)}")
    try:
        genome = Genome.from_json((directory / GENOME_FILE).read_text())
        network = json.loads((directory / NETWORK_FILE).read_text())
        state = load_file(str(directory / WEIGHTS_FILE))
    except (GenomeError, json.JSONDecodeError, SafetensorError, OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {directory} is unreadable: {exc}") from None
    if network.get("kind") == "supernet":
        model = SuperNet(genome, gate=network["gate"], drop_path=network["drop_path"], window=network["window"],
                         channel_search=bool(network.get("channel_search", False)))
        model.set_gate_scale(network["gate_scale"])
    elif network.get("kind") == "discrete":
        edge_ops = {(k, s, d): tuple(ops) for k, s, d, ops in network["edge_ops"]}
        model = DiscreteNet(genome, edge_ops, drop_path=network["drop_path"])
    else:
        raise CheckpointError(f"checkpoint {directory}: unknown network kind {network.get('kind')!r}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {directory}: weights do not match the genome ({first})") from None
    return model.to(device)


def momentum_buffers(model: CellNetwork, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimiser's momentum buffers, keyed by the name of their parameter in ``model``."""
    names = {id(p): name for name, p in model.named_parameters()}
    return {
        names[id(p)]: state["momentum_buffer"].detach()
        for p, state in optimizer.state.items()
        if id(p) in names and state.get("momentum_buffer") is not None
    }


def save_momentum(model: CellNetwork, optimizer: torch.optim.Optimizer, directory: str | Path) -> None:
    """The optimiser's momentum buffers, keyed by the name of their parameter."""
    buffers = {name: b.cpu().contiguous() for name, b in momentum_buffers(model, optimizer).items()}
    atomic_write(Path(directory) / MOMENTUM_FILE, lambda p: save_file(buffers, str(p)))


def read_momentum(directory: str | Path) -> dict[str, torch.Tensor]:
    """The momentum buffers saved beside a checkpoint; none for a checkpoint saved without them."""
    path = Path(directory) / MOMENTUM_FILE
    if not path.is_file():
        return {}
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {directory} has unreadable momentum: {exc}") from None


def set_momentum(model: CellNetwork, optimizer: torch.optim.Optimizer, buffers: dict[str, torch.Tensor]) -> int:
    """Give each parameter of ``model`` its saved momentum buffer (same name and shape); the count set."""
    params = dict(model.named_parameters())
    count = 0
    for name, buffer in buffers.items():
        p = params.get(name)
        if p is not None and p.shape == buffer.shape:
            optimizer.state[p]["momentum_buffer"] = buffer.to(p.device)
            count += 1
    return count


def save_trainer_state(state: dict, directory: str | Path) -> None:
    """What a member's trainer keeps beside its network (pressure, last mutation carried out, rounds)."""
    atomic_write(Path(directory) / TRAINER_STATE_FILE, lambda p: p.write_text(json.dumps(state)))


# -- a member's checkpoint, with the fallback to an earlier one ------------------------------------
def read_member_checkpoint(directory: Path, device: torch.device) -> tuple[CellNetwork, dict, str]:
    """The network and trainer state saved in ``directory``, and a note that is empty unless it was unreadable.

    A corrupt or truncated checkpoint falls back to the newest readable one saved before it beside it
    (Ray keeps a trial's last few as ``checkpoint_<index>``; a checkpoint downloaded from remote storage
    has no such neighbours). Weights are read with safetensors only, never unpickled. With no readable
    checkpoint the first CheckpointError is raised and Ray's failure handling takes over.
    """
    errors = []
    for candidate in [directory, *earlier_checkpoints(directory)]:
        try:
            model = load_checkpoint(candidate, device)
            state = {**_read_trainer_state(candidate), "momentum": read_momentum(candidate)}
        except CheckpointError as exc:
            errors.append(exc)
            continue
        note = f"{errors[0]}; restored the earlier {candidate.name} instead" if errors else ""
        return model, state, note
    raise errors[0]


def earlier_checkpoints(directory: Path) -> list[Path]:
    """The checkpoints Ray saved for the same trial before ``directory``, newest first."""
    match = CHECKPOINT_DIR.fullmatch(directory.name)
    if not match:
        return []
    found = []
    for path in directory.parent.iterdir():
        other = CHECKPOINT_DIR.fullmatch(path.name)
        if other and int(other[1]) < int(match[1]) and path.is_dir():
            found.append((int(other[1]), path))
    return [path for _, path in sorted(found, reverse=True)]


def _read_trainer_state(directory: Path) -> dict:
    try:
        state = json.loads((directory / TRAINER_STATE_FILE).read_text())
        rounds_done = state.get("rounds_done")  # optional, as stable_epochs: a hand-made state may lack them
        return {"pressure": float(state["pressure"]), "applied_mutation": state["applied_mutation"],
                "stable_epochs": int(state.get("stable_epochs", 0)),
                "rounds_done": None if rounds_done is None else int(rounds_done)}
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {directory}: unreadable {TRAINER_STATE_FILE} ({exc!r})") from None
