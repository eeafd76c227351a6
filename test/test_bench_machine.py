from pathlib import Path

from ivlm_core.bench.machine import cpu_model, describe_machine


def test_the_cpu_model_is_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n")
    assert cpu_model(info) == "AMD EPYC 7B13"


def test_without_cpuinfo_the_platform_still_names_the_machine(tmp_path: Path) -> None:
    assert cpu_model(tmp_path / "missing")  # platform.processor() or the architecture, never empty
    assert " CPUs, load " in describe_machine()


def test_the_ros_marker_benchmark_names_the_machine_in_its_conditions() -> None:
    """The ROS layer's benchmarks print the same machine description as the core's (one run, one person)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ivlm_ros.bench.marker_encoding", "--repeats", "1", "--max-people",
                          "1"], capture_output=True, text=True, timeout=300, check=True).stdout.splitlines()
    assert out[0].startswith("conditions: machine: ") and " CPUs, load " in out[0]
    assert out[-1].startswith("encode_ms_per_person_1=")
