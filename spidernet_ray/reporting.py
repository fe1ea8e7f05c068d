"""The run report: ``report.md`` in a run directory, with the figures it links under ``report/``
(``write_report``; the command line is ``python -m spidernet_ray.report``, and retrain refreshes it).

Reads what a search wrote (``trials.parquet``, ``pareto.parquet``, ``genealogy.parquet``,
``search_config.json``) and, when present, what ``spidernet_ray.retrain`` wrote
(``retrain/retrain.parquet``). Figures:

    report/front.png         val accuracy against latency, peak memory and parameters; the front highlighted
    report/progress.png      per round: hypervolume of the (val error, latency) front so far, best val accuracy
    report/lineage.png       every member's rounds as a lane; clones as arrows labelled with their mutation;
                             the ancestry of the best members highlighted
    report/arch_<k>_<hash>.png   a front architecture, one panel per cell: nodes and edges with surviving ops
    report/retrain.png       retrained networks: search val, retrained val and test accuracy; test accuracy vs cost

The test split appears only in the retrained section (it is measured once, after final training).
matplotlib (Agg backend) is imported only when figures are drawn. No Ray import.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from spidernet_ray.genome import Genome, GenomeError
from spidernet_ray.config import ConfigError, SearchConfig, read_run_config
from spidernet_ray.pareto import budget_violation
from spidernet_ray.record import decode
from spidernet_ray.results import (
    PANELS,
    chance_warning,
    format_front_check,
    format_front_table,
    format_number,
    hypervolume_of,
    num_classes_of,
    pareto_front,
    read_front_check,
    read_genealogy,
    plot_front,
    read_rows,
)
from spidernet_ray.rundir import (
    CONFIG_FILE,
    FIGURES_DIR,
    GENEALOGY_FILE,
    PARETO_FILE,
    REPORT_FILE,
    RETRAIN_DIR,
    RETRAIN_TABLE,
    TRIALS_FILE,
    atomic_write,
    atomic_write_text,
    is_finite_number,
)

DEFAULT_HV_LATENCY_MS = 20.0  # the reference latency unless a budget or slower rows call for another
MAX_ARCHITECTURES = 6  # front members drawn as cell graphs
HIGHLIGHTED_LINEAGES = 3  # best members whose ancestry the lineage figure highlights
DPI = 110
OP_ABBREVIATIONS = {
    "identity": "id", "max_pool_3x3": "max3", "avg_pool_3x3": "avg3", "sep_conv_3x3": "sep3",
    "sep_conv_5x5": "sep5", "dil_conv_3x3": "dil3", "dil_conv_5x5": "dil5",
}


class ReportError(ValueError):
    """A directory that holds no search results to report on."""


@dataclass
class RunData:
    """What the report reads from a run directory."""

    run_dir: Path
    rows: list[dict[str, Any]]
    front: list[dict[str, Any]]
    genealogy: list[dict[str, Any]]
    config: SearchConfig
    retrained: list[dict[str, Any]] = field(default_factory=list)

    @property
    def budgets(self) -> dict[str, float]:
        return self.config.budgets

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.config.objectives


def _parquet_rows(path: Path) -> list[dict[str, Any]] | None:
    return pq.read_table(path).to_pylist() if path.is_file() else None


def read_run(run_dir: str | os.PathLike) -> RunData:
    """The search's tables (recomputed from rows.jsonl where a parquet file is missing) and retrain rows."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"run directory {run_dir} does not exist")
    try:  # a run directory written before the config was saved reports under the defaults
        config = read_run_config(run_dir) if (run_dir / CONFIG_FILE).is_file() else SearchConfig()
    except ConfigError as exc:
        raise ReportError(str(exc)) from None
    rows = _parquet_rows(run_dir / TRIALS_FILE)
    if rows is None:
        rows = read_rows(run_dir)
    if not rows:
        raise ReportError(f"{run_dir} holds no search results ({TRIALS_FILE} or rows.jsonl)")
    data = RunData(run_dir, rows, [], [], config)
    front = _parquet_rows(run_dir / PARETO_FILE)
    data.front = front if front is not None else pareto_front(rows, data.objectives, data.budgets)
    genealogy = _parquet_rows(run_dir / GENEALOGY_FILE)
    data.genealogy = genealogy if genealogy is not None else read_genealogy(run_dir)
    data.retrained = _parquet_rows(run_dir / RETRAIN_DIR / RETRAIN_TABLE) or []
    return data


