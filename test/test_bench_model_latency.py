"""The latency benchmark runs end to end on the tiny CPU model and prints its contract line (no timing asserts);
the run itself asserts that the static-cache decoder agrees with the eager one."""

from __future__ import annotations

import re

import pytest

TORCHAO_SKIP = (
    "torchao is optional and not installed: installed, transformers imports it in every process (about 1 "
    "s, 20 s on a loaded CPU); pip install torchao==0.18.0 to run this test"
)
LAST_LINE = (
    r"frame_s=[0-9.]+ interaction_frame_s=[0-9.]+ prefill_ms=[0-9.]+ decode_ms_per_token=[0-9.]+ "
    r"floor_ms_per_token=(nan|[0-9.]+) peak_gb=nan naive_frame_s=[0-9.]+"
)


def test_model_latency_tiny_smoke(capsys) -> None:
    from ivlm_core.bench.model_latency import main

    main(["--tiny", "--answer-tokens", "6", "--repeats", "1", "--naive-repeats", "1", "--bandwidth-gbs", "50"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "static == eager decoder: ok" in lines
    # 6 answer tokens on both paths: the static and the naive decoder stop at [SEG]
    assert "tokens=6 " in lines[-3]
    assert lines[-3].rstrip().endswith("tokens=6")
    assert re.fullmatch(LAST_LINE, lines[-1]), lines[-1]
    assert "floor_ms_per_token=nan" not in lines[-1]  # --bandwidth-gbs gives a floor on CPU too


def test_model_latency_tiny_int8_reports_agreement(capsys) -> None:
    from ivlm_core.model.quantization import torchao_available

    if not torchao_available():
        pytest.skip(TORCHAO_SKIP)
    from ivlm_core.bench.model_latency import main

    main(["--tiny", "--answer-tokens", "4", "--repeats", "1", "--naive-repeats", "1", "--quant", "int8"])
    out = capsys.readouterr().out
    assert re.search(r"int8 vs float32 on random weights \(agreement, not accuracy\): mask_state_cos=[0-9.]+ .*"
                     r"prompt_state_rel_err=[0-9.e+-]+ mask_iou=[0-9.]+", out)
    assert re.fullmatch(LAST_LINE, out.strip().splitlines()[-1])


def test_model_latency_tiny_draft_prints_the_draft_line(capsys) -> None:
    """--draft: forwards_per_answer over drawn template answers, drafted vs plain frames on a wired template answer;
    the run itself asserts drafted == plain greedy (ids, masks, contacts in fp32)."""
    from ivlm_core.bench.model_latency import main

    main(["--tiny", "--answer-tokens", "6", "--repeats", "1", "--naive-repeats", "0", "--draft",
          "--draft-answers", "20"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("drafted == plain greedy: ok (ids, masks, contacts)") for line in lines)
    assert any("rejected_draft_overhead=" in line for line in lines)
    assert re.fullmatch(r"forwards_per_answer=[0-9.]+ accepted_per_forward=[0-9.]+ frame_s=[0-9.]+ "
                        r"plain_frame_s=[0-9.]+", lines[-1]), lines[-1]
    forwards = float(lines[-1].split()[0].split("=")[1])
    assert 1.0 <= forwards < 20.0  # template answers of 11-50 tokens need far fewer forwards than tokens


def test_decode_profile_tiny_prints_every_figure(capsys) -> None:
    """decode_profile (where a decode step's time goes) runs end to end on CPU: the copy bandwidth, the weight
    products per width (cuBLAS's, and the Triton kernel's in Triton's interpreter) and the four decoder
    variants (modules, fused, fused + compiled, that + the Triton products)."""
    from ivlm_core.bench.decode_profile import main

    main(["--tiny", "--repeats", "2", "--prompt-len", "40"])
    out = capsys.readouterr().out
    assert re.search(r"^copy_gbs=[0-9]+ ", out, re.M)
    for width in (1, 2, 3, 5, 9):
        assert re.search(rf"^gemm_ms\[M={width}\]=[0-9.]+ \(mean [0-9.]+ worst [0-9.]+\)", out, re.M)
    assert re.search(r"^triton_gemv_ms\[M=1\]=[0-9.]+ \(mean [0-9.]+ worst [0-9.]+\)", out, re.M), out
    assert "failed" not in out and "gemv=triton (mode on" in out  # the interpreter ran the Triton step
    for variant in ("modules", "fused", "fused\\+compiled", "fused\\+compiled\\+triton"):
        assert re.search(rf"^{variant} +setup_s=[0-9.]+ step_ms=[0-9.]+ .*verify_ms K0=[0-9.]+ K2=[0-9.]+ K4=[0-9.]+ "
                         r"K8=[0-9.]+", out, re.M), out
