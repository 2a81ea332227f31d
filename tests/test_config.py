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
    assert load_config(None, ["trainer.compile=off"]).trainer.engine == "reference"
    assert load_config(_write(tmp_path, "trainer:\n  compile: off\n")).trainer.engine == "reference"


# ----------------------------------------------------------------------------- issue 15: hostile configs
LAUGHS = "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
    for p, c in zip(["", *"abcdefgh"], "abcdefghi")
)


def _error(tmp_path, text: str | bytes, *overrides: str) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as exc:
        load_config(p, list(overrides))
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_billion_laughs_is_refused_without_expanding(tmp_path):
    import resource
    import time

    assert len(LAUGHS) < 700
    before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    message = _error(tmp_path, LAUGHS)
    assert "expected at most 100000 values after expanding aliases, but got 4.9e+08" in message
    assert time.perf_counter() - t0 < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_binary_config_is_one_line(tmp_path):
    message = _error(tmp_path, bytes(range(256)) * 4)
    assert message.endswith("expected UTF-8 YAML text, but got a binary or non-UTF-8 file (byte 128)")
    assert "NUL byte at offset 0" in _error(tmp_path, b"\x00\x01trainer: {}")


@pytest.mark.parametrize("depth", [60, 5000])
def test_deeply_nested_config_is_one_line(tmp_path, depth):
    message = _error(tmp_path, "trainer: " + "[" * depth + "]" * depth)
    assert message.endswith("expected at most 50 levels of nesting, but got more")


def test_huge_config_is_refused(tmp_path):
    message = _error(tmp_path, "# " + "x" * (2 << 20))
    assert "expected a YAML file of at most 1 MiB, but got 2097154 bytes" in message


def test_duplicate_keys_name_the_key_and_lines(tmp_path):
    message = _error(tmp_path, "trainer:\n  lr: 0.1\n  max_epochs: 5\n  lr: 0.2\n")
    assert message.endswith("cfg.yaml: line 4: expected each key once per mapping, but got 'lr' again (first at line 2)")
    assert "got 'trainer' again" in _error(tmp_path, "trainer: {}\ntrainer: {lr: 1.0}\n")


def test_merge_keys_still_work(tmp_path):
    cfg = load_config(_write(tmp_path, "trainer:\n  lr: 0.5\n  <<: {max_epochs: 7}\n"))
    assert cfg.trainer.lr == 0.5 and cfg.trainer.max_epochs == 7


@pytest.mark.parametrize("override, expected", [
    ("trainer.max_epochs=true", "key 'trainer.max_epochs': expected an integer, but got True"),
    ("trainer.max_epochs=20.0", "key 'trainer.max_epochs': expected an integer, but got 20.0"),
    ("trainer.max_epochs='20'", "key 'trainer.max_epochs': expected an integer, but got '20'"),
    ("trainer.lr=true", "key 'trainer.lr': expected a number, but got True"),
    ("trainer.progress=1", "key 'trainer.progress': expected true or false, but got 1"),
    ("trainer.report='yes'", "key 'trainer.report': expected true or false, but got 'yes'"),
    ("model.layers=[64, true]", "key 'model.layers': expected an integer, but got [64, True]"),
    ("data.split_seed=-1", "key 'data.split_seed': Input should be greater than or equal to 0, but got -1"),
    ("trainer.seed=1180591620717411303424",
     "key 'trainer.seed': Input should be less than or equal to 4294967295, but got 1180591620717411303424"),
])
def test_strict_types_and_seed_ranges(tmp_path, override, expected):
    assert _error(tmp_path, "{}", override).endswith(expected)


def test_yaml_floats_without_a_dot_still_read(tmp_path):
    assert load_config(None, ["trainer.lr=1e-3"]).trainer.lr == pytest.approx(1e-3)
    assert load_config(None, ["trainer.recon_weight=2"]).trainer.recon_weight == 2.0


def test_huge_network_is_refused_before_allocating(tmp_path):
    message = _error(tmp_path, "{}", "model.layers=[100000,100000]")
    assert message.endswith("cfg.yaml: model.layers: expected a network whose estimated training memory is at most "
                            "32 GiB, but got [100000, 100000]: 1e+10 parameters, about 442 GiB with batch_size 65536; "
                            "use narrower layers or a smaller batch")
    load_config(None, ["model.layers=[1024,1024,1024]", "data.batch_size=4096"])  # ordinary big nets pass


def test_model_memory_counts_weights_and_biases():
    from rollfit.config import model_memory

    params, need = model_memory([4, 3], 2, 1, 10)
    assert params == (2 * 4 + 4) + (4 * 3 + 3) + (3 * 1 + 1)
    assert need == 16 * params + 6 * 4 * 10 * 7


def test_a_huge_batch_size_meaning_full_batch_still_validates():
    from rollfit.config import ESTIMATE_ROWS, model_memory

    assert load_config(None, ["data.batch_size=1000000000"]).data.batch_size == 10**9
    assert model_memory([64, 32], 2, 1, 10**9) == model_memory([64, 32], 2, 1, ESTIMATE_ROWS)
