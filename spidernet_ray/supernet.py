"""The supernet: a network built from a genome whose operations carry pruning gates.

Macro structure (DESIGN.md): stem conv, then R+1 densely connected cells (cell 0 normal at C
channels, each later cell a reduction cell doubling channels and halving resolution), one
classifier head per cell. Training loss = CE(last head) + 0.4 * sum CE(other heads).

The module tree mirrors the genome: ``cells[k].edges["src_dst"].ops[name]``. Deadheading deletes
modules for real and growth adds new ones next to the untouched old ones, so a network and its
genome always agree and surviving tensors are inherited bit for bit.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F
from torch import nn

from spidernet_ray.gates import (
    GATE_CLAMP,
    GATE_INIT,
    OpCost,
    annealed_scale,
    apply_gate,
    check_gate_kind,
    gate_pressure,
    gate_value,
    param_cost,
)
from spidernet_ray.genome import Genome, GenomeError
from spidernet_ray.ops import Subsample, build_op

AUX_WEIGHT = 0.4
DEADHEAD_THRESHOLD = 0.25
NO_DROP_PATH = frozenset({"identity"})

EdgeOps = dict[tuple[int, int, int], tuple[str, ...]]  # (cell, src, dst) -> op names


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole samples with probability p, rescaling the rest (stochastic depth per op)."""
    keep = 1.0 - p
    mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep)
    return x * mask / keep


def edge_key(src: int, dst: int) -> str:
    return f"{src}_{dst}"


