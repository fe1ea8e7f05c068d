"""Export a trained discrete network in the formats people deploy, each checked after a round trip.

    python -m spidernet_ray.export <checkpoint dir> [--out DIR] [--formats pt2 torchscript onnx]

What is exported is the eval-mode network returning the last head's logits (``CellNetwork.forward``)
for a batch of normalised images ``(N, C, H, W)``; the batch size is dynamic in every format.
Formats:

    model.pt2         torch.export.export + torch.export.save (load with torch.export.load(...).module())
    model.ts          TorchScript via torch.jit.trace (load with torch.jit.load)
    model.onnx        ONNX via torch.onnx.export(dynamo=True), only with the optional ``onnx`` extra
                      (onnx + onnxscript; onnxruntime is used for the check when present)

Every file is loaded back and run on a batch of another size than the one it was exported with;
its outputs must match the eager network's (``torch.allclose``), otherwise ``ExportError`` is raised
and the file removed. Missing ONNX packages skip that format with a message, they never fail.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spidernet_ray.checkpoint import CHECKPOINT_DIR, TRAINER_STATE_FILE, CheckpointError, load_checkpoint
from spidernet_ray.supernet import SuperNet

FORMATS = ("pt2", "torchscript", "onnx")
FILES = {"pt2": "model.pt2", "torchscript": "model.ts", "onnx": "model.onnx"}
ONNX_MISSING = "ONNX export skipped: it needs the packages onnx and onnxscript (pip install 'spidernet_ray[onnx]')"
RTOL, ATOL = 1e-4, 1e-5
EXPORT_BATCH, CHECK_BATCH = 2, 5  # the checked batch differs from the exported one: batch stays dynamic
MAX_BATCH = 65536
PREPROCESS_FILE = "preprocess.json"  # also the key of the copy stored inside each exported file


class ExportError(RuntimeError):
    """An exported file that cannot be written, read back, or does not reproduce the network."""


@dataclass(frozen=True)
class ExportResult:
    files: dict[str, Path]  # format -> file written and checked
    skipped: dict[str, str]  # format -> why it was not written
    max_abs_diff: dict[str, float]  # format -> largest |exported - eager| on the check batch


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript"))


def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy: BatchNorm uses running statistics, drop-path is off, the caller's model is untouched."""
    return copy.deepcopy(model).cpu().eval()


def export_model(
    model: nn.Module,
    directory: str | Path,
    input_shape: tuple[int, int, int] | None = None,
    formats: tuple[str, ...] = FORMATS,
    seed: int = 0,
    preprocess: dict | None = None,
) -> ExportResult:
    """Write ``model`` in each of ``formats`` into ``directory`` and check each file's outputs.

    ``input_shape`` (C, H, W) defaults to the network's genome. ``preprocess`` (``DataSplits.
    preprocessing()``: raw scale, mean/std, input shape, class names) travels inside every file
    (pt2 extra file, TorchScript ``_extra_files``, ONNX ``metadata_props``, all under the key
    ``preprocess.json``) and beside them as ``preprocess.json``, so a model can be fed without this
    package. Returns what was written and what was skipped (ONNX without its packages); raises
    ExportError when a written file does not give the network's outputs.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    if input_shape is None:
        input_shape = tuple(model.genome.input_shape)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    net = inference_copy(model)
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(EXPORT_BATCH, *input_shape, generator=generator)
    check = torch.randn(CHECK_BATCH, *input_shape, generator=generator)
    with torch.no_grad():
        expected = net(check)

    meta = json.dumps(preprocess, indent=1) if preprocess is not None else None
    if meta is not None:
        (directory / PREPROCESS_FILE).write_text(meta)
    files, skipped, diffs = {}, {}, {}
    for fmt in formats:
        if fmt == "onnx" and not onnx_available():
            skipped[fmt] = ONNX_MISSING
            continue
        path = directory / FILES[fmt]
        try:
            _WRITERS[fmt](net, example, path, meta)
            actual = _RUNNERS[fmt](path, check)
        except ExportError:
            path.unlink(missing_ok=True)
            raise
        except Exception as exc:  # exporters fail in many types; name the format and the cause
            path.unlink(missing_ok=True)
            raise ExportError(f"{fmt} export to {path} failed: {type(exc).__name__}: {exc}") from exc
        diff = float((actual - expected).abs().max()) if actual.shape == expected.shape else float("inf")
        if actual.shape != expected.shape or not torch.allclose(actual, expected, rtol=RTOL, atol=ATOL):
            path.unlink(missing_ok=True)
            raise ExportError(
                f"{fmt} export {path} does not reproduce the network: output {tuple(actual.shape)} vs "
                f"{tuple(expected.shape)}, max |diff| {diff:.3g} (rtol {RTOL}, atol {ATOL})"
            )
        files[fmt], diffs[fmt] = path, diff
    return ExportResult(files, skipped, diffs)


def _batch_dim() -> dict:
    return {"x": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}


# -- writers: (eval-mode net, example batch, path, preprocess JSON or None) -> None ---------------
def _extra(meta: str | None) -> dict[str, str]:
    return {PREPROCESS_FILE: meta} if meta is not None else {}


def _write_pt2(net: nn.Module, example: torch.Tensor, path: Path, meta: str | None) -> None:
    program = torch.export.export(net, (example,), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path), extra_files=_extra(meta))


def _write_torchscript(net: nn.Module, example: torch.Tensor, path: Path, meta: str | None) -> None:
    # Tracing is enough: the network's control flow depends on its genome, never on the data.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+.* is deprecated")
        torch.jit.save(torch.jit.trace(net, example), str(path), _extra_files=_extra(meta))


def _write_onnx(net: nn.Module, example: torch.Tensor, path: Path, meta: str | None) -> None:
    # The exporter logs a warning per torchvision operator it cannot register and warns about its own
    # internals; neither concerns a network without torchvision operators.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(net, (example,), str(path), input_names=["images"], output_names=["logits"],
                              dynamic_shapes=_batch_dim(), dynamo=True, external_data=False, verbose=False)
    finally:
        registration.setLevel(level)
    if meta is not None:
        import onnx

        proto = onnx.load(str(path))
        onnx.helper.set_model_props(proto, _extra(meta))
        onnx.save(proto, str(path))


def read_preprocess(path: str | Path) -> dict | None:
    """The preprocessing stored inside an exported file (None when it carries none)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        text = props.get(PREPROCESS_FILE)
    else:
        extra = {PREPROCESS_FILE: ""}
        if path.suffix == ".pt2":
            torch.export.load(str(path), extra_files=extra)
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+.* is deprecated")
                torch.jit.load(str(path), _extra_files=extra)
        text = extra[PREPROCESS_FILE]
    return json.loads(text) if text else None