# -- numbers the figures and the text share -----------------------------------------------------------
def _round_of(row: Mapping[str, Any]) -> int | None:
    value = row.get("training_iteration")
    return int(value) if is_finite_number(value) else None


def _feasible(rows: Sequence[Mapping[str, Any]], budgets: Mapping[str, float]) -> list[Mapping[str, Any]]:
    return [r for r in rows if not r.get("diverged") and budget_violation(r, budgets) == 0]


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^k at or above ``value``."""
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * 10**exponent >= value:
            return float(step * 10**exponent)
    return float(10 ** (exponent + 1))  # pragma: no cover


def hv_reference(data: RunData, latency_ms: float | None = None) -> tuple[float, float]:
    """(val error, latency ms) reference of the hypervolume, fixed for the whole run.

    Given, else the latency budget, else 20 ms, raised to a round number above the slowest feasible
    row when some row is slower (so no row is silently left out of the area).
    """
    if latency_ms is not None:
        return 1.0, float(latency_ms)
    if "latency_ms" in data.budgets:
        return 1.0, data.budgets["latency_ms"]
    slowest = max((r["latency_ms"] for r in _feasible(data.rows, data.budgets) if is_finite_number(r.get("latency_ms"))),
                  default=0.0)
    if slowest < DEFAULT_HV_LATENCY_MS:
        return 1.0, DEFAULT_HV_LATENCY_MS
    return 1.0, _nice_ceiling(1.1 * slowest)


@dataclass(frozen=True)
class RoundStats:
    round: int
    rows: int
    best_val_accuracy: float  # best of this round's rows (nan when none is feasible)
    best_so_far: float  # best of every round up to this one
    median_val_accuracy: float
    hypervolume: float  # of the (val error, latency) front of every row up to this round


def progress_by_round(data: RunData, reference: tuple[float, float]) -> list[RoundStats]:
    rounds = sorted({r for r in map(_round_of, data.rows) if r is not None})
    feasible = _feasible(data.rows, data.budgets)
    stats, best_so_far = [], float("nan")
    for k in rounds:
        this = [r["val_accuracy"] for r in feasible if _round_of(r) == k and is_finite_number(r.get("val_accuracy"))]
        upto = [r for r in feasible if (_round_of(r) or 0) <= k]
        best = max(this, default=float("nan"))
        best_so_far = best if math.isnan(best_so_far) else max(best_so_far, best) if this else best_so_far
        hv = hypervolume_of(upto, ("max:val_accuracy", "min:latency_ms"), reference=reference, budgets=data.budgets)
        median = sorted(this)[len(this) // 2] if this else float("nan")
        stats.append(RoundStats(k, sum(1 for r in data.rows if _round_of(r) == k), best, best_so_far, median, hv))
    return stats


# -- lineage ------------------------------------------------------------------------------------------
Node = tuple[str, int]  # (trial id, round)


@dataclass
class Lineage:
    """Every reported (trial, round) and the node each one continues from."""

    nodes: dict[Node, dict[str, Any]]  # node -> its row (the last one reported for that trial and round)
    parent: dict[Node, Node]  # node -> the node it was trained from
    clone_label: dict[Node, str]  # node that started as a clone -> its mutation, in words
    # One (donor node, child node, mutation in words) per genealogy entry, oldest first: the clone arrows.
    clones: list[tuple[Node, Node, str]] = field(default_factory=list)

    def ancestors(self, node: Node) -> list[Node]:
        """``node`` and everything it descends from, newest first."""
        chain, seen = [node], {node}
        while chain[-1] in self.parent and self.parent[chain[-1]] not in seen:
            chain.append(self.parent[chain[-1]])
            seen.add(chain[-1])
        return chain


def describe_mutation(mutation: Any) -> str:
    """'split c1 0->3' for a clone that grew, 'add cell' or 'crossover with <trial>' for a macro
    mutation or crossover, 'clone, no split' for one that did not change."""
    if not isinstance(mutation, Mapping):
        mutation = decode({"mutation": mutation}, "mutation")
    chosen = (mutation or {}).get("chosen")
    if isinstance(chosen, str) and chosen:  # a registered cell mutation, chosen by cheap estimates
        return chosen.replace("_", " ")
    if chosen and len(chosen) == 3:
        return f"split c{chosen[0]} {chosen[1]}->{chosen[2]}"
    if (mutation or {}).get("applied"):  # a macro mutation or a crossover (search-space extensions)
        kind = str(mutation.get("kind", "")).replace("_", " ")
        return f"{kind} with {mutation.get('other', '')}" if kind == "crossover" else kind
    return "clone, no split"


def build_lineage(rows: Sequence[Mapping[str, Any]], genealogy: Sequence[Mapping[str, Any]]) -> Lineage:
    """Within a trial each round continues the one before, except a round that began as a clone:
    that one continues the donor's round the clone was taken at (from the genealogy)."""
    nodes: dict[Node, dict[str, Any]] = {}
    for row in rows:
        k = _round_of(row)
        if k is not None and row.get("trial_id"):
            nodes[(str(row["trial_id"]), k)] = dict(row)
    clone_round = {g.get("mutation_id"): g.get("round") for g in genealogy if g.get("mutation_id")}
    parent, labels = {}, {}
    by_trial: dict[str, list[int]] = {}
    for trial, k in sorted(nodes):
        by_trial.setdefault(trial, []).append(k)
    for (trial, k), row in nodes.items():
        info = decode(row, "mutation")
        donor = info.get("donor") or row.get("parent_trial") or ""
        if donor:
            donor_round = clone_round.get(info.get("id"))
            donor_rounds = [r for r in by_trial.get(donor, []) if r < k]
            if donor_round is None or (donor, donor_round) not in nodes:
                donor_round = max(donor_rounds, default=None)
            if donor_round is not None:
                parent[(trial, k)] = (donor, donor_round)
                labels[(trial, k)] = describe_mutation(info)
                continue
        earlier = [r for r in by_trial[trial] if r < k]
        if earlier:
            parent[(trial, k)] = (trial, max(earlier))
    # The genealogy is the record of every clone: each entry is one arrow from the donor's round to the
    # child's next round, labelled with the genealogy's own mutation kind. A row may miss a clone (a
    # member cloned again before it reported) or carry another clone's mutation; the genealogy does not.
    clones = []
    for g in sorted(genealogy, key=lambda g: g.get("time") or 0.0):
        child, donor, k = g.get("child"), g.get("donor"), g.get("round")
        if not child or not donor or k is None:
            continue
        donor_node = (str(donor), int(k))
        child_node = (str(child), min((r for r in by_trial.get(str(child), []) if r > k), default=int(k) + 1))
        kind = str(g.get("mutation_kind") or "clone").replace("_", " ")
        detail = labels.get(child_node, "")
        same = decode(nodes.get(child_node, {}), "mutation").get("id") == g.get("mutation_id")
        label = detail if same and detail.startswith(kind) else kind
        for node in (donor_node, child_node):
            nodes.setdefault(node, {})  # a round nobody reported: drawn hollow
        parent[child_node], labels[child_node] = donor_node, label
        clones.append((donor_node, child_node, label))
    return Lineage(nodes, parent, labels, clones)


