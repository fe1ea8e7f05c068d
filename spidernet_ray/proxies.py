"""Train-free proxies and the choice of an edge split (growth) that they drive.

Two proxies, computed on small-width copies of a network with fresh random weights:

- NTK condition number kappa = lambda_max / lambda_min of the Gram matrix J J^T, where row i of J is
  the gradient of sample i's summed logits with respect to the network's weights (TE-NAS). Lower is
  better conditioned. A (numerically) singular Gram matrix scores ``KAPPA_CAP``.
- Linear-region count (LRC): distinct on/off patterns of every ReLU over a set of inputs. A random
  scatter of inputs lands in a different region every time (thousands of ReLUs carve input space
  finely), so the count would just equal the sample count. We count instead over a dense grid on a
  small 2-D patch of input space (a slice through an anchor input, as Hanin & Rolnick do), which
  measures how finely the network partitions that patch. The patch side is fitted once on the
  parent so its count sits well below the grid size, and every candidate child is counted on the
  very same grid, so the counts compare.

Both need BatchNorm to normalise without making a sample's output depend on its batch: running
statistics are set to the statistics of the sample batch, then the network runs in eval mode (a
fixed piecewise-linear function).

Split scoring (DESIGN.md "Growth"): for each initialisation the parent is built once and each child
is the parent with the split applied (same weights on everything they share), so a delta measures
the split itself rather than two unrelated draws. delta_kappa <= 0 and delta_LRC > 0 make a candidate
valid; valid candidates are min-max normalised on -delta_kappa and delta_LRC and the best mean wins.
A winner whose real-width network breaks the latency or memory budget is refused and the next best
valid candidate is tried.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from spidernet_ray.genome import Genome
from spidernet_ray.hardware import measure_latency, measure_peak_memory
from spidernet_ray.supernet import DiscreteNet, SuperNet
from spidernet_ray.train import TRAINING_LAYOUT

Split = tuple[int, int, int]  # (cell, src, dst)

KAPPA_CAP = 1e12  # kappa of a Gram matrix whose smallest eigenvalue is below lambda_max / KAPPA_CAP
PATCH_START = 0.005  # first patch half-side tried, in units of a typical input's norm
PATCH_STEPS = 8  # at most this many tries to fit the patch
# Default proxy sizes (config keys proxy_inits, proxy_samples, proxy_grid): see choose_split.
N_INITS, NTK_SAMPLES, LRC_SIDE = 1, 32, 16


# -- network preparation ------------------------------------------------------------------------
def calibrate_batchnorm(model: nn.Module, inputs: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``inputs``; leave the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    model.train()
    with torch.no_grad():
        model(inputs)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


# -- NTK condition number -----------------------------------------------------------------------
def ntk_condition_number(model: nn.Module, inputs: torch.Tensor) -> float:
    """lambda_max / lambda_min of the empirical NTK over ``inputs`` (model in eval mode).

    The Jacobian covers the network's weights; gate weights are architecture parameters, left out
    as TE-NAS leaves out its architecture parameters.
    """
    gates = {id(p) for p in model.gate_parameters()} if isinstance(model, SuperNet) else set()
    weights = {name: p.detach() for name, p in model.named_parameters() if id(p) not in gates}
    fixed = {name: p.detach() for name, p in model.named_parameters() if id(p) in gates}
    fixed.update((name, b.detach()) for name, b in model.named_buffers())

    def summed_logits(w, x):
        return functional_call(model, (w, fixed), (x.unsqueeze(0),)).sum()

    grads = vmap(grad(summed_logits), in_dims=(None, 0))(weights, inputs)
    jacobian = torch.cat([g.reshape(len(inputs), -1) for g in grads.values()], dim=1).double()
    eigenvalues = torch.linalg.eigvalsh(jacobian @ jacobian.T)
    largest, smallest = eigenvalues[-1].item(), eigenvalues[0].item()
    if largest <= 0 or smallest <= largest / KAPPA_CAP:
        return KAPPA_CAP
    return largest / smallest


# -- linear regions -----------------------------------------------------------------------------
def linear_region_count(model: nn.Module, inputs: torch.Tensor) -> int:
    """Number of distinct ReLU activation patterns over ``inputs`` (a network without ReLUs has one)."""
    packed = []

    def record(_module, _inputs, output):
        # One bit per unit, eight units per byte: patterns of wide layers stay small.
        packed.append(np.packbits((output > 0).flatten(1).cpu().numpy(), axis=1))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    if not packed:
        return 1
    patterns = np.concatenate(packed, axis=1)
    return len({row.tobytes() for row in patterns})


def patch_directions(anchor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Two orthonormal directions in input space, scaled to the norm of a unit-variance input."""
    size = anchor.numel()
    u, v = torch.randn(2, size, generator=generator, device=anchor.device)
    u = u / u.norm()
    v = v - (v @ u) * u
    return torch.stack([u, v / v.norm()]) * math.sqrt(size)


