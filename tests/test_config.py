from pathlib import Path

import pytest

from splitleak.config import ConfigError, apply_overrides, config_digest, dump_config, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.run.id
    header = path.read_text().splitlines()[0]
    assert header.startswith("#"), "a shipped config's header comment gives the command that runs it"


def test_demo_default_is_digits():
    assert load_config(None).data.name == "digits"


def test_every_problem_is_reported_with_its_key_path():
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "train": {"epochs": 0, "lr": -1},
                "data": {"name": "nope"},
                "model": {"top_layers": 4},
                "adversary": {"bogus": 1},
            }
        )
    text = str(err.value)
    for expected in ("train.epochs", "train.lr", "model.top_layers", "adversary.bogus"):
        assert expected in text
    # unknown registry names are reported too, with the known ones
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; known: .*digits"):
        parse_config({"data": {"name": "nope"}})


def test_an_unknown_key_names_the_key_meant():
    """A misspelt key gets its near spelling in the same section; a key put in the wrong section gets
    the places that take it; a key like no other gets neither."""

    def problem(tree):
        with pytest.raises(ConfigError) as err:
            parse_config(tree)
        return str(err.value)

    assert "train.epoch: not a key here (did you mean train.epochs?)" in problem({"train": {"epoch": 3}})
    assert "did you mean label_party.defense or sweep.defense?" in problem({"defense": {"name": "label_dp"}})
    assert "did you mean label_party.defense.epsilon?" in problem({"label_party": {"defense": {"epsilom": 1}}})
    assert problem({"adversary": {"bogus": 1}}).endswith("adversary.bogus: not a key here")


def test_overrides_parse_values_as_yaml():
    tree = apply_overrides({}, ["train.epochs=3", "adversary.capture=true", "run.id=x", "model.bottom_hidden=[8, 4]"])
    config = parse_config(tree)
    assert config.train.epochs == 3 and config.adversary.capture is True
    assert config.model.bottom_hidden == [8, 4]
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        apply_overrides({}, ["train.epochs"])


def test_dump_round_trips_and_digest_ignores_local_paths(tmp_path):
    config = load_config(REPO / "configs" / "mnist.yaml")
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    again = load_config(path)
    assert again == config
    moved = load_config(path, ["data.path=/elsewhere"])
    assert config_digest(moved) == config_digest(config)
    assert config_digest(load_config(path, ["model.cut_dim=7"])) != config_digest(config)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")
