"""The supernet: a network built from a genome whose operations carry pruning gates.

Macro structure (DESIGN.md): stem conv, then R+1 densely connected cells (cell 0 normal at C
channels, each later cell a reduction cell doubling channels and halving resolution), one
classifier head per cell. Training loss = CE(last head) + 0.4 * sum CE(other heads).

The module tree mirrors the genome: ``cells[k].edges["src_dst"].ops[name]``. Deadheading deletes
modules for real and growth adds new ones next to the untouched old ones, so a network and its
genome always agree and surviving tensors are inherited bit for bit.

Channel search (``channel_search=True``, off by default): every narrowable op (``ops.WIDTH_SITES``)
also carries one scaled-sigmoid gate per hidden channel, annealed with the op gates' scale;
``SuperNet.shrink_channels`` rebuilds ops with only the channels still open (their widths go into the
genome), and ``to_discrete`` exports only the channels open at the hard threshold.
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
    channel_pressure,
    check_gate_kind,
    gate_pressure,
    gate_value,
    param_cost,
)
from spidernet_ray.genome import Genome, GenomeError
from spidernet_ray.ops import WIDTH_SITES, Subsample, build_op, forward_with_channel_gate, hidden_width, narrow_op

AUX_WEIGHT = 0.4
DEADHEAD_THRESHOLD = 0.25
NO_DROP_PATH = frozenset({"identity"})
CHANNEL_DROP = 0.01  # shrink_channels removes a hidden channel whose training-time gate is below this

EdgeOps = dict[tuple[int, int, int], tuple[str, ...]]  # (cell, src, dst) -> op names
ChannelKeep = dict[tuple[int, int, int, str], list[int]]  # (cell, src, dst, op) -> hidden channels kept


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole samples with probability p, rescaling the rest (stochastic depth per op)."""
    keep = 1.0 - p
    mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep)
    return x * mask / keep


def edge_key(src: int, dst: int) -> str:
    return f"{src}_{dst}"