def patch_grid(anchor: torch.Tensor, directions: torch.Tensor, half_side: float, side: int) -> torch.Tensor:
    """``side`` x ``side`` inputs evenly covering the square anchor +- half_side along both directions."""
    steps = torch.linspace(-half_side, half_side, side, device=anchor.device)
    a, b = torch.meshgrid(steps, steps, indexing="ij")
    offsets = a.reshape(-1, 1) * directions[0] + b.reshape(-1, 1) * directions[1]
    return (anchor.reshape(1, -1) + offsets).reshape(-1, *anchor.shape)


def fit_patch(model: nn.Module, anchor: torch.Tensor, directions: torch.Tensor, side: int) -> float:
    """A patch half-side on which ``model`` shows between 1/8 and 1/2 as many regions as grid points.

    Below saturation the count grows about in proportion to the half-side (boundaries cross the
    patch as lines), so an unsaturated count is scaled straight to a quarter of the grid; a
    saturated one shrinks the patch fourfold. A network without ReLUs keeps its single region.
    """
    points = side * side
    half_side = PATCH_START
    for _ in range(PATCH_STEPS):
        count = linear_region_count(model, patch_grid(anchor, directions, half_side, side))
        if points / 8 <= count <= points / 2 or count <= 1:
            break
        if count >= 0.9 * points:
            half_side /= 4
        else:
            half_side *= (points / 4) / count
    return half_side


# -- proxies of a parent and its candidate children ---------------------------------------------
@dataclass(frozen=True)
class ProxyScores:
    kappa: float  # mean over initialisations
    lrc: float  # mean over initialisations
    seconds: float  # compute time of these proxies, all initialisations together


@dataclass
class _Tally:
    kappas: list = field(default_factory=list)
    lrcs: list = field(default_factory=list)
    seconds: float = 0.0

    def add(self, model: nn.Module, batch: torch.Tensor, grid: torch.Tensor, started: float) -> None:
        """Proxies of a calibrated ``model``; ``started`` is when work on it began."""
        self.kappas.append(ntk_condition_number(model, batch))
        self.lrcs.append(linear_region_count(model, grid))
        self.seconds += time.perf_counter() - started

    def scores(self) -> ProxyScores:
        return ProxyScores(float(np.mean(self.kappas)), float(np.mean(self.lrcs)), self.seconds)


def proxy_batch(
    genome: Genome, samples: int, generator: torch.Generator, device: torch.device, inputs: torch.Tensor | None
) -> torch.Tensor:
    """``samples`` inputs: a random subset of the real ``inputs`` when given, else unit normal noise."""
    if inputs is None:
        return torch.randn(samples, *genome.input_shape, generator=generator, device=device)
    order = torch.randperm(len(inputs), generator=generator, device=device)[:samples]
    return inputs[order.to(inputs.device)].to(device)


