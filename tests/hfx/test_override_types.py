"""A ``str`` field keeps the text as typed; a value of the wrong type is an error, never converted.

Expected values are the literal text on the command line or in the YAML file (Hydra's grammar and YAML 1.1
read ``2024_01`` as 202401, ``1e3`` as 1000.0, ``true`` as a bool; OmegaConf would then write them back
as '202401', '1000.0', 'True').
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hfx.config.compose import compose
from hfx.errors import HfxError


@pytest.mark.parametrize(
    ("arg", "key", "text"),
    [
        ("output_dir=2024_01", "output_dir", "2024_01"),
        ("model=1e3", "model", "1e3"),
        ("model=true", "model", "true"),
        ("model=0x10", "model", "0x10"),
        ("model=01", "model", "01"),
        ("model=inf", "model", "inf"),
        ("++model=1_000", "model", "1_000"),
        ("model='1e3'", "model", "1e3"),  # quoted: Hydra's own string
        ("data.path=2024", "data.path", "2024"),
        ("lora.modules_to_save=[1e3,head,true]", "lora.modules_to_save", ["1e3", "head", "true"]),
    ],
)
def test_str_fields_keep_the_text_as_typed(arg: str, key: str, text: object) -> None:
    cfg, _ = compose(["plugin=lora", arg])
    value = OmegaConf.select(cfg, key)
    assert (OmegaConf.to_container(value) if not isinstance(value, str) else value) == text


@pytest.mark.parametrize(
    "arg",
    ["train.max_steps=1.5", "train.max_steps=true", "train.max_steps=2.0", "train.max_steps=1e3", "seed=0x10",
     "resume=2", "resume=yes", "resume=1", "train.learning_rate=true", "lora.r=abc"],
)
def test_wrong_types_are_errors(arg: str) -> None:
    with pytest.raises(HfxError) as err:
        compose(["plugin=lora", arg])
    msg = str(err.value)
    assert "\n" not in msg and f"wrong value for '{arg.split('=')[0]}'" in msg


def test_widening_and_bools_still_work() -> None:
    cfg, _ = compose(["plugin=lora", "train.learning_rate=1", "resume=true", "lora.modules_to_save=null"])
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)
    assert cfg.resume is True and cfg.lora.modules_to_save is None


def test_yaml_file_keeps_the_text_of_str_fields(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("output_dir: 2024_01\nmodel: 1e3\ndata:\n  path: true\ntrain:\n  max_steps: 7\n"
                    "lora:\n  modules_to_save: [1e3, head]\n")
    cfg, _ = compose(["plugin=lora"], str(path))
    assert (cfg.output_dir, cfg.model, cfg.data.path) == ("2024_01", "1e3", "true")
    assert cfg.train.max_steps == 7 and list(cfg.lora.modules_to_save) == ["1e3", "head"]
    path.write_text("train:\n  max_steps: 1.5\n")
    with pytest.raises(HfxError, match="wrong value for 'train.max_steps'"):
        compose(["plugin=lora"], str(path))
