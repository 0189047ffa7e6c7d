"""Converted models on ONNX Runtime's CUDA execution provider (needs onnxruntime-gpu and a GPU).

Every test is marked ``cuda`` (``pytest -m cuda``) and skips, with the reason, where
ONNX Runtime offers no CUDAExecutionProvider. ``tools/gpu_check.sh`` runs them.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
from test_rewrite import reduce_oracle

from yuzu_onnx import InputError, ISMSession, convert_model, load_model, naive_ism
from yuzu_onnx.bands import bands_of, densify
from yuzu_onnx.format import read_converted_info
from yuzu_onnx.oracle import reference_outputs
from yuzu_onnx.plan import PlanOptions
from yuzu_onnx.runtime import CUDA
from yuzu_onnx.testing import BUILDERS, build_bpnet, build_tiny_cnn, random_onehot

TOLERANCE = 1e-5

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        CUDA not in ort.get_available_providers(),
        reason=f"no {CUDA} in onnxruntime {ort.__version__} (available: "
        f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu on a machine with an NVIDIA GPU",
    ),
]

MODELS = {
    "tiny_cnn": lambda: build_tiny_cnn(seq_len=200),
    "bpnet": lambda: build_bpnet(seq_len=100),
}


def _scale(*arrays: np.ndarray) -> float:
    return max(float(np.max(np.abs(a))) for a in arrays if a.size)


@pytest.fixture(scope="module", params=sorted(MODELS))
def converted(request):
    conv = convert_model(MODELS[request.param]())
    x = random_onehot(3, conv.spec.seq_len, seed=1, n_positions=2)
    cpu = ISMSession(conv.model, device="cpu").run(x)
    return conv, x, cpu


def test_cuda_session_really_runs_on_cuda(converted):
    conv, _, _ = converted
    session = ISMSession(conv.model, device="cuda")
    assert session.provider == CUDA, f"the session fell back to {session.provider}"


def test_cuda_matches_cpu(converted):
    conv, x, cpu = converted
    gpu = ISMSession(conv.model, device="cuda").run(x, batch_size=2)
    for name, want in cpu.items():
        got = gpu[name]
        assert got.shape == want.shape
        err = float(np.max(np.abs(got.astype(np.float64) - want)))
        assert err <= TOLERANCE * _scale(want, got), f"{name}: CUDA differs from CPU by {err:.3g}"


def test_cuda_matches_naive_oracle(converted):
    conv, x, _ = converted
    gpu = ISMSession(conv.model, device="cuda").run(x)
    want = naive_ism(conv.spec, x, device="cuda")
    refs = reference_outputs(conv.spec, x, device="cuda")
    for name in want:
        err = float(np.max(np.abs(gpu[name].astype(np.float64) - want[name])))
        assert err <= TOLERANCE * _scale(refs[name], want[name]), f"{name}: {err:.3g}"


def test_session_io_binding_matches_plain_run(converted):
    """ISMSession binds input and outputs on CUDA; the plain ``session.run`` path agrees."""
    conv, x, cpu = converted
    session = ISMSession(conv.model, device="cuda")
    assert session.use_io_binding, "ISMSession should use IO binding on CUDA"
    bound = session.run(x)
    session.use_io_binding = False
    plain = session.run(x)
    for name, want in cpu.items():
        for label, got in (("io binding", bound[name]), ("plain run", plain[name])):
            err = float(np.max(np.abs(got.astype(np.float64) - want)))
            assert err <= TOLERANCE * _scale(want, got), f"{name} ({label}): {err:.3g}"


def test_io_binding_on_device(converted):
    """The converted model through ONNX Runtime's IO binding with input and outputs on the GPU
    (what a host that keeps data on the device does)."""
    conv, x, cpu = converted
    session = ISMSession(conv.model, device="cuda").session
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    names = [o.name for o in session.get_outputs()]
    for name in names:
        binding.bind_output(name, "cuda")
    session.run_with_iobinding(binding)
    outputs = binding.get_outputs()
    assert all(v.device_name().lower() == "cuda" for v in outputs)
    for name, value in zip(names, binding.copy_outputs_to_cpu(), strict=True):
        err = float(np.max(np.abs(value.astype(np.float64) - cpu[name])))
        assert err <= TOLERANCE * _scale(cpu[name], value), f"{name}: {err:.3g}"


# every builder on CUDA, in each decode: the dense row gather and band scatter, the banded
# form, the l2 reduction and a streamed window run kernels the two models above do not
SWEEP = {
    "dense": {},
    "banded": {"output_form": "banded"},
    "l2": {"reduce": "l2"},
    "streamed": {"plan_options": "four chunks"},
}


@pytest.mark.parametrize("form", sorted(SWEEP))
@pytest.mark.parametrize("layout", ["ncl", "nlc"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_builder_on_cuda_matches_the_cpu_oracle(name: str, layout: str, form: str) -> None:
    """The converted model run on CUDA against naive ISM on the CPU, within 1e-5 of scale,
    on sequences with and without unknown bases (the shift and all-bases branches)."""

    spec = load_model(BUILDERS[name](layout=layout), seq_len=100 if name == "dynamic_length" else None)
    options = dict(SWEEP[form])
    if "plan_options" in options:
        options["plan_options"] = PlanOptions(window_chunk=max(1, spec.seq_len // 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # models without a local region fall back, exactly
        try:
            conversion = convert_model(spec, **options)
        except InputError as error:  # banded needs an output that keeps its length axis
            pytest.skip(str(error))
    session = ISMSession(conversion.model, device="cuda")
    assert session.provider == CUDA
    bands = bands_of(read_converted_info(conversion.model)) if form == "banded" else {}
    for seed, unknown in ((3, 0), (4, 2)):
        x = random_onehot(2, spec.seq_len, layout=layout, seed=seed, n_positions=unknown)
        got = session.run(x)
        oracle = naive_ism(spec, x, device="cpu")
        refs = reference_outputs(spec, x, device="cpu")
        for output, dense in oracle.items():
            how = conversion.reductions.get(output, "none")
            axis = conversion.region.maps[output].axis if how == "sum" else None
            want = reduce_oracle(dense, how, axis=axis)
            value = densify(got[output], bands[output]) if output in bands else got[output]
            assert value.shape == want.shape, (output, value.shape, want.shape)
            err = float(np.max(np.abs(value.astype(np.float64) - want))) if want.size else 0.0
            scale = _scale(dense, refs[output])
            assert err <= TOLERANCE * scale, f"{name} {layout} {form} {output}: {err:.3g} > 1e-5 x {scale:.3g}"


def test_auto_takes_cuda_and_yuzu_device_keeps_it_on_the_cpu(converted, monkeypatch):
    conv, _, _ = converted
    monkeypatch.delenv("YUZU_DEVICE", raising=False)
    assert ISMSession(conv.model).provider == CUDA
    monkeypatch.setenv("YUZU_DEVICE", "cpu")
    assert ISMSession(conv.model).provider == "CPUExecutionProvider"