class MixedEdge(nn.Module):
    """Sum over candidate operations, each multiplied by its gate (when gated)."""

    def __init__(self, op_names, channels: int, stride: int, resolution: tuple[int, int], gated: bool, gate_kind: str):
        super().__init__()
        self.channels, self.stride, self.resolution = channels, stride, tuple(resolution)
        self.gated, self.gate_kind = gated, gate_kind
        self.drop_prob = 0.0
        self.gate_scale = 1.0
        self.ops = nn.ModuleDict({name: build_op(name, channels, stride) for name in op_names})
        if gated:
            self.gate_weights = nn.ParameterDict({name: nn.Parameter(torch.tensor(GATE_INIT)) for name in op_names})
            # Per-op count of training steps with the gate open, kept on the gate's device (no sync per
            # step), and the per-epoch (open, steps) history deadheading reads.
            self.open_steps: dict[str, torch.Tensor] = {}
            self.steps = 0
            self.history: dict[str, deque] = {name: deque() for name in op_names}

    @property
    def op_names(self) -> list[str]:
        return list(self.ops.keys())

    def gate(self, name: str) -> torch.Tensor:
        return gate_value(self.gate_weights[name], self.gate_kind, self.gate_scale, self.training)

    def is_open(self, name: str) -> bool:
        return not self.gated or bool(self.gate_weights[name].detach() > 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counting = self.gated and self.training and torch.is_grad_enabled()
        if counting:
            self.steps += 1
        out = None
        for name, op in self.ops.items():
            y = op(x)
            if self.training and self.drop_prob > 0 and name not in NO_DROP_PATH:
                y = drop_path(y, self.drop_prob)
            if self.gated:
                y = apply_gate(y, self.gate(name))
                if counting:
                    opened = (self.gate_weights[name].detach() > 0).to(torch.int64)
                    self.open_steps[name] = self.open_steps.get(name, 0) + opened
            out = y if out is None else out + y
        if out is None:  # every op of this edge is closed (discrete networks only): it contributes zeros
            n, _, h, w = x.shape
            out = x.new_zeros(n, self.channels, -(-h // self.stride), -(-w // self.stride))
        return out

    def end_epoch(self, window: int) -> None:
        for name in self.op_names:
            opened = int(self.open_steps.get(name, 0))
            self.history[name].append((opened, self.steps))
            while len(self.history[name]) > window:
                self.history[name].popleft()
        self.open_steps, self.steps = {}, 0

    def open_fraction(self, name: str) -> float:
        opened = sum(o for o, _ in self.history[name])
        steps = sum(s for _, s in self.history[name])
        return opened / steps if steps else 1.0

    def remove(self, name: str) -> None:
        del self.ops[name]
        if self.gated:
            del self.gate_weights[name]
            self.open_steps.pop(name, None)
            del self.history[name]


class CellModule(nn.Module):
    """One cell: input adapters, gated mixed edges and a BatchNorm per node, evaluated in topological order."""

    def __init__(self, genome: Genome, index: int, gated: bool, gate_kind: str, edge_ops: EdgeOps | None = None):
        super().__init__()
        self.index, self.gated, self.gate_kind = index, gated, gate_kind
        self.channels = genome.cell_channels(index)
        self.adapters = nn.ModuleDict()
        self.edges = nn.ModuleDict()
        self.node_bn = nn.ModuleDict()
        self.sync(genome, edge_ops)

    def _input_level(self) -> int:
        return max(self.index - 1, 0)  # number of reductions the cell's input nodes have seen

    def _adapter(self, genome: Genome, i: int) -> nn.Module:
        """Bring input i (stem or an earlier cell) to this cell's channels and input resolution."""
        source_level, source_channels = (0, genome.channels) if i == 0 else (i - 1, genome.cell_channels(i - 1))
        layers = []
        stride = 2 ** (self._input_level() - source_level)
        if stride > 1:
            layers.append(Subsample(stride))
        if source_channels != self.channels:
            layers += [nn.Conv2d(source_channels, self.channels, 1, bias=False), nn.BatchNorm2d(self.channels)]
        return nn.Sequential(*layers)

    def sync(self, genome: Genome, edge_ops: EdgeOps | None = None) -> None:
        """Make the module tree match the genome: delete what it lost, build what it gained.

        ``edge_ops`` overrides the ops built per edge (used for discrete networks, where an edge may
        keep no op at all).
        """
        cell = genome.cells[self.index]
        device = next(self.parameters(), torch.empty(0)).device
        in_res = genome.cell_resolution(self._input_level())
        out_res = genome.cell_resolution(self.index)

        used_inputs = {str(e.src) for e in cell.edges if e.src in cell.inputs}
        for name in [n for n in self.adapters if n not in used_inputs]:
            del self.adapters[name]
        for name in sorted(used_inputs - set(self.adapters)):
            self.adapters[name] = self._adapter(genome, int(name)).to(device)

        wanted = {edge_key(e.src, e.dst): e for e in cell.edges}
        for key in [k for k in self.edges if k not in wanted]:
            del self.edges[key]
        for key, e in wanted.items():
            ops = e.ops if edge_ops is None else edge_ops[(self.index, e.src, e.dst)]
            if key in self.edges:
                for name in [n for n in self.edges[key].op_names if n not in ops]:
                    self.edges[key].remove(name)
            else:
                from_input = e.src in cell.inputs
                stride = 2 if cell.reduction and from_input else 1
                res = in_res if from_input else out_res
                self.edges[key] = MixedEdge(ops, self.channels, stride, res, self.gated, self.gate_kind).to(device)

        nodes = {str(n) for n in (*cell.nodes, cell.output)}
        for name in [n for n in self.node_bn if n not in nodes]:
            del self.node_bn[name]
        for name in sorted(nodes - set(self.node_bn)):
            self.node_bn[name] = nn.BatchNorm2d(self.channels).to(device)

        self.output = cell.output
        self.order = cell.topological_order()
        self.incoming = {n: [(e.src, edge_key(e.src, e.dst)) for e in cell.edges if e.dst == n] for n in self.order}

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        values = {int(i): adapter(inputs[int(i)]) for i, adapter in self.adapters.items()}
        for node in self.order:
            total = None
            for src, key in self.incoming[node]:
                y = self.edges[key](values[src])
                total = y if total is None else total + y
            values[node] = self.node_bn[str(node)](total)
        return values[self.output]


class CellNetwork(nn.Module):
    """Stem, densely connected cells and one head per cell; gated (supernet) or plain (discrete)."""

    def __init__(self, genome: Genome, gated: bool, gate_kind: str = "hard", drop_path: float = 0.0, edge_ops=None):
        super().__init__()
        self.genome = genome
        in_channels, c = genome.input_shape[0], genome.channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.cells = nn.ModuleList(
            CellModule(genome, k, gated, check_gate_kind(gate_kind), edge_ops) for k in range(len(genome.cells))
        )
        self.heads = nn.ModuleList(nn.Linear(genome.cell_channels(k), genome.num_classes) for k in range(len(genome.cells)))
        self.set_drop_path(drop_path)

    def mixed_edges(self) -> list[MixedEdge]:
        return [edge for cell in self.cells for edge in cell.edges.values()]

    def set_drop_path(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.drop_path_prob = p
        for edge in self.mixed_edges():
            edge.drop_prob = p

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every head (training uses all of them, evaluation the last)."""
        states = [self.stem(x)]
        logits = []
        for cell, head in zip(self.cells, self.heads):
            out = cell(states)
            states.append(out)
            logits.append(head(out.mean(dim=(2, 3))))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [self.stem(x)]
        for cell in self.cells:
            states.append(cell(states))
        return self.heads[-1](states[-1].mean(dim=(2, 3)))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class DiscreteNet(CellNetwork):
    """The searched network without gates: only the surviving operations, plain PyTorch modules."""

    def __init__(self, genome: Genome, edge_ops: EdgeOps | None = None, drop_path: float = 0.0):
        if edge_ops is None:
            edge_ops = {(k, e.src, e.dst): e.ops for k, cell in enumerate(genome.cells) for e in cell.edges}
        super().__init__(genome, gated=False, drop_path=drop_path, edge_ops=edge_ops)
        self.edge_ops = edge_ops


class SuperNet(CellNetwork):
    """A gated network that prunes itself (deadheading) and grows (edge splits)."""

    def __init__(self, genome: Genome, gate: str = "hard", drop_path: float = 0.0, window: int = 2):
        super().__init__(genome, gated=True, gate_kind=gate, drop_path=drop_path)
        self.gate_kind = gate
        self.window = window
        self.set_gate_scale(1.0)

    # -- gates ------------------------------------------------------------------------------
    def gate_parameters(self) -> list[nn.Parameter]:
        return [w for edge in self.mixed_edges() for w in edge.gate_weights.values()]

    def clamp_gates(self) -> None:
        with torch.no_grad():
            for w in self.gate_parameters():
                w.clamp_(-GATE_CLAMP, GATE_CLAMP)

    def set_gate_scale(self, scale: float) -> None:
        self.gate_scale = float(scale)
        for edge in self.mixed_edges():
            edge.gate_scale = self.gate_scale

    def anneal_gates(self, progress: float) -> None:
        """Sigmoid gates: move the scale along its geometric schedule (no effect on hard gates)."""
        self.set_gate_scale(annealed_scale(progress))

    def gate_pressure(self, cost: OpCost = param_cost, mu: float = 1.0, lam: float = 1e-4) -> torch.Tensor:
        return gate_pressure(self.mixed_edges(), cost, mu, lam)

    def open_ops(self) -> EdgeOps:
        return {
            (cell.index, e.src, e.dst): tuple(
                n for n in cell.edges[edge_key(e.src, e.dst)].op_names if cell.edges[edge_key(e.src, e.dst)].is_open(n)
            )
            for cell in self.cells
            for e in self.genome.cells[cell.index].edges
        }

    # -- deadheading ------------------------------------------------------------------------
    def end_epoch(self) -> None:
        """Close the epoch's gate-open counts into each op's rolling window."""
        for edge in self.mixed_edges():
            edge.end_epoch(self.window)

    def deadhead(self, threshold: float = DEADHEAD_THRESHOLD) -> list[tuple[int, int, int, str]]:
        """Delete ops open in fewer than ``threshold`` of the steps over a full window of epochs.

        Returns the deleted (cell, src, dst, op). A deletion that would disconnect a cell's output
        from every input is skipped, so the network always stays a network.
        """
        candidates = []
        for cell in self.cells:
            for key, edge in cell.edges.items():
                src, dst = map(int, key.split("_"))
                for name in edge.op_names:
                    if len(edge.history[name]) >= self.window and edge.open_fraction(name) < threshold:
                        candidates.append((edge.open_fraction(name), cell.index, src, dst, name))
        genome, removed = self.genome, []
        for _, k, src, dst, name in sorted(candidates):
            try:
                genome = genome.remove_op(k, src, dst, name)
            except GenomeError:
                continue  # this op is the cell's last path; keep it
            removed.append((k, src, dst, name))
        if removed:
            self.set_genome(genome)
        return removed

    # -- growth -----------------------------------------------------------------------------
    def apply_split(self, cell: int, src: int, dst: int) -> Genome:
        """Grow by splitting an edge; every existing tensor is kept as it is, new edges start open."""
        self.set_genome(self.genome.split_edge(cell, src, dst))
        return self.genome

    def set_genome(self, genome: Genome) -> None:
        """Move to a genome reachable by splits and removals: cells delete and build modules to match."""
        if (genome.reductions, genome.channels, genome.input_shape, genome.num_classes) != (
            self.genome.reductions,
            self.genome.channels,
            self.genome.input_shape,
            self.genome.num_classes,
        ):
            raise GenomeError("set_genome changes cells only; macro structure must stay the same")
        self.genome = genome
        for cell in self.cells:
            cell.sync(genome)
        self.set_drop_path(self.drop_path_prob)
        self.set_gate_scale(self.gate_scale)

    # -- export -----------------------------------------------------------------------------
    def discrete_genome(self) -> Genome:
        """The genome with closed ops removed (where that keeps the cell connected)."""
        genome = self.genome
        for (k, src, dst), ops in self.open_ops().items():
            for name in self.genome.cells[k].edge(src, dst).ops:
                if name not in ops:
                    try:
                        genome = genome.remove_op(k, src, dst, name)
                    except GenomeError:
                        pass
        return genome

    def to_discrete(self) -> DiscreteNet:
        """A plain network with only the open ops, giving the same outputs as this one in eval mode."""
        net = DiscreteNet(self.genome, self.open_ops(), drop_path=self.drop_path_prob)
        state = self.state_dict()
        net.load_state_dict({k: state[k] for k in net.state_dict()})
        device = next(self.parameters()).device
        return net.to(device).train(self.training)


def supernet_loss(head_logits: list[torch.Tensor], y: torch.Tensor, aux_weight: float = AUX_WEIGHT) -> torch.Tensor:
    """CE of the last head plus ``aux_weight`` times the CE of every other head."""
    loss = F.cross_entropy(head_logits[-1], y)
    for logits in head_logits[:-1]:
        loss = loss + aux_weight * F.cross_entropy(logits, y)
    return loss
