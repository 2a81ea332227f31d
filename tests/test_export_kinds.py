"""Exports per model kind: each kind's mean in every format it supports, self-verified; a one-line
error naming the kinds that can where a kind cannot.

ONNX and pt2 trace the plain module a kind gives (``export_module()``); the C header of an
ensemble averages its members. Each artefact is also evaluated here with its own runtime and
compared with the model's mean.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import demo_config

from rollfit.errors import ConfigError
from rollfit.export import export
from rollfit.export import c_header
from rollfit.export.common import ExportInfo, UnitsModel, sample_inputs
from rollfit.model import kinds
from rollfit.model.ensemble import EnsembleNet
from rollfit.model.network import RegressionNet
from rollfit.pipeline.run import train

pytestmark = pytest.mark.usefixtures("one_thread")

ARGS = ["model.kind=ensemble", "model.members=3", "model.layers=[8,8]", "trainer.max_epochs=20",
        "trainer.save_period=10", "trainer.log_period=5", "trainer.progress=false", "trainer.report=false",
        "data.train_split=0.8", "trainer.lr=0.01", "data.cache=false"]


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, demo_file):
    return train(demo_config(demo_file, ARGS), tmp_path_factory.mktemp("ens") / "run").run_dir


def _runtime_outputs(fmt: str, path: Path, x: np.ndarray, info) -> np.ndarray:
    from rollfit.export import format_module

    return format_module(fmt).evaluate(path, x, info)


@pytest.mark.parametrize("fmt,ext", [("c", ".h"), ("pt2", ".pt2"), ("onnx", ".onnx")])
def test_an_ensemble_exports_its_mean_in_every_format(ensemble_run, tmp_path, fmt, ext):
    from rollfit.analysis.surrogate import Surrogate

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    out = tmp_path / f"ens{ext}"
    result = export(ensemble_run, fmt, out)
    assert result.max_rel_error is not None and result.max_rel_error <= 1e-5
    side = json.loads(result.sidecar.read_text())
    assert side["model"]["kind"] == "ensemble" and side["verification"]["samples"] == 256
    sur = Surrogate.load(ensemble_run)
    info = ExportInfo.from_surrogate(sur, "ens")
    x = sample_inputs(info.lo, info.hi, 64, seed=3)
    got = _runtime_outputs(fmt, out, x, info)
    want = sur.predict(x)
    members = sur.model.members_forward(torch.as_tensor(x)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert np.abs(members[0] - want).max() > 1e-3  # the mean of the members, not one of them


def test_a_kind_that_cannot_export_a_format_is_a_one_line_error_naming_those_that_can(ensemble_run, tmp_path,
                                                                                        monkeypatch):
    spec = kinds.kind_spec("ensemble")
    monkeypatch.setitem(kinds.KINDS, "ensemble", dataclasses.replace(spec, exports=("onnx", "pt2")))
    able = kinds.kinds_exporting("c")
    assert "ensemble" not in able and "mlp" in able
    with pytest.raises(ConfigError) as err:
        export(ensemble_run, "c", tmp_path / "ens.h")
    assert str(err.value) == (f"--format c: expected a run of a kind that exports to c ({', '.join(able)}), "
                              f"but this run is 'ensemble'")
    assert not (tmp_path / "ens.h").exists()


def _info(net, residual: bool, name: str = "ens") -> ExportInfo:
    d, k = net.input_dim, net.output_dim
    return ExportInfo(name=name, in_lbl=[f"x{i}" for i in range(d)], out_lbl=[f"y{i}" for i in range(k)],
                      lo=np.full(d, -2.0), hi=np.full(d, 2.0), bounds_estimated=False, layers=list(net.layers),
                      residual=residual, activation=net.activation, target_convention=net.target_convention,
                      checkpoint=Path("ens.ckpt"), checkpoint_sha256="0" * 64, original_pipeline=False,
                      kind=net.kind)


@pytest.mark.parametrize("residual,layers,act", [(True, [6, 6, 4], "silu"), (False, [5, 4, 3], "gelu")])
def test_the_c_header_of_an_ensemble_averages_its_members(tmp_path, residual, layers, act):
    """Residual (identity and Linear skips) and sequential (tanh last), normalized convention:
    the compiled header equals the PyTorch mean, and differs from any single member."""
    torch.manual_seed(0)
    net = EnsembleNet(3, 2, layers, members=4, residual=residual, activation=act, target_convention="normalized",
                      input_mean=torch.tensor([0.1, -0.2, 0.3]), input_std=torch.tensor([1.5, 0.5, 2.0]),
                      target_mean=torch.tensor([10.0, -3.0]), target_std=torch.tensor([2.0, 0.5])).eval()
    info = _info(net, residual)
    path = tmp_path / "ens.h"
    path.write_bytes(c_header.render(UnitsModel(net), info))
    x = sample_inputs(info.lo, info.hi, 50, seed=1)
    got = c_header.evaluate(path, x, info)
    with torch.no_grad():
        want = net(torch.as_tensor(x)).numpy()
        one = net.members_forward(torch.as_tensor(x))[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert np.abs(one - want).max() > 1e-3


def test_every_network_kind_gives_a_plain_export_module():
    torch.manual_seed(0)
    net = RegressionNet(2, 1, [4])
    ens = EnsembleNet(2, 1, [4], members=3)
    x = torch.randn(5, 2)
    assert net.export_module() is net and UnitsModel(net).export_module() is net
    with torch.no_grad():
        torch.testing.assert_close(UnitsModel(ens).export_module()(x), ens(x))


@pytest.fixture(scope="module")
def gp_run(tmp_path_factory):
    from rollfit.data.synthetic import make_demo_file

    small = make_demo_file(tmp_path_factory.mktemp("gpdemo") / "rollout_data.h5", n=60, seed=1)
    args = ["model.kind=gp", "trainer.progress=false", "trainer.report=false", "data.cache=false"]
    return train(demo_config(small, args), tmp_path_factory.mktemp("gp") / "run").run_dir


@pytest.mark.parametrize("fmt,ext", [("c", ".h"), ("pt2", ".pt2"), ("onnx", ".onnx")])
def test_a_gp_exports_its_mean_in_every_format(gp_run, tmp_path, fmt, ext):
    """The GP's kernel sum (``export_module``; the C header from ``c_gp``), self-verified and
    evaluated here with the format's runtime against ``Surrogate.predict``."""
    from rollfit.analysis.surrogate import Surrogate

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    out = tmp_path / f"gpm{ext}"
    result = export(gp_run, fmt, out)
    assert result.max_rel_error is not None and result.max_rel_error <= 1e-5
    assert json.loads(result.sidecar.read_text())["model"]["kind"] == "gp"
    sur = Surrogate.load(gp_run)
    info = ExportInfo.from_surrogate(sur, "gpm")
    x = sample_inputs(info.lo, info.hi, 64, seed=5)
    want = sur.predict(x)
    np.testing.assert_allclose(_runtime_outputs(fmt, out, x, info), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
