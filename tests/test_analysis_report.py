"""``report.html``: self-contained (images as data: URIs, no network), complete, written by training."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from rollfit.analysis.evaluate import Evaluation
from rollfit.analysis.report import data_summary_rows, report_html, write_run_report
from rollfit.cli.main import main

IMG_RE = re.compile(r'<img alt="([^"]+)" src="([^"]+)">')


def _evaluation(rows="validation") -> Evaluation:
    y = np.array([[1.0], [2.0], [3.0]])
    m = {"y<1>": {"rmse": 0.5, "mae": 0.25, "r2": 0.9, "max_abs_error": 1.0, "n": 3}}
    return Evaluation(m, rows, "f.h5", np.zeros((3, 1)), y, y, ["y<1>"], 1.0 if rows == "training" else 0.8)


def _assert_self_contained(page: str) -> list[tuple[str, bytes]]:
    """No network references; every image a decodable PNG data: URI. Returns (alt, png bytes)."""
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)
    images = []
    for alt, src in IMG_RE.findall(page):
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        images.append((alt, png))
    return images


def test_report_html_is_escaped_and_notes_training_metrics():
    page = report_html("run <x>", {"data": {"hdf5_path": "a&b.h5"}}, {"rows": 3, "failed": 1, "skipped": 0},
                       _evaluation("training"), {"loss": b"\x89PNG\r\n\x1a\nfake"})
    assert "run &lt;x&gt;" in page and "a&amp;b.h5" in page and "y&lt;1&gt;" in page
    assert "these are training metrics, not an estimate of accuracy on new inputs" in page
    assert [alt for alt, _ in _assert_self_contained(page)] == ["loss"]
    assert "training metrics" not in report_html("r", {}, {}, _evaluation(), {})


def test_data_summary_rows():
    rows = data_summary_rows({"rows": 10, "train_rows": 8, "val_rows": 2, "groups": 12, "failed": 2,
                              "skipped": 0, "files": ["a.h5"]})
    assert rows == [("rows used", 10), ("training rows", 8), ("validation rows", 2), ("param groups read", 12),
                    ("failed runs (not used)", 2), ("skipped rows (policy skip)", 0), ("file", "a.h5")]


def test_write_run_report_embeds_every_plot(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["report", "--run", str(run), "--slice", "gait_cadence", "gait_stride"]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    page = (run / "report.html").read_text()
    images = dict(_assert_self_contained(page))
    assert set(images) == {"loss", "parity", "residuals", "contour_gait_cadence_gait_stride",
                           "slice_gait_cadence", "slice_gait_stride"}
    for name, png in images.items():
        assert (run / "plots" / f"{name}.png").read_bytes() == png
    metrics = json.loads((run / "metrics_validation.json").read_text())["cot_ma15"]
    assert f"{metrics['rmse']:.4g}" in page and f"{metrics['r2']:.4g}" in page
    import torch

    summary = torch.load(sorted((run / "checkpoints").glob("*.ckpt"))[-1], weights_only=True)["config"]["data_summary"]
    for label, key in (("rows used", "rows"), ("failed runs (not used)", "failed"),
                       ("skipped rows (policy skip)", "skipped")):
        assert f"<td>{label}</td><td class=\"num\">{summary[key]}</td>" in page


def test_training_writes_the_report_and_survives_a_plot_failure(demo_file, tmp_path, monkeypatch):
    from rollfit.config import load_config
    from rollfit.pipeline.run import train

    cfg = load_config(None, ["trainer.max_epochs=5", "trainer.progress=false", "data.train_split=0.8",
                             "data.cache=false", "trainer.log_period=1"])
    cfg.data.hdf5_path = str(demo_file)
    run = train(cfg, tmp_path / "with_report").run_dir
    assert (run / "report.html").is_file() and (run / "plots" / "loss.png").is_file()
    assert (run / "metrics_validation.json").is_file()

    import rollfit.analysis.report as report

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(report, "write_run_report", broken)
    with pytest.warns(UserWarning, match="the run is trained and saved, but its report could not be written "
                                         r"\(RuntimeError: no fonts\); retry with: rollfit report --run "):
        result = train(cfg, tmp_path / "broken")
    assert result.last_checkpoint.is_file() and not (result.run_dir / "report.html").exists()


def test_report_renders_offline_in_headless_chromium(trained_run, tmp_path):
    """Where chromium is installed: the page loads with the network blocked and every image decodes."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    page = write_run_report(run).read_text()
    probe = ('<script>window.addEventListener("load", () => { const im = [...document.images]; '
             'document.body.setAttribute("data-images", im.length + ":" + '
             'im.filter(i => i.complete && i.naturalWidth > 0).length); });</script></body>')
    (tmp_path / "probe.html").write_text(page.replace("</body>", probe))  # the probe goes into a copy only
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000", "--dump-dom",
           (tmp_path / "probe.html").as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    n = len(IMG_RE.findall(page))
    assert n >= 5 and f'data-images="{n}:{n}"' in dom
