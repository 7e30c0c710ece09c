from dataclasses import dataclass
import argparse
import json

import pytest

from interp.core.config import ConfigError, StageConfig, field_help, option
from interp.models.checkpoint import ModelConfig
from interp.stages.pretrain import PretrainConfig
from interp.worlds.toy.corpus import CorpusConfig
from interp.worlds.toy.world import WorldConfig


@dataclass
class _Example(StageConfig):
    lr: float = option(1e-3, "Learning rate.")
    name: str = option("a", "A name.")
    sizes: tuple[int, ...] = option((1, 2), "Sizes.")
    flag: bool = option(False, "A flag.")

    def validate(self):
        self.require(self.lr > 0, "lr", "must be positive")


def test_config__bad_value_names_the_field():
    with pytest.raises(ConfigError, match=r"_Example\.lr=-1\.0: must be positive"):
        _Example(lr=-1.0)


def test_config__wrong_type_names_the_field():
    with pytest.raises(ConfigError, match=r"_Example\.name"):
        _Example(name=3)
    with pytest.raises(ConfigError, match=r"_Example\.sizes"):
        _Example(sizes=("x",))


def test_config__json_round_trip(tmp_path):
    cfg = _Example(lr=2, sizes=[3, 4], flag=True)
    assert cfg.lr == 2.0 and cfg.sizes == (3, 4)
    cfg.save(tmp_path / "c.json")
    assert _Example.load(tmp_path / "c.json") == cfg


def test_config__unknown_key_is_an_error(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"lr": 1.0, "typo_field": 3}))
    with pytest.raises(ConfigError, match="typo_field"):
        _Example.load(tmp_path / "c.json")


def test_config__load_refuses_another_config_class(tmp_path):
    ModelConfig().save(tmp_path / "m.json")
    with pytest.raises(ConfigError, match="holds a ModelConfig"):
        _Example.load(tmp_path / "m.json")


def test_config__cli_options_from_fields():
    parser = argparse.ArgumentParser()
    _Example.add_arguments(parser)
    args = parser.parse_args(["--lr", "0.5", "--sizes", "7", "8", "--flag"])
    cfg = _Example.from_args(args)
    assert cfg == _Example(lr=0.5, sizes=(7, 8), flag=True)
    assert _Example.from_args(parser.parse_args([])) == _Example()


@dataclass
class _Optionals(StageConfig):
    count: int | None = option(None, "A count or None.")
    label: str | None = option(None, "A label or None.")


def test_config__cli_optional_fields_keep_their_own_types():
    # each optional field parses with its own type (not the type of the last optional field)
    parser = argparse.ArgumentParser()
    _Optionals.add_arguments(parser)
    assert _Optionals.from_args(parser.parse_args(["--count", "3", "--label", "x"])) == _Optionals(count=3, label="x")
    assert _Optionals.from_args(parser.parse_args(["--count", "none"])) == _Optionals()


def test_config__nested_configs_round_trip(tmp_path):
    cfg = PretrainConfig(seed=3, corpus=CorpusConfig(qa=0.5), world=WorldConfig(n_eval_phrasings=55))
    cfg.save(tmp_path / "p.json")
    assert PretrainConfig.load(tmp_path / "p.json") == cfg


@pytest.mark.parametrize("cls", [ModelConfig, PretrainConfig, CorpusConfig, WorldConfig])
def test_config__every_field_is_documented(cls):
    undocumented = [name for name, text in field_help(cls).items() if len(text) < 10]
    assert not undocumented


def test_model_config__heads_must_divide_width():
    with pytest.raises(ConfigError, match="n_heads"):
        ModelConfig(d_model=130, n_heads=4)