# -- runners: (path, batch) -> logits, from the file alone ---------------------------------------
def _run_pt2(path: Path, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.export.load(str(path)).module()(x)


def _run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+.* is deprecated")
        return torch.jit.load(str(path))(x)


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    feed = x.numpy()
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: feed})[0]
    else:  # onnx's own reference interpreter: slow, but needs nothing more
        import onnx
        from onnx.reference import ReferenceEvaluator

        out = ReferenceEvaluator(onnx.load(str(path))).run(None, {"images": feed})[0]
    return torch.from_numpy(np.asarray(out))


_WRITERS = {"pt2": _write_pt2, "torchscript": _write_torchscript, "onnx": _write_onnx}
_RUNNERS = {"pt2": _run_pt2, "torchscript": _run_torchscript, "onnx": _run_onnx}


# -- command line -----------------------------------------------------------------------------------
def run_preprocessing(run_dir: Path, data_root: str | None = None) -> dict:
    """The preprocessing the run's members were trained with (its dataset, subset, split and seed)."""
    from spidernet_ray.config import read_run_config
    from spidernet_ray.data import load_dataset

    c = read_run_config(run_dir)
    splits = load_dataset(c.dataset, data_root if data_root is not None else c.data_root, seed=c.seed,
                          val_fraction=c.val_fraction, subset=c.subset)
    return splits.preprocessing()


def checkpoint_of_round(trial_dir: Path, round_: int | None, genome_hash: str | None) -> tuple[Path, str]:
    """The trial's checkpoint saved at ``round_`` holding the network ``genome_hash`` (its trainer state
    counts the rounds done), and a note that is empty unless Ray has since deleted it and the trial's
    latest checkpoint stands in."""
    found = sorted((p for p in trial_dir.glob("checkpoint_*") if CHECKPOINT_DIR.fullmatch(p.name)),
                   key=lambda p: int(CHECKPOINT_DIR.fullmatch(p.name).group(1)), reverse=True)
    if not found:
        raise CheckpointError(f"no checkpoint left in {trial_dir}")
    same_round = None
    for path in found:
        try:
            if json.loads((path / TRAINER_STATE_FILE).read_text()).get("rounds_done") != round_:
                continue
            same_round = same_round or path
            model = load_checkpoint(path)  # rows name a supernet by its discrete genome, as the trainable reports it
            if (model.discrete_genome() if isinstance(model, SuperNet) else model.genome).hash == genome_hash:
                return path, ""
        except (OSError, ValueError, CheckpointError):
            continue
    if same_round is not None:  # the row is an architecture snapshot taken inside the round
        return same_round, (f"{genome_hash} is a snapshot taken during round {round_}, whose weights were not "
                            f"kept; exported the network of that round's checkpoint ({same_round.name}) instead")
    return found[0], (f"the checkpoint of round {round_} is gone from {trial_dir}; exported the trial's "
                      f"latest ({found[0].name}), whose weights may differ from the front's row")


def _discrete(model: nn.Module) -> nn.Module:
    return model.to_discrete() if isinstance(model, SuperNet) else model