def lineage_arrows(lineage: Lineage) -> list[tuple[Node, Node, str | None]]:
    """What the lineage figure draws: (from, to, mutation label or None for training on) per arrow."""
    cloned = {child for _, child, _ in lineage.clones}
    arrows: list[tuple[Node, Node, str | None]] = [
        (parent, child, None) for child, parent in sorted(lineage.parent.items())
        if child not in cloned and child in lineage.nodes and parent in lineage.nodes
    ]
    if lineage.clones:
        return arrows + list(lineage.clones)
    # Without genealogy (an old run): the clones read from the rows.
    return [(p, c, lineage.clone_label.get(c)) for c, p in sorted(lineage.parent.items())
            if c in lineage.nodes and p in lineage.nodes]


def best_lineages(data: RunData, lineage: Lineage, count: int = HIGHLIGHTED_LINEAGES) -> list[tuple[int, Node]]:
    """(front rank, node) of the best front members whose ancestry is not already part of a better
    one's: the lineages worth drawing, ``count`` at most."""
    chosen, covered = [], set()
    for rank, entry in enumerate(data.front, start=1):
        k = _round_of(entry)
        node = (str(entry.get("trial_id") or ""), k)
        if k is None or node not in lineage.nodes or node in covered:
            continue
        chosen.append((rank, node))
        covered.update(lineage.ancestors(node))
        if len(chosen) == count:
            break
    return chosen


