"""The latency benchmark runs end to end on the tiny CPU model and prints its contract line (no timing asserts)."""

from __future__ import annotations

import re


def test_model_latency_tiny_smoke(capsys) -> None:
    from ivlm_core.bench.model_latency import main

    main(["--tiny", "--answer-tokens", "6", "--repeats", "1", "--naive-repeats", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "tokens=6" in lines[-3] and "tokens=6" in lines[-2]  # 6 answer tokens; decoding stops at [SEG]
    assert re.fullmatch(r"frame_s=[0-9.]+ naive_frame_s=[0-9.]+ speedup=[0-9.]+ peak_gb=nan", lines[-1])
