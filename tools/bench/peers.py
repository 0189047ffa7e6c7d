"""Other ISM tools compared against (``--peers``): tangermeme and the original Yuzu.

Each peer runs on the PyTorch module the ONNX file was exported from
(``tools/torch_models.py``, same seed) and on the same sequences. A peer that raises or
returns NaN is a result, never an abort.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable

import numpy as np

from .errors import BenchError
from .measurements import job_window, load_sequences, phase, save_arrays, timed_runs
from .models import load_torch_models

Peer = Callable[[dict], dict]


def torch_setup(job: dict):
    """``(torch, module, device)``: torch with the benchmark's thread count, and the seeded module of the export."""
    try:
        import torch
    except ImportError:
        raise BenchError("torch is not installed (pip install torch)") from None
    torch.set_num_threads(job["threads"])
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(1)
    model = job["model"]
    if not model.get("arch"):
        raise BenchError("peers need the PyTorch module; this model is an ONNX file only")
    tm = load_torch_models()
    phase("building the PyTorch model")
    module = tm.build(model["arch"], seed=job["model_seed"], seq_len=model["seq_len"], **model.get("options", {}))
    device = "cuda" if job["device"] == "cuda" else "cpu"
    return torch, module, device


def _always_try_fast_path(sm, used_fast: list[bool]) -> str:
    """Make tangermeme try fastISM on every job and record in ``used_fast`` whether it did."""
    # tangermeme only tries fastISM on jobs that would take over 30 s with fast=False;
    # the benchmark always tries it, and records whether it was used
    sm._FAST_MIN_SECONDS = 0.0
    decide = sm._fast_path

    def recording_fast_path(*args, **kwargs):
        out = decide(*args, **kwargs)
        used_fast.append(out[0] is not None)
        return out

    sm._fast_path = recording_fast_path
    return ("fastISM attempted on every job (tangermeme's 30 s minimum lowered to 0); each call "
            "captures and verifies the model again, and that time is included")


def _tangermeme(job: dict, *, fast: bool) -> dict:
    try:
        from tangermeme import saturation_mutagenesis as sm
    except ImportError:
        raise BenchError("tangermeme is not installed (pip install tangermeme)") from None
    torch, module, device = torch_setup(job)
    saturation_mutagenesis = sm.saturation_mutagenesis
    used_fast: list[bool] = []
    notes = []
    if fast and hasattr(sm, "_fast_path") and hasattr(sm, "_FAST_MIN_SECONDS"):
        notes.append(_always_try_fast_path(sm, used_fast))
    x = torch.from_numpy(load_sequences(job, 1))
    start, end = job_window(job) or (0, x.shape[-1])
    batch_size = job.get("peer_batch_size", 32)

    def run():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y0, y_hat = saturation_mutagenesis(module, x, start=start, end=end, batch_size=batch_size,
                                               raw_outputs=True, fast=fast, device=device)
        return y0, y_hat, [str(w.message).splitlines()[0] for w in caught]

    phase(f"saturation_mutagenesis(fast={fast})")
    timing = timed_runs(run, repeats=job["repeats"], budget_s=job["budget_s"])
    y0, y_hat, messages = timing["result"]
    names = job["outputs"]
    y0s = [y0] if isinstance(y0, torch.Tensor) else list(y0)
    y_hats = [y_hat] if isinstance(y_hat, torch.Tensor) else list(y_hat)
    arrays = {}
    for name, ref, mutants in zip(names, y0s, y_hats, strict=True):
        ref = ref.float().cpu().numpy()
        arrays[name] = mutants.float().cpu().numpy() - ref[:, None, None]
    save_arrays(job, arrays)
    from importlib.metadata import version

    if used_fast:
        notes.append("fastISM path used" if all(used_fast) else "fastISM path NOT used: fell back to fast=False")
    return {"time_per_sequence_s": timing["median_s"], "runs_s": timing["runs_s"], "warmup_s": timing["warmup_s"],
            "compared_as": "none", "sequences": 1, "peer_batch_size": batch_size, "fast_path_used": all(used_fast)
            if used_fast else None, "package": f"tangermeme {version('tangermeme')}",
            "notes": notes + sorted(set(messages))}


def peer_tangermeme(job: dict) -> dict:
    """tangermeme ``saturation_mutagenesis(fast=False)``: every mutant through PyTorch."""
    return _tangermeme(job, fast=False)


def peer_tangermeme_fast(job: dict) -> dict:
    """tangermeme ``saturation_mutagenesis(fast=True)``: its fastISM path (falls back with a warning)."""
    return _tangermeme(job, fast=True)