class MixedEdge(nn.Module):
    """Sum over candidate operations, each multiplied by its gate (when gated)."""

    def __init__(self, op_names, channels: int, stride: int, resolution: tuple[int, int], gated: bool, gate_kind: str,
                 widths: dict[str, int] | None = None, channel_search: bool = False):
        super().__init__()
        self.channels, self.stride, self.resolution = channels, stride, tuple(resolution)
        self.gated, self.gate_kind = gated, gate_kind
        self.drop_prob = 0.0
        self.gate_scale = 1.0
        widths = widths or {}
        self.ops = nn.ModuleDict({name: build_op(name, channels, stride, widths.get(name)) for name in op_names})
        if gated:
            self.gate_weights = nn.ParameterDict({name: nn.Parameter(torch.tensor(GATE_INIT)) for name in op_names})
            if channel_search:
                self.channel_gates = nn.ParameterDict({
                    name: nn.Parameter(torch.full((hidden_width(name, op),), GATE_INIT))
                    for name, op in self.ops.items() if name in WIDTH_SITES
                })
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

    def channel_gate(self, name: str) -> torch.Tensor:
        """Channel search: scaled sigmoid per hidden channel in training, the hard threshold in evaluation."""
        return gate_value(self.channel_gates[name], "sigmoid", self.gate_scale, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counting = self.gated and self.training and torch.is_grad_enabled()
        if counting:
            self.steps += 1
        channel_gated = getattr(self, "channel_gates", {})
        out = None
        for name, op in self.ops.items():
            y = forward_with_channel_gate(name, op, x, self.channel_gate(name)) if name in channel_gated else op(x)
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

    def add(self, name: str) -> None:
        """Growth: a new open op whose last BatchNorm (when it has one) starts at zero, so the edge
        computes what it did until training moves that BatchNorm."""
        device = next(self.parameters(), torch.empty(0)).device
        self.ops[name] = op = build_op(name, self.channels, self.stride).to(device)
        silence(op)
        if self.gated:
            self.gate_weights[name] = nn.Parameter(torch.tensor(GATE_INIT, device=device))
            self.history[name] = deque()
            if hasattr(self, "channel_gates") and name in WIDTH_SITES:
                self.channel_gates[name] = nn.Parameter(torch.full((hidden_width(name, op),), GATE_INIT, device=device))

    def remove(self, name: str) -> None:
        del self.ops[name]
        if self.gated:
            del self.gate_weights[name]
            self.open_steps.pop(name, None)
            del self.history[name]
            if name in getattr(self, "channel_gates", {}):
                del self.channel_gates[name]

    def narrow(self, name: str, keep: list[int]) -> None:
        """Rebuild op ``name`` with only the hidden channels ``keep``, copying their weights (and gates).

        With ``keep`` empty one channel stays: the most open one, whose own gate keeps it shut, or in
        a network without gates channel 0 made silent (the op then outputs what it did fully shut).
        """
        gates = getattr(self, "channel_gates", {})
        silent = not keep
        if silent:
            keep, silent = ([int(gates[name].detach().argmax())], False) if name in gates else ([0], True)
        self.ops[name] = narrow_op(name, self.ops[name], self.channels, self.stride, keep, silent)
        if name in gates:
            self.channel_gates[name] = nn.Parameter(gates[name].detach()[sorted(keep)].clone())


class CellModule(nn.Module):
    """One cell: input adapters, gated mixed edges and a BatchNorm per node, evaluated in topological order."""

    def __init__(self, genome: Genome, index: int, gated: bool, gate_kind: str, edge_ops: EdgeOps | None = None,
                 channel_search: bool = False):
        super().__init__()
        self.index, self.gated, self.gate_kind = index, gated, gate_kind
        self.channel_search = channel_search
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
                for name in [n for n in ops if n not in self.edges[key].op_names]:
                    self.edges[key].add(name)
            else:
                from_input = e.src in cell.inputs
                stride = 2 if cell.reduction and from_input else 1
                res = in_res if from_input else out_res
                self.edges[key] = MixedEdge(ops, self.channels, stride, res, self.gated, self.gate_kind,
                                            dict(e.widths), self.channel_search).to(device)

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

    def __init__(self, genome: Genome, gated: bool, gate_kind: str = "hard", drop_path: float = 0.0, edge_ops=None,
                 channel_search: bool = False):
        super().__init__()
        self.genome = genome
        self.channel_search = channel_search
        in_channels, c = genome.input_shape[0], genome.channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.cells = nn.ModuleList(
            CellModule(genome, k, gated, check_gate_kind(gate_kind), edge_ops, channel_search)
            for k in range(len(genome.cells))
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

    def narrow_channels(self, keep: ChannelKeep) -> int:
        """Channel search: rebuild each (cell, src, dst, op) with only its hidden channels ``keep``; the
        genome records the new widths. Returns how many channels were removed."""
        removed, widths = 0, {}
        for (k, src, dst, name), channels in keep.items():
            edge = self.cells[k].edges[edge_key(src, dst)]
            width = hidden_width(name, edge.ops[name])
            if len(channels) < width or not channels:
                edge.narrow(name, channels)
                widths[(k, src, dst, name)] = max(len(channels), 1)
                removed += width - widths[(k, src, dst, name)]
        if widths:
            self.genome = self.genome.with_widths(widths)
        return removed


class DiscreteNet(CellNetwork):
    """The searched network without gates: only the surviving operations, plain PyTorch modules."""

    def __init__(self, genome: Genome, edge_ops: EdgeOps | None = None, drop_path: float = 0.0):
        if edge_ops is None:
            edge_ops = {(k, e.src, e.dst): e.ops for k, cell in enumerate(genome.cells) for e in cell.edges}
        super().__init__(genome, gated=False, drop_path=drop_path, edge_ops=edge_ops)
        self.edge_ops = edge_ops


class SuperNet(CellNetwork):
    """A gated network that prunes itself (deadheading) and grows (edge splits)."""

    def __init__(self, genome: Genome, gate: str = "hard", drop_path: float = 0.0, window: int = 2,
                 channel_search: bool = False):
        super().__init__(genome, gated=True, gate_kind=gate, drop_path=drop_path, channel_search=channel_search)
        self.gate_kind = gate
        self.window = window
        self.set_gate_scale(1.0)

    # -- gates ------------------------------------------------------------------------------
    def gate_parameters(self) -> list[nn.Parameter]:
        """Op gates, then (channel search) the channel gates."""
        ops = [w for edge in self.mixed_edges() for w in edge.gate_weights.values()]
        return ops + [w for edge in self.mixed_edges() for w in getattr(edge, "channel_gates", {}).values()]

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
        pressure = gate_pressure(self.mixed_edges(), cost, mu, lam)
        if self.channel_search:
            pressure = pressure + channel_pressure(self.mixed_edges(), cost, mu, lam)
        return pressure

    def open_ops(self) -> EdgeOps:
        return {
            (cell.index, e.src, e.dst): tuple(
                n for n in cell.edges[edge_key(e.src, e.dst)].op_names if cell.edges[edge_key(e.src, e.dst)].is_open(n)
            )
            for cell in self.cells
            for e in self.genome.cells[cell.index].edges
        }

    # -- channel search ---------------------------------------------------------------------
    def open_channels(self, hard: bool = True) -> ChannelKeep:
        """Per channel-gated op, the hidden channels open: gate weight > 0 (``hard``, what evaluation
        sees), else a training-time gate of at least CHANNEL_DROP (possibly none)."""
        keep = {}
        for cell in self.cells:
            for key, edge in cell.edges.items():
                src, dst = map(int, key.split("_"))
                for name, w in getattr(edge, "channel_gates", {}).items():
                    w = w.detach()
                    opened = w > 0 if hard else torch.sigmoid(edge.gate_scale * w) >= CHANNEL_DROP
                    keep[(cell.index, src, dst, name)] = torch.nonzero(opened).flatten().tolist()
        return keep

    def shrink_channels(self, hard: bool = False) -> int:
        """Remove, for real, the hidden channels whose gates are shut (see ``open_channels``); their
        weights go with them and the genome records the narrower widths. Returns channels removed."""
        return self.narrow_channels(self.open_channels(hard))

    # -- deadheading ------------------------------------------------------------------------
    def end_epoch(self) -> None:
        """Close the epoch's gate-open counts into each op's rolling window."""
        for edge in self.mixed_edges():
            edge.end_epoch(self.window)

    def deadhead(self, threshold: float = DEADHEAD_THRESHOLD,
                 limit: int | None = None) -> list[tuple[int, int, int, str]]:
        """Delete ops open in fewer than ``threshold`` of the steps over a full window of epochs.

        Returns the deleted (cell, src, dst, op). A deletion that would disconnect a cell's output
        from every input is skipped, so the network always stays a network. ``limit`` (gradual
        pruning) deletes at most that many, those open least often first.
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
            if limit is not None and len(removed) >= limit:
                break
            try:
                genome = genome.remove_op(k, src, dst, name)
            except GenomeError:
                continue  # this op is the cell's last path; keep it
            removed.append((k, src, dst, name))
        if removed:
            self.set_genome(genome)
        return removed

    # -- growth -----------------------------------------------------------------------------
    def apply_split(self, cell: int, src: int, dst: int, ops: tuple[str, ...] | None = None) -> Genome:
        """Grow by splitting an edge; every existing tensor is kept as it is, new edges start open."""
        self.set_genome(self.genome.split_edge(cell, src, dst, ops))
        return self.genome

    def set_genome(self, genome: Genome) -> None:
        """Move to a genome reachable by the cell mutations: cells delete and build modules to match.

        A new internal node's BatchNorm starts at zero (weight and bias), so a new path adds nothing
        until training moves it: right after growth the network computes exactly what it did.
        """
        if (genome.reductions, genome.channels, genome.input_shape, genome.num_classes) != (
            self.genome.reductions,
            self.genome.channels,
            self.genome.input_shape,
            self.genome.num_classes,
        ):
            raise GenomeError("set_genome changes cells only; macro structure must stay the same")
        old = self.genome
        self.genome = genome
        for cell in self.cells:
            known = set(old.cells[cell.index].nodes)
            cell.sync(genome)
            for node in set(genome.cells[cell.index].nodes) - known:
                silence(cell.node_bn[str(node)])
        self.set_drop_path(self.drop_path_prob)
        self.set_gate_scale(self.gate_scale)

    # -- export -----------------------------------------------------------------------------
    def discrete_genome(self) -> Genome:
        """The genome with closed ops removed (where that keeps the cell connected) and, with channel
        search, the widths of the channels open."""
        genome = self.genome
        for (k, src, dst), ops in self.open_ops().items():
            for name in self.genome.cells[k].edge(src, dst).ops:
                if name not in ops:
                    try:
                        genome = genome.remove_op(k, src, dst, name)
                    except GenomeError:
                        pass
        if self.channel_search:
            widths = {}
            for (k, src, dst, name), channels in self.open_channels().items():
                edge = next((e for e in genome.cells[k].edges if e.key == (src, dst)), None)
                if edge is not None and name in edge.ops:  # the op survived the removals above
                    widths[(k, src, dst, name)] = max(len(channels), 1)
            genome = genome.with_widths(widths)
        return genome

    def to_discrete(self) -> DiscreteNet:
        """A plain network with only the open ops (and open channels), giving the same outputs as this
        one in eval mode."""
        net = DiscreteNet(self.genome, self.open_ops(), drop_path=self.drop_path_prob)
        state = self.state_dict()
        net.load_state_dict({k: state[k] for k in net.state_dict()})
        if self.channel_search:
            ops = net.edge_ops
            net.narrow_channels({key: keep for key, keep in self.open_channels().items() if key[3] in ops[key[:3]]})
        device = next(self.parameters()).device
        return net.to(device).train(self.training)


def silence(module: nn.Module) -> bool:
    """Zero the affine weight and bias of the module's last BatchNorm, so its output starts at zero
    (growth that keeps the parent's function). False when it has none."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d) and m.affine]
    if not norms:
        return False
    with torch.no_grad():
        norms[-1].weight.zero_()
        norms[-1].bias.zero_()
    return True


def inherit_weights(model: nn.Module, state: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> tuple[int, int]:
    """Copy into ``model`` every tensor of ``state`` whose name and shape match one of its own, except
    names starting with a ``skip`` prefix; the rest keep their fresh initialisation (macro mutations
    and crossover). Returns (tensors inherited, tensors left fresh)."""
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith(skip)}
    model.load_state_dict(matched, strict=False)
    return len(matched), len(own) - len(matched)


def supernet_loss(head_logits: list[torch.Tensor], y: torch.Tensor, aux_weight: float = AUX_WEIGHT) -> torch.Tensor:
    """CE of the last head plus ``aux_weight`` times the CE of every other head."""
    loss = F.cross_entropy(head_logits[-1], y)
    for logits in head_logits[:-1]:
        loss = loss + aux_weight * F.cross_entropy(logits, y)
    return loss