def score_splits(
    genome: Genome,
    splits: list[Split],
    *,
    channels: int = 4,
    n_inits: int = N_INITS,
    ntk_samples: int = NTK_SAMPLES,
    lrc_side: int = LRC_SIDE,
    seed: int = 0,
    inputs: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> tuple[ProxyScores, list[ProxyScores]]:
    """Proxies of the parent and of each split child at width ``channels``, averaged over inits.

    ``ntk_samples`` inputs (real ``inputs`` when given, else noise) feed the NTK and calibrate
    BatchNorm; the LRC counts an ``lrc_side`` x ``lrc_side`` grid on a patch around one of them.
    """
    device = torch.device(device)
    small = genome.with_channels(channels)
    parent, children = _Tally(), [_Tally() for _ in splits]
    for init in range(n_inits):
        generator = torch.Generator(device=device).manual_seed(seed * 1000 + init)
        batch = proxy_batch(genome, ntk_samples, generator, device, inputs)
        directions = patch_directions(batch[0], generator)
        with torch.random.fork_rng(devices=_cuda_indices(device)):
            torch.manual_seed(seed * 1000 + init)
            started = time.perf_counter()
            base = SuperNet(small).to(device)
            calibrate_batchnorm(base, batch)
            grid = patch_grid(batch[0], directions, fit_patch(base, batch[0], directions, lrc_side), lrc_side)
            parent.add(base, batch, grid, started)
            for index, (split, tally) in enumerate(zip(splits, children)):
                torch.manual_seed(seed * 1000 + init + 7919 * (index + 1))  # the split's fresh edges
                started = time.perf_counter()
                # The child is the parent grown in place (cheaper than a copy); the split is undone
                # after scoring. Calibration resets every BatchNorm, so no child sees another's statistics.
                base.apply_split(*split)
                calibrate_batchnorm(base, batch)
                tally.add(base, batch, grid, started)
                base.set_genome(small)
    return parent.scores(), [tally.scores() for tally in children]


def _cuda_indices(device: torch.device) -> list[int]:
    """The CUDA device whose random state ``fork_rng`` must save (none on CPU)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def score_genome(genome: Genome, **settings) -> ProxyScores:
    """Proxies of one genome alone (its patch fitted on itself; ``score_splits`` settings apply)."""
    parent, _ = score_splits(genome, [], **settings)
    return parent


# -- choosing a split ---------------------------------------------------------------------------
def sample_splits(genome: Genome, per_cell: int, seed: int = 0) -> list[Split]:
    """Up to ``per_cell`` edges of every cell, drawn at random (seeded)."""
    rng = random.Random(seed)
    splits = []
    for cell in range(len(genome.cells)):
        edges = genome.candidate_splits(cell)
        splits += [(cell, src, dst) for src, dst in sorted(rng.sample(edges, min(per_cell, len(edges))))]
    return splits


def _min_max(values: list[float]) -> list[float]:
    low, high = min(values), max(values)
    if high == low:
        return [1.0] * len(values)  # all equal: all share the best normalised value
    return [(v - low) / (high - low) for v in values]


def rank_candidates(splits: list[Split], parent: ProxyScores, children: list[ProxyScores]) -> list[dict]:
    """Per-candidate deltas, validity and score; valid ones first, best score first."""
    candidates = []
    for (cell, src, dst), child in zip(splits, children):
        delta_kappa, delta_lrc = child.kappa - parent.kappa, child.lrc - parent.lrc
        candidates.append(
            {
                "cell": cell,
                "src": src,
                "dst": dst,
                "kappa": child.kappa,
                "lrc": child.lrc,
                "delta_kappa": delta_kappa,
                "delta_lrc": delta_lrc,
                # Conditioning must not worsen and expressivity must rise.
                "valid": delta_kappa <= 0 and delta_lrc > 0,
                "score": None,
                "proxy_seconds": child.seconds,
            }
        )
    valid = [c for c in candidates if c["valid"]]
    if valid:
        better_kappa = _min_max([-c["delta_kappa"] for c in valid])  # lower kappa is better
        more_regions = _min_max([c["delta_lrc"] for c in valid])
        for c, k, r in zip(valid, better_kappa, more_regions):
            c["score"] = (k + r) / 2
    return sorted(candidates, key=lambda c: (not c["valid"], -(c["score"] or 0.0)))


@dataclass
class SplitDecision:
    chosen: Split | None
    child_genome: Genome | None
    candidates: list[dict]
    refused_for_budget: int
    reason: str
    seconds: float
    parent_kappa: float
    parent_lrc: float

    def to_dict(self) -> dict:
        data = asdict(self)
        data["child_genome"] = None if self.child_genome is None else self.child_genome.to_dict()
        return data


def budget_metrics(
    genome: Genome,
    *,
    batch_size: int,
    device: torch.device | str,
    latency_budget_ms: float | None,
    memory_budget_mb: float | None,
    latency_batch_size: int = 1,
) -> dict:
    """The budgeted metrics of ``genome`` at its real width (only those with a budget).

    Measured on the discrete network with every op of the genome, the kind of network whose
    metrics a trial reports and the budgets judge.
    """
    model = DiscreteNet(genome).to(device, memory_format=TRAINING_LAYOUT)
    metrics = {}
    if latency_budget_ms is not None:
        metrics["latency_ms"], _ = measure_latency(model, genome.input_shape, latency_batch_size, device)
    if memory_budget_mb is not None:
        metrics["peak_memory_mb"], metrics["memory_method"] = measure_peak_memory(
            model, genome.input_shape, batch_size, device, disposable=True
        )
    return metrics


def within_budget(metrics: dict, latency_budget_ms: float | None, memory_budget_mb: float | None) -> bool:
    if latency_budget_ms is not None and metrics["latency_ms"] > latency_budget_ms:
        return False
    if memory_budget_mb is not None and metrics["peak_memory_mb"] > memory_budget_mb:
        return False
    return True


def choose_split(
    genome: Genome,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    latency_budget_ms: float | None = None,
    memory_budget_mb: float | None = None,
    latency_batch_size: int = 1,
    candidates_per_cell: int = 2,
    seed: int = 0,
    proxy_channels: int = 4,
    n_inits: int = N_INITS,
    ntk_samples: int = NTK_SAMPLES,
    lrc_side: int = LRC_SIDE,
    inputs: torch.Tensor | None = None,
) -> SplitDecision:
    """Score a few candidate splits per cell and pick the best valid one that fits the budgets.

    Proxies run at width ``proxy_channels``; the budget check measures the child at the genome's
    real width (see ``budget_metrics``): peak training memory at ``batch_size``, inference latency
    at ``latency_batch_size``.
    ``chosen`` is None when no candidate is valid or every valid one breaks a budget.

    The defaults keep a call for the digits network near 2 s on one CPU core (it runs inside a
    member's exploit, on the member's CPU): one initialisation, 32 NTK samples and a 16 x 16 LRC
    grid, two candidates per cell. The earlier defaults (two initialisations, 64 samples, 24 x 24)
    took about 7 s; DESIGN.md's ~200 samples and ~1000 grid points about twice that.
    benchmarks/proxy_quality.py compares the sizes.
    """
    started = time.perf_counter()
    splits = sample_splits(genome, candidates_per_cell, seed)
    parent, children = score_splits(
        genome,
        splits,
        channels=proxy_channels,
        n_inits=n_inits,
        ntk_samples=ntk_samples,
        lrc_side=lrc_side,
        seed=seed,
        inputs=inputs,
        device=device,
    )
    candidates = rank_candidates(splits, parent, children)
    valid = [c for c in candidates if c["valid"]]
    chosen, refused = None, 0
    for c in valid:  # best first
        if latency_budget_ms is not None or memory_budget_mb is not None:
            c["metrics"] = budget_metrics(
                genome.split_edge(c["cell"], c["src"], c["dst"]),
                batch_size=batch_size,
                device=device,
                latency_budget_ms=latency_budget_ms,
                memory_budget_mb=memory_budget_mb,
                latency_batch_size=latency_batch_size,
            )
            c["fits_budget"] = within_budget(c["metrics"], latency_budget_ms, memory_budget_mb)
            if not c["fits_budget"]:
                refused += 1
                continue
        chosen = c
        break
    split = None if chosen is None else (chosen["cell"], chosen["src"], chosen["dst"])
    return SplitDecision(
        chosen=split,
        child_genome=None if split is None else genome.split_edge(*split),
        candidates=candidates,
        refused_for_budget=refused,
        reason=_reason(chosen, len(candidates), len(valid), refused),
        seconds=time.perf_counter() - started,
        parent_kappa=parent.kappa,
        parent_lrc=parent.lrc,
    )


def _reason(chosen: dict | None, n_candidates: int, n_valid: int, refused: int) -> str:
    if n_valid == 0:
        return f"no valid candidate among {n_candidates} (none keeps kappa from rising while adding regions)"
    if chosen is None:
        return f"all {n_valid} valid candidates break the budget"
    skipped = f" after refusing {refused} over budget" if refused else ""
    return (
        f"split cell {chosen['cell']} edge {chosen['src']}->{chosen['dst']} "
        f"(score {chosen['score']:.3f}, best of {n_valid} valid){skipped}"
    )