def yuzu_sequential(module, seq_len: int, torch):
    """The module as the flat ``nn.Sequential`` the original Yuzu needs.

    The original Yuzu walks ``model.children()`` in order and decodes a dense layer with
    its own position-major ``Flatten``; a channel-major flatten (``x.view(N, -1)``) is
    matched by permuting the first dense layer's columns. Raises :class:`BenchError` for
    models that are not a convolutional body followed by a dense head (residual adds,
    several outputs).
    """
    from torch import nn
    from yuzu.models import Flatten

    body = getattr(module, "body", None)
    head = getattr(module, "head", None)
    if head is None and isinstance(getattr(module, "fc", None), nn.Linear):
        head = nn.Sequential(module.fc)
    if head is None and isinstance(body, nn.Sequential) and not hasattr(module, "fc"):
        return _profile_sequential(module, body, seq_len, torch)  # a profile model: the body is all of it
    if not isinstance(body, nn.Sequential) or not isinstance(head, nn.Sequential):
        raise BenchError(f"the original Yuzu needs a sequential model (layers applied in order); "
                         f"{type(module).__name__} has residual connections or several outputs")
    layers = [m for m in body if not isinstance(m, nn.Flatten)]
    x = torch.zeros(1, 4, seq_len)
    x[0, 0] = 1
    with torch.no_grad():
        features = nn.Sequential(*layers)(x)
    channels = features.shape[1]
    head_layers = list(head)
    first = head_layers[0]
    if not isinstance(first, nn.Linear):
        raise BenchError(f"the dense head starts with {type(first).__name__}, not Linear")
    dense = nn.Linear(first.in_features, first.out_features)
    with torch.no_grad():
        w = first.weight.reshape(first.out_features, channels, -1).permute(0, 2, 1)
        dense.weight.copy_(w.reshape(first.out_features, -1))
        dense.bias.copy_(first.bias)
    seq = nn.Sequential(*layers, Flatten(), dense, *head_layers[1:]).eval()
    with torch.no_grad():
        want, got = module(x), seq(x)
    if not torch.allclose(want, got, atol=1e-5 * max(float(want.abs().max()), 1e-6)):
        raise BenchError("the sequential copy of the model does not reproduce its output")
    return seq


def _profile_sequential(module, body, seq_len: int, torch):
    """A convolutional profile model (no dense head) as the flat ``nn.Sequential`` Yuzu walks."""
    x = torch.zeros(1, 4, seq_len)
    x[0, 0] = 1
    with torch.no_grad():
        want, got = module(x), body(x)
    if not torch.equal(want, got):
        raise BenchError("the model's body does not reproduce its output")
    return body.eval()


def peer_yuzu_original(job: dict) -> dict:
    """The original Yuzu (``yuzu-ism``): ``precompute`` (timed apart) then ``yuzu_ism``.

    Yuzu reports the Euclidean norm of the output change (``l2``); the oracle is reduced
    the same way for the error.
    """
    try:
        import yuzu
    except ImportError:
        raise BenchError("the original Yuzu is not installed (pip install yuzu-ism)") from None
    torch, module, device = torch_setup(job)
    if job_window(job):
        raise BenchError("the original Yuzu mutates every position; it has no window option")
    seq = yuzu_sequential(module, job["model"]["seq_len"], torch)
    alpha = job.get("yuzu_alpha", 1.5)
    phase(f"yuzu.precompute (alpha={alpha})")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = yuzu.precompute(seq, job["model"]["seq_len"], n_choices=4, alpha=alpha, device=device, random_state=0)
    precompute_s = time.perf_counter() - t0
    x = load_sequences(job, 1)
    phase(f"yuzu.yuzu_ism runs (precompute took {precompute_s:.1f} s)")
    timing = timed_runs(lambda: yuzu.yuzu_ism(seq, x, pre, device=device), repeats=job["repeats"],
                        budget_s=job["budget_s"])
    save_arrays(job, {"all": np.asarray(timing["result"], dtype=np.float32)})
    from importlib.metadata import version

    return {"time_per_sequence_s": timing["median_s"], "runs_s": timing["runs_s"], "warmup_s": timing["warmup_s"],
            "convert_s": precompute_s, "compared_as": "l2", "sequences": 1, "alpha": alpha,
            "package": f"yuzu-ism {version('yuzu-ism')}",
            "notes": [f"precompute (alpha={alpha}, includes one naive ISM run) timed as convert_s; "
                      "the model is a flat nn.Sequential copy with Yuzu's Flatten"]}


PEERS: dict[str, Peer] = {
    "tangermeme": peer_tangermeme,
    "tangermeme_fast": peer_tangermeme_fast,
    "yuzu_original": peer_yuzu_original,
}

# the module each peer imports, and how to install it (besides torch, which all need)
PEER_PACKAGES: dict[str, tuple[str, str]] = {
    "tangermeme": ("tangermeme", "pip install tangermeme"),
    "tangermeme_fast": ("tangermeme", "pip install tangermeme"),
    "yuzu_original": ("yuzu", "pip install yuzu-ism"),
}
