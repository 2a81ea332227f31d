"""The README's reference sections are generated from the code and must not drift."""
import subprocess
import sys
from pathlib import Path

from rollfit.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_readme_reference_sections_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_example_config_is_the_seed_config_and_valid():
    cfg = load_config(ROOT / "examples" / "seed_config.yaml")
    assert cfg.trainer.max_epochs == 10002 and cfg.model.layers == [64, 32] and cfg.data.out_lbl == ["cot_ma15"]
