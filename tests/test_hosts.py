"""The host examples (C++, Node, browser) give the same ISM arrays as Python onnxruntime.

Each host runs a converted model on a FASTA file; its outputs are compared with onnxruntime's
outputs on the same one-hot input (one-hot encoded here, independently of the hosts).
``tools/install_host_deps.sh`` installs the toolchains; a test skips only when its toolchain
(g++ and the ONNX Runtime headers, node and onnxruntime-node, chromium + chromedriver + selenium)
is absent.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parents[1]
CPP_DIR = REPO / "examples" / "cpp"
NODE_DIR = REPO / "examples" / "node"
WEB_DIR = REPO / "examples" / "web"

ALPHABET = "ACGT"
SEQ_LEN = 50
# Multi-line records, lower case, N (zero column) and U (read as T).
FASTA = """\
>seq1 first record
ACGTACGTACGTACGTACGTACGTA
CGTACGTACGTACGTACGTACGTAC
>seq2
acgtnNNacgtuuACGTACGTTTTTGGGGCCCCAAAAACGTACGTACGTA
>seq3 last
GATTACAGATTACAGATTACAGATTACAGATTACAGATTACAGATTACAG
"""


# ----------------------------------------------------------------------------------- fixtures
def converted_model(tmp_path: Path, streamed: bool = False) -> Path:
    """A real yuzu-onnx conversion of a BPNet-like builder model, with its JSON sidecar;
    ``streamed``: its window runs in chunks of 16 positions (``If`` subgraphs in sequence).

    Input ``x`` (batch, 4, SEQ_LEN) ("ncl"); outputs ``profile`` (batch, 4, Lw, 2, L')
    and ``counts`` (batch, 4, Lw, 2).
    """
    from yuzu_onnx import convert
    from yuzu_onnx.plan import PlanOptions
    from yuzu_onnx.session import converted_sidecar
    from yuzu_onnx.testing.model_builders import build_bpnet

    options = PlanOptions(window_chunk=16) if streamed else None
    model = convert(build_bpnet(layout="ncl", seq_len=SEQ_LEN, seed=3), plan_options=options)
    if streamed:
        assert "yuzu_onnx.window_chunks" in {p.key for p in model.metadata_props}
    path = tmp_path / "ism.onnx"
    onnx.save(model, path)
    (tmp_path / "ism.onnx.json").write_text(json.dumps(converted_sidecar(model)))
    return path


def model_meta(model_path: Path) -> dict[str, str]:
    props = onnx.load(model_path, load_external_data=False).metadata_props
    return {p.key[len("yuzu_onnx.") :]: p.value for p in props if p.key.startswith("yuzu_onnx.")}


def parse_fasta(text: str) -> list[tuple[str, str]]:
    recs: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith(">"):
            recs.append((line[1:].split()[0], ""))
        elif line.strip():
            recs[-1] = (recs[-1][0], recs[-1][1] + line.strip())
    return recs


def one_hot(seqs: list[str], alphabet: str, layout: str) -> np.ndarray:
    """(n, A, L) for "ncl", (n, L, A) for "nlc"; N and other IUPAC codes give a zero column."""
    seqs = [s.upper().replace("U", "T") if alphabet == "ACGT" else s.upper() for s in seqs]
    x = np.zeros((len(seqs), len(alphabet), len(seqs[0])), np.float32)
    for n, s in enumerate(seqs):
        for i, c in enumerate(s):
            if c in alphabet:
                x[n, alphabet.index(c), i] = 1.0
    return x if layout == "ncl" else x.transpose(0, 2, 1).copy()


def reference(model_path: Path, fasta_text: str) -> dict[str, np.ndarray]:
    meta = model_meta(model_path)
    x = one_hot([s for _, s in parse_fasta(fasta_text)], meta["alphabet"], meta["layout"])
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {meta["input"]: x}), strict=True))


def assert_close(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], rel: float) -> None:
    assert sorted(got) == sorted(ref)
    for name, r in ref.items():
        g = got[name]
        assert g.dtype == np.float32, name
        assert g.shape == r.shape, (name, g.shape, r.shape)
        err = float(np.max(np.abs(g.astype(np.float64) - r)))
        tol = rel * float(np.max(np.abs(r)))
        print(f"{name}: shape {g.shape}, max |error| {err:.3g} (tolerance {tol:.3g})")
        assert err <= tol, (name, err, tol)


def read_npy_dir(outdir: Path, names) -> dict[str, np.ndarray]:
    return {n: np.load(outdir / f"{n}.npy", allow_pickle=False) for n in names}


@pytest.fixture(params=["whole", "streamed"])
def case(request, tmp_path):
    model = converted_model(tmp_path, streamed=request.param == "streamed")
    fasta = tmp_path / "input.fa"
    fasta.write_text(FASTA)
    bad = tmp_path / "bad.fa"
    bad.write_text(FASTA + ">too_short\nACGT\n")
    return model, fasta, bad, reference(model, FASTA)


# ----------------------------------------------------------------------------------------- C++
@functools.cache
def cpp_host() -> Path:
    """Build examples/cpp once per session (examples/cpp/build.sh); skip without a toolchain."""
    if shutil.which("g++") is None:
        pytest.skip("C++ host: no g++ (run tools/install_host_deps.sh)")
    inc = Path(
        os.environ.get(
            "ORT_INCLUDE_DIR", CPP_DIR / "build/deps/onnxruntime-dev/usr/include/onnxruntime"
        )
    )
    if not (inc / "onnxruntime_cxx_api.h").is_file():
        pytest.skip(f"C++ host: no ONNX Runtime headers in {inc} (run tools/install_host_deps.sh)")
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(CPP_DIR / "build.sh")], env=env, capture_output=True, text=True
    )
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    return CPP_DIR / "build" / "yuzu_onnx_host"


def test_cpp_host(case, tmp_path):
    model, fasta, bad, ref = case
    exe = cpp_host()
    out = tmp_path / "cpp_out"
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}  # rpath must suffice
    proc = subprocess.run([exe, model, fasta, out], capture_output=True, text=True, env=env)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "execution provider: CPUExecutionProvider" in proc.stdout
    assert_close(read_npy_dir(out, ref), ref, 1e-6)

    proc = subprocess.run([exe, model, bad, tmp_path / "bad_out"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "'too_short' has length 4" in proc.stderr and "50" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------- Node
def node_host() -> Path:
    if shutil.which("node") is None:
        pytest.skip("Node host: no node (run tools/install_host_deps.sh)")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        if shutil.which("npm") is None:
            pytest.skip("Node host: no npm to install onnxruntime-node")
        env = dict(os.environ, ONNXRUNTIME_NODE_INSTALL="skip")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, env=env, check=True)
    return NODE_DIR / "run.mjs"


def test_node_host(case, tmp_path):
    model, fasta, bad, ref = case
    script = node_host()
    out = tmp_path / "node_out"
    proc = subprocess.run(["node", script, model, fasta, out], capture_output=True, text=True)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "execution provider: cpu" in proc.stdout
    assert_close(read_npy_dir(out, ref), ref, 1e-6)

    proc = subprocess.run(
        ["node", script, model, bad, tmp_path / "bad"], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "'too_short' has length 4" in proc.stderr, proc.stderr


def test_node_host_sidecar_only(case, tmp_path):
    """A model without yuzu_onnx metadata is run with its ISM.onnx.json sidecar."""
    model, fasta, _, ref = case
    script = node_host()
    m = onnx.load(model)
    del m.metadata_props[:]
    bare = tmp_path / "bare" / "ism.onnx"
    bare.parent.mkdir()
    onnx.save(m, bare)
    shutil.copy(str(model) + ".json", str(bare) + ".json")
    out = tmp_path / "node_out2"
    proc = subprocess.run(["node", script, bare, fasta, out], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert_close(read_npy_dir(out, ref), ref, 1e-6)


# ------------------------------------------------------------------------------------- browser
CHROME_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1200,900",
]


@contextlib.contextmanager
def static_server(root: Path):
    """python -m http.server equivalent on 127.0.0.1 and a free port, in a thread."""
    handler = functools.partial(QuietHandler, directory=str(root))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".mjs": "text/javascript",
    }

    def log_message(self, *args):
        pass


def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("browser: no chromium/chromedriver (run tools/install_host_deps.sh)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser: selenium is not installed (run tools/install_host_deps.sh)")
    if not (WEB_DIR / "vendor" / "ort.wasm.min.js").is_file():
        pytest.skip(
            "browser: onnxruntime-web is not in examples/web/vendor (run tools/install_host_deps.sh)"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in CHROME_FLAGS:
        opts.add_argument(f)
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver))


def load_in_page(drv, url, files):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    drv.get(url + "/index.html")
    drv.find_element(By.ID, "model-file").send_keys("\n".join(str(f) for f in files))
    status = drv.find_element(By.ID, "status")
    WebDriverWait(drv, 60).until(
        lambda d: status.get_attribute("data-status") in ("ready", "error")
    )
    assert status.get_attribute("data-status") == "ready", status.text
    return status, drv.find_element(By.ID, "model-info").text


def run_in_page(drv, status, text):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = drv.find_element(By.ID, "sequence")
    box.clear()
    box.send_keys(text)
    drv.find_element(By.ID, "run").click()
    WebDriverWait(drv, 60).until(lambda d: status.get_attribute("data-status") in ("done", "error"))


def page_result(drv) -> dict[str, np.ndarray]:
    result = drv.execute_script("return window.yuzuResult")
    return {k: np.asarray(v["data"], np.float32).reshape(v["dims"]) for k, v in result.items()}


def test_browser_host(case, tmp_path):
    model, _, _, ref = case
    seq = parse_fasta(FASTA)[1][1]  # one sequence is pasted into the page
    ref1 = {k: v[1:2] for k, v in ref.items()}
    shot = Path(os.environ.get("YUZU_SCREENSHOT") or tmp_path / "yuzu_web.png")
    drv = browser()
    try:
        with static_server(WEB_DIR) as url:
            status, info = load_in_page(drv, url, [model])
            assert "length 50" in info and "alphabet ACGT" in info and "model metadata" in info, (
                info
            )

            # a wrong length is rejected with a visible message
            run_in_page(drv, status, seq[:-3])
            assert status.get_attribute("data-status") == "error"
            assert "length 47" in status.text and "50" in status.text, status.text
            assert status.is_displayed()

            run_in_page(drv, status, ">pasted\n" + seq.lower())
            assert status.get_attribute("data-status") == "done", status.text
            got = page_result(drv)
            shot.parent.mkdir(parents=True, exist_ok=True)
            drv.save_screenshot(str(shot))
            print(f"screenshot: {shot}")
            print("\n".join(drv.execute_script("return window.yuzuLog || []")))
    finally:
        drv.quit()
    # wasm kernels may accumulate in another order than the native CPU provider: 1e-5
    assert_close(got, ref1, 1e-5)


def test_browser_host_sidecar(case, tmp_path):
    """A model without metadata is described by the ISM.onnx.json sidecar chosen with it."""
    model, _, _, ref = case
    m = onnx.load(model)
    del m.metadata_props[:]
    bare = tmp_path / "bare" / "ism.onnx"
    bare.parent.mkdir()
    onnx.save(m, bare)
    sidecar = Path(str(bare) + ".json")
    shutil.copy(str(model) + ".json", sidecar)
    seq = parse_fasta(FASTA)[2][1]
    drv = browser()
    try:
        with static_server(WEB_DIR) as url:
            status, info = load_in_page(drv, url, [bare, sidecar])
            assert "ism.onnx.json" in info and "length 50" in info, info
            run_in_page(drv, status, seq)
            assert status.get_attribute("data-status") == "done", status.text
            got = page_result(drv)
    finally:
        drv.quit()
    assert_close(got, {k: v[2:3] for k, v in ref.items()}, 1e-5)