# -- figures ------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
    _pyplot().close(figure)
    return path


_FRONT_PANELS = (*PANELS, ("params", "parameters"))


def plot_progress(stats: Sequence[RoundStats], reference: tuple[float, float], path: Path) -> Path:
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    rounds = [s.round for s in stats]
    left.plot(rounds, [s.hypervolume for s in stats], marker="o", color="tab:purple")
    left.set_title(f"hypervolume of the (val error, latency) front so far\nreference: error {reference[0]:g}, "
                   f"latency {reference[1]:g} ms", fontsize=10)
    left.set_ylabel("hypervolume (error x ms)")
    right.plot(rounds, [100 * s.best_val_accuracy for s in stats], marker="o", label="best of the round")
    right.plot(rounds, [100 * s.best_so_far for s in stats], linestyle="--", color="tab:green", label="best so far")
    right.plot(rounds, [100 * s.median_val_accuracy for s in stats], marker=".", color="0.55",
               label="median of the round")
    right.set_title("validation accuracy per round (feasible rows)", fontsize=10)
    right.set_ylabel("validation accuracy (%)")
    right.legend(loc="lower right", fontsize=9)
    for axis in (left, right):
        axis.set_xlabel("round (training_iteration)")
        axis.set_xticks(rounds)
        axis.grid(True, alpha=0.3)
    return _save(figure, path)


def plot_lineage(data: RunData, lineage: Lineage, path: Path) -> Path:
    """One lane per trial, one column per round; arrows from each node to the next, clones in colour."""
    plt = _pyplot()
    from matplotlib.patches import FancyArrowPatch

    trials = sorted({t for t, _ in lineage.nodes})
    rounds = sorted({k for _, k in lineage.nodes})
    lane = {t: i for i, t in enumerate(trials)}
    highlight: dict[Node, str] = {}
    colours = ("tab:orange", "tab:green", "tab:purple")
    best = best_lineages(data, lineage)
    for (_, node), colour in reversed(list(zip(best, colours))):  # the best member's colour wins shared ancestors
        for ancestor in lineage.ancestors(node):
            highlight[ancestor] = colour
    width = max(8.0, 1.5 * len(rounds) + 5)
    height = max(3.0, 0.75 * len(trials) + 1.8)
    figure, axis = plt.subplots(figsize=(width, height), constrained_layout=True)

    def where(node: Node) -> tuple[float, float]:
        return node[1], lane[node[0]]

    for parent, child, label in lineage_arrows(lineage):
        on_path = highlight.get(child) is not None and highlight.get(parent) is not None
        clone = label is not None
        colour = highlight[child] if on_path else ("tab:red" if clone else "0.6")
        arrow = FancyArrowPatch(where(parent), where(child), arrowstyle="-|>", mutation_scale=12,
                                color=colour, linewidth=2.2 if on_path else 1.0, alpha=1.0 if on_path else 0.6,
                                linestyle="-" if not clone else "--", shrinkA=8, shrinkB=8,
                                connectionstyle="arc3,rad=0.0", zorder=2)
        axis.add_patch(arrow)
        if clone:
            # Near the child, so labels of arrows crossing the same lane do not land on each other.
            (x0, y0), (x1, y1) = where(parent), where(child)
            axis.annotate(label, (x0 + 0.62 * (x1 - x0), y0 + 0.62 * (y1 - y0)), fontsize=8,
                          ha="center",
                          va="center", color=colour if on_path else "tab:red",
                          bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85}, zorder=5)
    for node, row in lineage.nodes.items():
        x, y = where(node)
        colour = highlight.get(node, "0.75") if row else "white"  # hollow: a round nobody reported
        axis.scatter([x], [y], s=140 if node in highlight else 70, color=colour, edgecolors="black",
                     linewidths=0.5, zorder=3)
        if is_finite_number(row.get("val_accuracy")):
            axis.annotate(f"{100 * row['val_accuracy']:.0f}%", (x, y), xytext=(0, 9), textcoords="offset points",
                          ha="center", fontsize=8, color="black" if node in highlight else "0.45")
    for (rank, node), colour in zip(best, colours):
        x, y = where(node)
        axis.annotate(f"#{rank}", (x, y), xytext=(0, -11), textcoords="offset points", fontsize=9,
                      ha="center", va="top", fontweight="bold", color=colour)
    axis.set_yticks(range(len(trials)), trials)
    axis.set_xticks(rounds)
    axis.set_xlim(min(rounds) - 0.6, max(rounds) + 0.6)
    axis.set_ylim(-0.7, len(trials) - 0.3)
    axis.invert_yaxis()
    axis.set_xlabel("round (training_iteration)")
    axis.set_ylabel("trial")
    axis.grid(True, axis="x", alpha=0.25)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.6", label="trained on (same trial)"),
               Line2D([], [], color="tab:red", linestyle="--", label="clone of a donor + mutation")]
    handles += [Line2D([], [], color=colour, linewidth=2.2, marker="o", label=f"ancestry of #{rank}")
                for (rank, _), colour in zip(best, colours)]
    axis.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axis.set_title("Lineage of the best front members (#k: rank on the front; numbers: val accuracy of the round)",
                   fontsize=10)
    return _save(figure, path)


