import re

import yaml

from ivlm_core.bench import fit_recovery
from ivlm_core.fitting.object_fit import DEFAULT_CONFIG_PATH


def test_fit_recovery_bench_runs_and_prints_the_summary_line(tmp_path, capsys):
    cfg = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    cfg["iterations"] = 40  # smoke test only: the figures come from the full run
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    fit_recovery.main(["--scenes", "2", "--config", str(path), "--out", str(tmp_path / "out")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"rot_err_deg=([\d.]+) trans_err_cm=([\d.]+) fit_s=([\d.]+)", last)
    assert match, last
    assert float(match.group(2)) < 10.0  # even 40 steps pull the 5-10 cm perturbation in
    assert len(list((tmp_path / "out").glob("*.png"))) == 2 and len(list((tmp_path / "out").glob("*.glb"))) == 2
