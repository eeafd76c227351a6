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
