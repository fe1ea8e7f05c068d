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
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spidernet_ray.checkpoint import CheckpointError, load_checkpoint
from spidernet_ray.supernet import SuperNet

FORMATS = ("pt2", "torchscript", "onnx")
FILES = {"pt2": "model.pt2", "torchscript": "model.ts", "onnx": "model.onnx"}
ONNX_MISSING = "ONNX export skipped: it needs the packages onnx and onnxscript (pip install 'spidernet_ray[onnx]')"
RTOL, ATOL = 1e-4, 1e-5
EXPORT_BATCH, CHECK_BATCH = 2, 5  # the checked batch differs from the exported one: batch stays dynamic
MAX_BATCH = 65536


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
) -> ExportResult:
    """Write ``model`` in each of ``formats`` into ``directory`` and check each file's outputs.

    ``input_shape`` (C, H, W) defaults to the network's genome. Returns what was written and what
    was skipped (ONNX without its packages); raises ExportError when a written file does not give
    the network's outputs.
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

    files, skipped, diffs = {}, {}, {}
    for fmt in formats:
        if fmt == "onnx" and not onnx_available():
            skipped[fmt] = ONNX_MISSING
            continue
        path = directory / FILES[fmt]
        try:
            _WRITERS[fmt](net, example, path)
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


# -- writers: (eval-mode net, example batch, path) -> None ----------------------------------------
def _write_pt2(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    program = torch.export.export(net, (example,), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path))


def _write_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    # Tracing is enough: the network's control flow depends on its genome, never on the data.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+.* is deprecated")
        torch.jit.save(torch.jit.trace(net, example), str(path))


def _write_onnx(net: nn.Module, example: torch.Tensor, path: Path) -> None:
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
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spidernet_ray.export", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a checkpoint directory (genome.json, weights.safetensors, network.json)")
    p.add_argument("--out", help="where to write the exported files (default: the checkpoint directory)")
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    args = p.parse_args(argv)
    try:
        model = load_checkpoint(args.checkpoint)
        if isinstance(model, SuperNet):  # a search checkpoint: ship the network it stands for
            model = model.to_discrete()
    except CheckpointError as exc:
        print(f"spidernet_ray.export: error: {exc}", file=sys.stderr)
        return 2
    try:
        result = export_model(model, args.out or args.checkpoint, formats=tuple(args.formats))
    except ExportError as exc:
        print(f"spidernet_ray.export: error: {exc}", file=sys.stderr)
        return 1
    for fmt, path in result.files.items():
        print(f"{fmt}: {path} (max |diff| {result.max_abs_diff[fmt]:.2g})")
    for fmt, why in result.skipped.items():
        print(f"{fmt}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