def chosen_checkpoints(run_dir: Path, which: str, genome: str | None) -> list[tuple[str, Path, str]]:
    """(genome hash, checkpoint directory, note) for ``--best``, ``--front`` or ``--genome HASH``:
    the checkpoint of exactly the round that was reported, or the trial's latest with a note when
    Ray has since deleted that one."""
    import pyarrow.parquet as pq

    from spidernet_ray.rundir import PARETO_FILE, TRIALS_FILE

    pareto = run_dir / PARETO_FILE
    if not pareto.is_file():
        raise CheckpointError(f"{run_dir} has no {PARETO_FILE}: the search has not finished (or is not a run)")
    rows = pq.read_table(pareto).to_pylist()  # best val accuracy first
    if which == "genome":
        pool = rows + (pq.read_table(run_dir / TRIALS_FILE).to_pylist() if (run_dir / TRIALS_FILE).is_file() else [])
        rows = sorted((r for r in pool if r.get("genome_hash") == genome),
                      key=lambda r: -(r.get("val_accuracy") or 0.0))[:1]
        if not rows:
            raise CheckpointError(f"no reported architecture has genome hash {genome!r} in {run_dir}")
    elif which == "best":
        rows = rows[:1]
    if not rows:
        raise CheckpointError(f"{run_dir / PARETO_FILE} is empty: no feasible architecture to export")
    chosen = []
    for row in rows:
        trial_dir = Path(row.get("trial_dir") or "")
        if not trial_dir.is_absolute():
            trial_dir = run_dir / trial_dir
        path, note = checkpoint_of_round(trial_dir, row.get("training_iteration"), row.get("genome_hash"))
        chosen.append((str(row.get("genome_hash")), path, note))
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spidernet_ray.export", description=__doc__.splitlines()[0])
    p.add_argument("path", help="a run directory (with --best, --front or --genome) or a checkpoint directory "
                                "(genome.json, weights.safetensors, network.json)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--best", action="store_true", help="the front's best val accuracy architecture")
    which.add_argument("--front", action="store_true", help="every architecture of pareto.parquet")
    which.add_argument("--genome", metavar="HASH", help="the architecture with this genome hash")
    p.add_argument("--out", help="where to write (default: RUN/export/<hash>/, or the checkpoint directory)")
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    p.add_argument("--data-root", help="default: the search's data root (for the preprocessing statistics)")
    args = p.parse_args(argv)
    source = Path(args.path).expanduser()
    which = "best" if args.best else "front" if args.front else "genome" if args.genome else None
    try:
        if which is not None:
            jobs = [(Path(args.out) / h if args.out and which == "front" else
                     Path(args.out) if args.out else source / "export" / h, ckpt, note)
                    for h, ckpt, note in chosen_checkpoints(source, which, args.genome)]
            preprocess = run_preprocessing(source, args.data_root)
        else:
            jobs = [(Path(args.out or source), source, "")]
            preprocess = _preprocess_beside(source, args.data_root)
    except Exception as exc:  # a bad run or checkpoint path, missing data: one line, exit 2
        print(f"spidernet_ray.export: error: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    if preprocess is None:
        print("note: no preprocess.json found: the exported files carry no preprocessing")
    for out, checkpoint, note in jobs:
        if note:
            print(f"note: {note}")
        try:
            model = _discrete(load_checkpoint(checkpoint))  # a search checkpoint: ship its discrete network
        except CheckpointError as exc:
            print(f"spidernet_ray.export: error: {exc}", file=sys.stderr)
            return 2
        try:
            result = export_model(model, out, formats=tuple(args.formats), preprocess=preprocess)
        except ExportError as exc:
            print(f"spidernet_ray.export: error: {exc}", file=sys.stderr)
            return 1
        print(f"{checkpoint} ->")
        for fmt, path in result.files.items():
            print(f"  {fmt}: {path.resolve()} (max |diff| {result.max_abs_diff[fmt]:.2g})")
        if preprocess is not None:
            print(f"  preprocessing: {(Path(out) / PREPROCESS_FILE).resolve()} (also inside each file)")
        for fmt, why in result.skipped.items():
            print(f"  {fmt}: {why}")
    return 0


def _preprocess_beside(checkpoint: Path, data_root: str | None) -> dict | None:
    """A checkpoint's preprocessing: its own preprocess.json (retrain writes one), else its run's
    (a search checkpoint sits at RUN/<trial>/checkpoint_N)."""
    if (checkpoint / PREPROCESS_FILE).is_file():
        return json.loads((checkpoint / PREPROCESS_FILE).read_text())
    from spidernet_ray.rundir import CONFIG_FILE

    for run_dir in checkpoint.resolve().parents[:3]:
        if (run_dir / CONFIG_FILE).is_file():
            return run_preprocessing(run_dir, data_root)
    return None


if __name__ == "__main__":
    sys.exit(main())