def _cell_layout(genome: Genome, index: int) -> dict[int, tuple[float, float]]:
    """Inputs in a column on the left, the output on the right, internal nodes by longest path from an input."""
    cell = genome.cells[index]
    depth = {i: 0 for i in cell.inputs}
    for node in cell.topological_order():
        depth[node] = 1 + max((depth[e.src] for e in cell.edges if e.dst == node), default=0)
    last = max(depth.values())
    depth[cell.output] = last
    columns: dict[int, list[int]] = {}
    for node in sorted(depth):
        columns.setdefault(depth[node], []).append(node)
    position = {}
    for column, members in columns.items():
        for row, node in enumerate(members):
            position[node] = (float(column), (len(members) - 1) / 2 - row)
    return position


def _node_name(genome: Genome, index: int, node: int) -> str:
    cell = genome.cells[index]
    if node == cell.output:
        return "out"
    if node in cell.inputs:
        return "stem" if node == 0 else f"cell {node - 1}"
    return str(node)


def _ops_label(ops: Sequence[str]) -> str:
    names = [OP_ABBREVIATIONS.get(op, op) for op in ops]
    return "\n".join(textwrap.wrap(" ".join(names), width=15)) or "(none)"


def _edge_path(start: tuple[float, float], end: tuple[float, float], bend: float, gap: float = 0.13):
    """A straight segment, or a quadratic curve bowing ``bend`` below the chord (in data units), with
    ``gap`` cut off both ends so the arrowhead stops at the node's edge instead of under it.
    Returns the path and the point in its middle (where the label goes)."""
    from matplotlib.path import Path as MplPath

    def towards(a, b, distance):
        length = math.dist(a, b) or 1.0
        return (a[0] + (b[0] - a[0]) * distance / length, a[1] + (b[1] - a[1]) * distance / length)

    (x0, y0), (x1, y1) = start, end
    if not bend:
        points = [towards(start, end, gap), towards(end, start, gap)]
        return MplPath(points, [MplPath.MOVETO, MplPath.LINETO]), ((x0 + x1) / 2, (y0 + y1) / 2)
    control = ((x0 + x1) / 2, (y0 + y1) / 2 - 2 * bend)  # the curve's middle lies halfway to the control point
    points = [towards(start, control, gap), control, towards(end, control, gap)]
    return MplPath(points, [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3]), ((x0 + x1) / 2, (y0 + y1) / 2 - bend)


