"""Config schema: the seed's example validates; typos, types and ranges fail with one line."""
import pytest
import yaml

from rollfit.config import Config, all_keys, apply_overrides, load_config, reference_table
from rollfit.errors import ConfigError

from pathlib import Path

# The seed's example config, verbatim from its README (examples/seed_config.yaml holds it).
SEED_YAML = (Path(__file__).resolve().parents[1] / "examples" / "seed_config.yaml").read_text()


def _write(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_seed_example_validates(tmp_path):
    cfg = load_config(_write(tmp_path, SEED_YAML))
    assert cfg.trainer.max_epochs == 10002 and cfg.model.layers == [64, 32] and cfg.data.out_lbl == ["cot_ma15"]


def test_defaults_equal_the_seed_example():
    assert Config().to_dict() == load_config(None).to_dict()
    assert Config().trainer.lr == 0.1 and Config().data.train_split == 1.0


def test_unknown_key_suggests_the_right_one(tmp_path):
    p = _write(tmp_path, "trainer:\n  max_epoch: 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: unknown key 'trainer.max_epoch'; did you mean 'trainer.max_epochs'?"


def test_unknown_section_suggests(tmp_path):
    p = _write(tmp_path, "trainr:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'trainr'; did you mean 'trainer'\?"):
        load_config(p)


def test_all_problems_reported_at_once(tmp_path):
    p = _write(tmp_path, "trainer:\n  lr: -1\n  recon_type: hubber\nmodel:\n  layers: [64, 0]\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "key 'trainer.lr': Input should be greater than 0, but got -1" in msg
    assert "key 'trainer.recon_type'" in msg and "'hubber'" in msg
    assert "key 'model.layers': every width must be > 0, but got [64, 0]" in msg


def test_bad_yaml_names_line(tmp_path):
    p = _write(tmp_path, "trainer:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"expected valid YAML, but parsing failed at line 3"):
        load_config(p)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: expected a YAML config file, but it does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_apply_and_validate(tmp_path):
    cfg = load_config(_write(tmp_path, SEED_YAML), ["trainer.max_epochs=200", "model.layers=[128,64]",
                                                    "data.out_lbl=[cot_ma15, velocity]"])
    assert cfg.trainer.max_epochs == 200 and cfg.model.layers == [128, 64]
    assert cfg.data.out_lbl == ["cot_ma15", "velocity"]
    with pytest.raises(ConfigError, match=r"override 'trainer.max_epoch=3': unknown key 'trainer.max_epoch'; "
                                          r"did you mean 'trainer.max_epochs'\?"):
        apply_overrides({}, ["trainer.max_epoch=3"])
    with pytest.raises(ConfigError, match=r"expected section.key=value, but got no '='"):
        apply_overrides({}, ["trainer.lr"])
    with pytest.raises(ConfigError, match=r"key 'trainer.max_epochs'"):
        load_config(None, ["trainer.max_epochs=abc"])


def test_relative_hdf5_path_is_taken_from_the_config_folder(tmp_path):
    p = _write(tmp_path, "data:\n  hdf5_path: ../rollouts/u225.h5\n")
    assert load_config(p).data.hdf5_path == str(tmp_path / "../rollouts/u225.h5")


def test_every_key_is_documented():
    table = reference_table()
    for key in all_keys():
        assert f"`{key}`" in table
    assert "None |" not in table  # every field has a description


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["trainer.lr=0.01"])
    p = tmp_path / "out.yaml"
    p.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(p).to_dict() == cfg.to_dict()


def test_written_files_get_the_usual_mode(tmp_path):
    import os
    import stat

    from rollfit.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_compile_off_survives_yaml_booleans(tmp_path):
    assert load_config(None, ["trainer.compile=off"]).trainer.compile == "off"
    assert load_config(_write(tmp_path, "trainer:\n  compile: off\n")).trainer.compile == "off"
