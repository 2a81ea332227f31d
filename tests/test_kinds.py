"""The model-kind registry (model/kinds.py) and the fitter registry (pipeline/fitting.py)."""
from __future__ import annotations

import pytest
import torch

from rollfit.config import FIT_KINDS, MODEL_KINDS, Config
from rollfit.errors import CheckpointError, ConfigError
from rollfit.model import kinds
from rollfit.model.network import RegressionNet
from rollfit.pipeline.fitting import FITTERS


def test_every_config_kind_has_a_fitter_and_every_fit_kind_is_registered():
    assert set(FITTERS) == set(MODEL_KINDS)
    for name in FIT_KINDS:
        assert kinds.kind_spec(name).name == name


def test_a_checkpoint_without_kind_is_an_mlp():
    assert kinds.kind_of({}) == "mlp"
    assert kinds.kind_of({"kind": "gp"}) == "gp"


def test_unknown_kind_is_one_line_with_a_suggestion():
    with pytest.raises(CheckpointError, match=r"^kind: expected one of .*, but got 'emsemble'; did you mean 'ensemble'\?$"):
        kinds.kind_spec("emsemble")
    with pytest.raises(ConfigError, match=r"^model.kind: expected one of "):
        kinds.check_kind_name("gpp")


def test_config_refuses_an_unknown_kind():
    with pytest.raises(Exception, match="model.kind"):
        Config.model_validate({"model": {"kind": "svm"}})


def test_mlp_has_no_std_and_says_which_kinds_do():
    net = RegressionNet(2, 1, [4])
    with_std = kinds.kinds_with("has_std")
    assert "mlp" not in with_std and {"ensemble", "gp", "robust_gp"} <= set(with_std)
    with pytest.raises(ConfigError, match=r"^model kind 'mlp': expected a model with an uncertainty, but 'mlp' "
                                          r"predicts a mean only; train one of ensemble, gp, robust_gp"):
        net.predict_std(torch.zeros(1, 2))


def test_the_mlp_builder_rebuilds_the_network_from_its_constructor_args():
    net = RegressionNet(3, 2, [5, 4], input_mean=torch.tensor([1.0, 2.0, 3.0]))
    rebuilt = kinds.kind_spec("mlp").build(net.constructor_args())
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(7, 3)
    assert torch.equal(rebuilt(x), net(x))


def test_resuming_a_kind_fitted_in_one_go_is_refused():
    from rollfit.pipeline.fitting import FitContext, make_fitter

    cfg = Config.model_validate({"model": {"kind": "gp"}})
    ctx = FitContext(cfg, None, None, None, None, {}, None, None, ckpt={"epoch": 0})
    with pytest.raises(ConfigError, match=r"^--resume: expected a run of a kind that trains in epochs \(ensemble, mlp\), "
                                          r"but this run is 'gp'"):
        make_fitter(ctx)
