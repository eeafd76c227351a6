"""Progress of checkpoint loading / conversion: bytes done shard by shard, rate, ETA, throttled log lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivlm_core.progress import Progress, ProgressReporter, ThrottledProgressLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_snapshot_reports_bytes_rate_and_eta() -> None:
    clock, seen = FakeClock(), []
    with ProgressReporter("loading checkpoint", 27e9, callback=seen.append, bar=False, clock=clock) as reporter:
        clock.now += 10.0
        reporter.advance(9e9)
        snap = seen[-1]
        assert snap.done == 9e9 and snap.rate == pytest.approx(9e8) and snap.eta_s == pytest.approx(20.0)
        assert snap.describe() == "loading checkpoint: 9.0 GB / 27.0 GB (33%), 900.0 MB/s, ETA 20 s"
    assert seen[-1].finished and seen[-1].describe().endswith("done")
    assert Progress("x", 0, 10, "frames", 0.0).eta_s is None  # no rate yet


def test_throttled_log_writes_at_most_one_line_per_period() -> None:
    clock, lines = FakeClock(), []
    log = ThrottledProgressLog(lines.append, period_s=5.0, clock=clock)
    for step in range(120):  # 12 s of updates every 0.1 s
        clock.now = 100.0 + 0.1 * step
        log(Progress("loading checkpoint", step, 120, "B", 0.1 * step))
    log(Progress("loading checkpoint", 120, 120, "B", 12.0, finished=True))
    assert len(lines) == 4  # t = 0, 5, 10 and the final line
    assert lines[-1].endswith("done")


def test_checkpoint_load_reports_every_byte_tensor_by_tensor(tiny_checkpoints, capsys) -> None:
    from ivlm_core.model.checkpoint import find_weight_files, load_checkpoint, weight_bytes

    folder = tiny_checkpoints["Gen"]
    files = find_weight_files(folder)
    total = weight_bytes(files)
    assert total == sum(p.stat().st_size for p in files.shards) and len(files.shards) == 3
    seen: list[Progress] = []
    load_checkpoint(folder, device="cpu", progress=seen.append)
    done = [s.done for s in seen]
    assert done == sorted(done) and seen[-1].finished and seen[-1].done == total
    assert len(seen) > 2 * len(files.shards)  # finer than one update per shard
    assert all(s.total == total and s.unit == "B" for s in seen)
    assert "loading checkpoint" not in capsys.readouterr().err  # not a terminal: no bar

    load_checkpoint(folder, device="cpu", progress_bar=True)
    assert "loading checkpoint" in capsys.readouterr().err


def test_conversion_reports_shard_by_shard(tiny_checkpoints, tmp_path: Path) -> None:
    from ivlm_core.model.checkpoint import convert_to_safetensors, find_weight_files, weight_bytes

    files = find_weight_files(tiny_checkpoints["Gen"])
    seen: list[Progress] = []
    convert_to_safetensors(tiny_checkpoints["Gen"], tmp_path / "safe", progress=seen.append)
    sizes = [p.stat().st_size for p in files.shards]
    assert [s.done for s in seen] == [sum(sizes[:1]), sum(sizes[:2]), sum(sizes), sum(sizes)]
    assert seen[-1].finished and seen[-1].done == weight_bytes(files)


def test_node_logs_loading_progress_throttled(ros_node_params) -> None:
    pytest.importorskip("rclpy")
    from ivlm_ros import node
    from ivlm_ros.parameters import settings_from_dict

    lines: list[str] = []
    pipeline = node.load_pipeline(settings_from_dict(ros_node_params), lines.append)
    assert pipeline is not None
    # a tiny load takes well under LOAD_PROGRESS_LOG_PERIOD_S: the first update and the final line only
    assert len(lines) == 2 and all(line.startswith("loading checkpoint: ") for line in lines)
    assert "(100%)" in lines[-1] and lines[-1].endswith("done")