def plot_architecture(genome: Genome, path: Path, title: str) -> Path:
    plt = _pyplot()
    from matplotlib.patches import FancyArrowPatch

    panels = len(genome.cells)
    layouts = [_cell_layout(genome, k) for k in range(panels)]
    widths = [max(x for x, _ in layout.values()) + 1 for layout in layouts]
    heights = [max(y for _, y in layout.values()) - min(y for _, y in layout.values()) + 1.6 for layout in layouts]
    # One cell under the other: side by side, a three-cell network made a picture too wide to read.
    figure, axes = plt.subplots(panels, 1, figsize=(max(6.0, 1.7 * max(widths)), 1.1 * sum(heights) + 1.2),
                                constrained_layout=True, squeeze=False, gridspec_kw={"height_ratios": heights})
    for k, (axis, position) in enumerate(zip(axes[:, 0], layouts)):
        cell = genome.cells[k]
        low = min(y for _, y in position.values())
        high = max(y for _, y in position.values())
        skipping = 0
        for e in cell.edges:
            (x0, y0), (x1, y1) = position[e.src], position[e.dst]
            # An edge skipping a column along a row bows around the nodes in between: the first below,
            # the next above, and so on, so two of them ending at the same node do not run together.
            bend = 0.0
            if abs(y1 - y0) < 0.01 and abs(x1 - x0) > 1:
                bend = (0.35 * (abs(x1 - x0) - 1) ** 0.5 + 0.15) * (1 if skipping % 2 == 0 else -1)
                skipping += 1
            edge, middle = _edge_path((x0, y0), (x1, y1), bend)
            axis.add_patch(FancyArrowPatch(path=edge, arrowstyle="-|>", mutation_scale=11, color="0.35",
                                           linewidth=1.0, zorder=1))
            low, high = min(low, middle[1]), max(high, middle[1])
            axis.annotate(_ops_label(e.ops), middle, ha="center", va="center", fontsize=10, zorder=3,
                          bbox={"boxstyle": "round,pad=0.25", "fc": "#fff8e1", "ec": "0.7", "lw": 0.5})
        for node, (x, y) in position.items():
            kind = "input" if node in cell.inputs else "output" if node == cell.output else "inner"
            colour = {"input": "#bbdefb", "output": "#c8e6c9", "inner": "white"}[kind]
            axis.annotate(_node_name(genome, k, node), (x, y), ha="center", va="center", fontsize=10.5, zorder=4,
                          bbox={"boxstyle": "circle,pad=0.3" if kind == "inner" else "round,pad=0.35",
                                "fc": colour, "ec": "0.2"})
        xs = [x for x, _ in position.values()]
        axis.set_xlim(min(xs) - 0.45, max(xs) + 0.45)
        axis.set_ylim(low - 0.45, high + 0.45)
        axis.set_axis_off()
        kind = "reduction" if cell.reduction else "normal"
        h, w = genome.cell_resolution(k)
        axis.set_title(f"cell {k}: {kind}, {genome.cell_channels(k)} channels, {h}x{w}", fontsize=11)
    legend = ", ".join(f"{short} = {name}" for name, short in OP_ABBREVIATIONS.items())
    columns = int(figure.get_figwidth() * 11)  # characters of 9.5 pt type across the figure, roughly
    figure.suptitle("\n".join(textwrap.wrap(f"{title}", columns) + textwrap.wrap(legend, columns)), fontsize=9.5)
    return _save(figure, path)


def plot_retrained(retrained: Sequence[Mapping[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    rows = [r for r in retrained if is_finite_number(r.get("test_accuracy"))] or list(retrained)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6), constrained_layout=True)
    labels = [str(r["genome_hash"])[:8] for r in rows]
    series = (("search_val_accuracy", "search val (supernet)", "0.6"),
              ("val_accuracy", "retrained val", "tab:blue"),
              ("test_accuracy", "retrained test", "tab:orange"))
    width = 0.8 / len(series)
    for i, (key, name, colour) in enumerate(series):
        values = [100 * r[key] if is_finite_number(r.get(key)) else 0.0 for r in rows]
        bars = left.bar([j + (i - 1) * width for j in range(len(rows))], values, width, label=name, color=colour)
        left.bar_label(bars, fmt="%.1f", fontsize=7.5, padding=2)
    finite = [100 * r[k] for r in rows for k, _, _ in series if is_finite_number(r.get(k))]
    # Bars start at 0 unless every accuracy is high, where a zoom shows the differences that matter.
    low = 0.0 if min(finite, default=0.0) < 60 else 10 * math.floor((min(finite) - 5) / 10)
    left.set_ylim(low, min(100.0, max(finite, default=100.0)) + 7)
    left.set_xlim(-0.75, len(rows) - 0.25)  # one architecture still gets bars of a normal width
    left.set_xticks(range(len(rows)), labels, rotation=20 if len(rows) > 4 else 0, fontsize=8)
    left.set_ylabel("accuracy (%)")
    left.set_title(f"accuracy by architecture ({rows[0].get('epochs') if rows else '?'} epochs from scratch)",
                   fontsize=10)
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8, frameon=False)
    left.grid(True, axis="y", alpha=0.3)
    points = [(r["latency_ms"], 100 * r["test_accuracy"], r) for r in rows
              if is_finite_number(r.get("latency_ms")) and is_finite_number(r.get("test_accuracy"))]
    right.scatter([p[0] for p in points], [p[1] for p in points], s=60, color="tab:orange", edgecolors="black",
                  linewidths=0.5)
    for x, y, r in points:
        params = f"{r['params'] / 1000:.1f}k params" if is_finite_number(r.get("params")) else ""
        right.annotate(f"{str(r['genome_hash'])[:8]}\n{params}", (x, y), xytext=(6, 0), textcoords="offset points",
                       fontsize=8, va="center")
    right.set_xlabel("inference latency (ms, measured after retraining)")
    right.set_ylabel("test accuracy (%)")
    right.set_title("test accuracy against latency", fontsize=10)
    right.grid(True, alpha=0.3)
    if points:
        xs = [p[0] for p in points]
        span = (max(xs) - min(xs)) or max(xs) * 0.2 or 1.0
        right.set_xlim(min(xs) - 0.15 * span, max(xs) + 0.45 * span)
    figure.suptitle("Retrained from scratch (test split used only here)")
    return _save(figure, path)


