"""Write the small exported models that the test suite uses without torch.

* ``tests/data/torch/<name>_<exporter>.onnx``: small versions (8–16 channels, L of
  200–300) of ToyNet, BPNet4, Basset and BPNet9, each exported with the TorchScript
  exporter (opset 17) and the dynamo exporter (opset 18), checked against torch with ONNX
  Runtime; ``tests/data/torch/manifest.json`` records how each file was made.
* ``models/tiny_cnn.onnx``: the example model from
  :func:`yuzu_onnx.testing.model_builders.build_tiny_cnn` (no torch involved).

Usage: ``python tools/export_test_models.py [--data-dir DIR] [--models-dir DIR]``.
Needs torch and onnxscript (for the dynamo exporter).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch_models  # noqa: E402  (a sibling script, not a package)

# name → (architecture, options of the small version)
SMALL_MODELS: dict[str, tuple[str, dict]] = {
    "toynet": ("toynet", {"seq_len": 200, "n_filters": 8}),
    "bpnet4": ("bpnet4", {"seq_len": 200, "n_filters": 8}),
    "basset": (
        "basset",
        {"seq_len": 300, "channels": (16, 12, 12), "hidden": (32, 32), "n_outputs": 164},
    ),
    "bpnet9": ("bpnet9", {"seq_len": 300, "n_filters": 8, "out_len": 200}),
}
MAX_FILE_BYTES = 300_000
MAX_TOTAL_BYTES = 2_000_000
TINY_CNN_SEQ_LEN = 200


def _output_shapes(path: Path, seq_len: int) -> dict[str, list[int]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch_models.random_onehot(1, seq_len)
    names = [o.name for o in session.get_outputs()]
    return {n: ["batch", *y.shape[1:]] for n, y in zip(names, session.run(names, {"x": x}), strict=True)}


def export_small_models(data_dir: Path) -> list[dict]:
    """Export every small model with both exporters; return the manifest entries."""
    data_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, (arch, options) in SMALL_MODELS.items():
        module = torch_models.build(arch, seed=0, **options)
        seq_len = options["seq_len"]
        for exporter in torch_models.EXPORTERS:
            path = data_dir / f"{name}_{exporter}.onnx"
            torch_models.export(module, path, seq_len=seq_len, exporter=exporter, verify=False)
            error = torch_models.verify_export(module, path, seq_len=seq_len)
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise RuntimeError(f"{path} is {size} bytes, over the {MAX_FILE_BYTES} limit")
            entries.append(
                {
                    "file": path.name,
                    "architecture": arch,
                    "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
                    "seq_len": seq_len,
                    "layout": "ncl",
                    "exporter": exporter,
                    "opset": torch_models.DEFAULT_OPSET[exporter],
                    "outputs": _output_shapes(path, seq_len),
                    "max_relative_error_vs_torch": float(f"{error:.3g}"),
                    "bytes": size,
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                }
            )
            print(f"wrote {path} ({size / 1e3:.1f} kB, relative error vs torch {error:.1e})")
    total = sum(e["bytes"] for e in entries)
    if total > MAX_TOTAL_BYTES:
        raise RuntimeError(f"the exported models total {total} bytes, over {MAX_TOTAL_BYTES}")
    return entries


def write_tiny_cnn(models_dir: Path) -> Path:
    """Write ``models/tiny_cnn.onnx`` from the onnx.helper builder."""
    from yuzu_onnx.testing.model_builders import build_tiny_cnn

    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / "tiny_cnn.onnx"
    model = build_tiny_cnn(layout="ncl", seq_len=TINY_CNN_SEQ_LEN, seed=0)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    print(f"wrote {path} ({path.stat().st_size / 1e3:.1f} kB)")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "tests" / "data" / "torch")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    args = parser.parse_args(argv)
    import torch

    entries = export_small_models(args.data_dir)
    manifest = {
        "generated_by": "tools/export_test_models.py",
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "input": {"name": "x", "shape": ["batch", 4, "seq_len"], "dtype": "float32"},
        "models": entries,
    }
    (args.data_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    write_tiny_cnn(args.models_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
