"""tools/measure_one_sequence.py: one sequence in fresh processes, estimate vs peak RSS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_one_sequence_stays_within_its_memory_estimate() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "measure_one_sequence.py"), str(REPO / "models" / "tiny_cnn.onnx"),
         "--window", "50:90", "--naive-sample", "4"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["window"] == [50, 90] and result["chunks"] == 0
    assert 0 < result["peak_rss_bytes"] <= 1.15 * result["estimate_bytes"]
    assert result["extrapolated_seconds"] == result["sample_seconds"] * 40 / 4
    assert result["speedup"] > 0