# -- the document ---------------------------------------------------------------------------------------
RETRAIN_TABLE_HEADER = (
    "| genome hash | from trial (round) | search val acc (%) | epochs | val acc (%) | test acc (%) | params | "
    "latency (ms) | peak mem (MB) | train time (s) | s/epoch | device | note |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
)


def format_retrain_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of retrained architectures (test accuracy on the official test split)."""
    if not rows:
        return "(nothing retrained yet)"
    lines = [RETRAIN_TABLE_HEADER]
    for r in rows:
        source = f"{r.get('source_trial') or '?'} ({r['source_round'] if r.get('source_round') is not None else '?'})"
        lines.append("| " + " | ".join([
            f"`{r['genome_hash']}`", source, format_number(r.get("search_val_accuracy"), ".2f", 100), str(r.get("epochs")),
            format_number(r.get("val_accuracy"), ".2f", 100), format_number(r.get("test_accuracy"), ".2f", 100),
            format_number(r.get("params"), ",d"),
            format_number(r.get("latency_ms"), ".3f"), format_number(r.get("peak_memory_mb"), ".1f"),
            format_number(r.get("train_seconds"), ".0f"), format_number(r.get("seconds_per_epoch"), ".1f"),
            str(r.get("device") or ""), (r.get("error") or "").replace("|", "/")[:80],
        ]) + " |")
    return "\n".join(lines)


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}" if is_finite_number(value) else "n/a"


def _lineage_text(data: RunData, lineage: Lineage) -> list[str]:
    lines = []
    for rank, node in best_lineages(data, lineage):
        chain = ""
        for ancestor in reversed(lineage.ancestors(node)):
            label = lineage.clone_label.get(ancestor)
            step = f"{ancestor[0]} r{ancestor[1]}"
            chain += step if not chain else f" =[{label}]=> {step}" if label else f" -> {step}"
        lines.append(f"- front #{rank}, `{node[0]}` round {node[1]}: {chain}")
    return lines


def _architecture_name(rank: int, entry: Mapping[str, Any]) -> str:
    return f"arch_{rank}_{entry.get('genome_hash') or 'unknown'}.png"


def write_report(run_dir: str | os.PathLike, hv_latency_ms: float | None = None,
                 max_architectures: int = MAX_ARCHITECTURES) -> Path:
    """Draw every figure into ``<run dir>/report/`` and write ``<run dir>/report.md``; returns its path."""
    data = read_run(run_dir)
    figures = data.run_dir / FIGURES_DIR
    figures.mkdir(exist_ok=True)
    reference = hv_reference(data, hv_latency_ms)
    stats = progress_by_round(data, reference)
    lineage = build_lineage(data.rows, data.genealogy)
    c = data.config
    name = c.name or data.run_dir.name

    plot_front(data.rows, data.front, figures / "front.png", title="Search", budgets=data.budgets,
               panels=_FRONT_PANELS)
    plot_progress(stats, reference, figures / "progress.png")
    plot_lineage(data, lineage, figures / "lineage.png")
    architectures = []
    for rank, entry in enumerate(data.front[:max_architectures], start=1):
        try:
            genome = Genome.from_json(entry["genome"])
        except (GenomeError, KeyError, TypeError):
            continue
        title = (f"front #{rank}: {entry.get('genome_hash')} (trial {entry.get('trial_id')}, round "
                 f"{entry.get('training_iteration')}), val acc {_pct(entry.get('val_accuracy'))} %, "
                 f"{entry.get('params') or 0:,} params, {genome.ops_alive()} ops")
        architectures.append((rank, entry, plot_architecture(genome, figures / _architecture_name(rank, entry), title)))
    if data.retrained:
        plot_retrained(data.retrained, figures / "retrain.png")

    budgets = ", ".join(f"{k} <= {v:g}" for k, v in data.budgets.items()) or "none"
    trials = len({r.get("trial_id") for r in data.rows})
    best_accuracy = max((r["val_accuracy"] for r in data.rows if is_finite_number(r.get("val_accuracy"))), default=None)
    warning = chance_warning(best_accuracy, num_classes_of(data.rows))
    lines = [
        f"# Run report: {name}",
        "",
        f"- dataset: {c.dataset}"
        + (f" (subset of {c.subset:,} training examples)" if c.subset else "")
        + f", validation fraction {c.val_fraction}, seed {c.seed}",
        f"- search ({c.strategy}): population {c.population}, {c.rounds} rounds x "
        f"{c.epochs_per_round} epoch(s), {c.reductions} reduction cells, "
        f"{c.channels} initial channels, batch {c.batch_size}",
        f"- objectives: {', '.join(data.objectives)}; budgets: {budgets}",
        f"- {len(data.rows)} reported rows from {trials} trials, "
        f"{len({r.get('genome_hash') for r in data.rows if r.get('genome_hash')})} distinct architectures, "
        f"{len(data.genealogy)} clone(s) of a donor with a mutation",
        "",
        "Selection used only the validation split carved from the training data; the test split appears "
        "only in the retrained section.",
        "",
        *([f"> **{warning}**", ""] if warning else []),
        f"## Pareto front ({len(data.front)} architectures, best val accuracy first)",
        "",
        format_front_table(data.front),
        "",
        f"![front]({FIGURES_DIR}/front.png)",
        "",
        "## Search progress",
        "",
        f"Hypervolume of the (val error, latency) front of every feasible row up to each round, from "
        f"`results.hypervolume_of` with the fixed reference **val error {reference[0]:g}, latency "
        f"{reference[1]:g} ms** (larger is better; comparable only between runs with the same reference).",
        "",
        "| round | rows | best val acc (%) | best so far (%) | median val acc (%) | hypervolume (error x ms) |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {s.round} | {s.rows} | {_pct(s.best_val_accuracy)} | {_pct(s.best_so_far)} | "
          f"{_pct(s.median_val_accuracy)} | {s.hypervolume:.4g} |" for s in stats],
        "",
        f"![progress]({FIGURES_DIR}/progress.png)",
        "",
        "## Lineage of the best members",
        "",
        *(_lineage_text(data, lineage) or ["(no front member to trace)"]),
        "",
        f"![lineage]({FIGURES_DIR}/lineage.png)",
        "",
        f"## Architectures of the front (best {len(architectures)} by val accuracy)",
        "",
    ]
    for rank, entry, path in architectures:
        lines += [f"### #{rank} `{entry.get('genome_hash')}`", "",
                  f"![architecture {rank}]({FIGURES_DIR}/{path.name})", ""]
    check = read_front_check(data.run_dir)
    if check:
        lines += [format_front_check(check), ""]
    lines += ["## Retrained from scratch", ""]
    if data.retrained:
        first = data.retrained[0]
        lines += [
            f"Each architecture trained from fresh weights for {first.get('epochs')} epochs on "
            f"{first.get('train_examples', 0):,} training examples (SGD momentum {first.get('momentum')}, cosine "
            f"schedule from lr {first.get('lr')}, weight decay {first.get('weight_decay')}, batch "
            f"{first.get('batch_size')}); test accuracy on {first.get('test_examples', 0):,} test examples, "
            "measured once after training. Latency and memory were measured again after retraining.",
            "",
            format_retrain_table(data.retrained),
            "",
            f"![retrained]({FIGURES_DIR}/retrain.png)",
            "",
        ]
    else:
        lines += [f"Nothing retrained yet: `python -m spidernet_ray.retrain {data.run_dir} --front --epochs 30`.", ""]
    return atomic_write_text(data.run_dir / REPORT_FILE, "\n".join(lines))
