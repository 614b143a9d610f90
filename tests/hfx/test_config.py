"""Config composition (hfx.config.compose): Hydra's override grammar, presets, --config layering, help text.

Expected values come from three places, named in each test: the dataclass defaults (RunConfig, TrainConfig,
DataConfig, FinetuneConfig), the finetune presets (plugins/finetune/configs/*.yaml), and the arguments the
test itself passes. Nothing here loads a model, so the whole module runs in about a second.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from hfx import registry
from hfx.config.compose import compose, typed
from hfx.config.run import RunConfig, TrainConfig
from hfx.config.schema import describe, field_docs
from hfx.data.loading import DataConfig
from hfx.errors import HfxError
from hfx_plugins.finetune.config import FinetuneConfig, FinetuneRunConfig

PRESETS = Path(registry.get("finetune").presets_dir)  # type: ignore[arg-type]


def preset(name: str) -> dict:
    """A finetune preset as plain YAML (read independently of hfx's own loader)."""
    return yaml.safe_load((PRESETS / f"{name}.yaml").read_text())


# A test-only plugin with a dict field and a list field: the built-in sections have neither, and `+key=` /
# `~key` on dict entries need one. It is put in the registry's cache, so compose() finds it like any plugin.
@dataclass
class ExtraConfig:
    """Test-only plugin config."""

    tags: dict[str, int] = field(default_factory=dict)
    """Free-form named integers (a dict field: accepts new keys)."""
    layers: list[int] = field(default_factory=lambda: [0])
    """Layer indices (a list field)."""
    scale: float = 1.0
    """A typed scalar."""


@pytest.fixture
def extra_plugin(monkeypatch: pytest.MonkeyPatch) -> registry.Plugin:
    plugin = registry.Plugin(name="extra", description="test only", config_cls=ExtraConfig)
    monkeypatch.setitem(registry._cache, "extra", plugin)
    return plugin


def error_of(args: list[str], config_file: str | None = None) -> str:
    with pytest.raises(HfxError) as info:
        compose(args, config_file)
    msg = str(info.value)
    assert "\n" not in msg, "errors are one line"
    return msg


# ---------------------------------------------------------------------------------------------- overrides


def test_plain_plugin_gets_defaults_then_default_preset() -> None:
    cfg, plugins = compose(["plugin=finetune"])
    assert [p.name for p in plugins] == ["finetune"]
    assert cfg.plugin == ["finetune"]
    d = preset("default")  # the default preset overrides the dataclass defaults
    assert cfg.model == d["model"] == "minilm"
    assert cfg.train.max_steps == d["train"]["max_steps"] != TrainConfig().max_steps
    assert cfg.data.path == d["data"]["path"]
    # keys the preset does not set keep the dataclass default
    assert cfg.train.weight_decay == TrainConfig().weight_decay
    assert cfg.finetune.classifier_dropout == FinetuneConfig().classifier_dropout


def test_dotted_keys_change_nested_fields_with_their_types() -> None:
    cfg, plugins = compose(["plugin=finetune", "train.max_steps=7", "train.learning_rate=1e-3",
                            "finetune.num_labels=3", "resume=true", "data.path=somefile.jsonl"])
    run, fcfgs = typed(cfg, plugins)
    assert run.train.max_steps == 7 and isinstance(run.train.max_steps, int)
    assert run.train.learning_rate == pytest.approx(1e-3)
    assert run.resume is True
    assert run.data.path == "somefile.jsonl"
    assert isinstance(fcfgs["finetune"], FinetuneConfig) and fcfgs["finetune"].num_labels == 3


def test_plugin_list_syntax() -> None:
    cfg, plugins = compose(["plugin=[finetune]"])
    assert cfg.plugin == ["finetune"] and [p.name for p in plugins] == ["finetune"]
    assert "names a plugin twice" in error_of(["plugin=[finetune,finetune]"])
    assert "plugin must be a name or a list of names" in error_of(["plugin=3"])
    assert "no plugin given" in error_of(["train.max_steps=3"])


def test_two_plugins_each_under_its_own_key(extra_plugin: registry.Plugin) -> None:
    cfg, plugins = compose(["plugin=[extra,finetune]", "extra.scale=2.5", "finetune.num_labels=4"])
    assert [p.name for p in plugins] == ["extra", "finetune"] and cfg.plugin == ["extra", "finetune"]
    _, fcfgs = typed(cfg, plugins)
    assert fcfgs["extra"] == ExtraConfig(scale=2.5)
    assert fcfgs["finetune"].num_labels == 4


def test_list_value_on_a_list_field(extra_plugin: registry.Plugin) -> None:
    cfg, plugins = compose(["plugin=[extra,finetune]", "extra.layers=[3,5,8]"])
    assert typed(cfg, plugins)[1]["extra"].layers == [3, 5, 8]
    assert "extra.layers" in error_of(["plugin=[extra,finetune]", "extra.layers=[a,b]"])  # list[int]


def test_plus_adds_an_entry_to_a_dict_field_and_tilde_removes_it(extra_plugin: registry.Plugin) -> None:
    cfg, plugins = compose(["plugin=[extra,finetune]", "+extra.tags.alpha=3", "+extra.tags.beta=4"])
    assert typed(cfg, plugins)[1]["extra"].tags == {"alpha": 3, "beta": 4}
    cfg, plugins = compose(["plugin=[extra,finetune]", "+extra.tags.alpha=3", "+extra.tags.beta=4",
                            "~extra.tags.alpha"])
    assert typed(cfg, plugins)[1]["extra"].tags == {"beta": 4}
    # the dict is dict[str, int]: a non-integer entry is refused with the key
    assert "extra.tags.alpha" in error_of(["plugin=[extra,finetune]", "+extra.tags.alpha=many"])
    # `+` refuses a key that already exists and says what to write instead
    msg = error_of(["plugin=[extra,finetune]", "+extra.tags.alpha=3", "+extra.tags.alpha=5"])
    assert "already exists" in msg and "++extra.tags.alpha=" in msg


def test_plus_plus_adds_or_changes(extra_plugin: registry.Plugin) -> None:
    cfg, plugins = compose(["plugin=[extra,finetune]", "++extra.tags.alpha=3", "++extra.tags.alpha=5",
                            "++train.max_steps=9"])
    assert typed(cfg, plugins)[1]["extra"].tags == {"alpha": 5}
    assert cfg.train.max_steps == 9


@pytest.mark.parametrize("arg", ["+train.nope=1", "++train.nope=1", "+finetune.nope=1", "+nope=1"])
def test_plus_is_refused_on_typed_sections(arg: str) -> None:
    assert "typed section with fixed keys" in error_of(["plugin=finetune", arg])


def test_plus_on_an_existing_typed_key_is_refused() -> None:
    assert "already exists" in error_of(["plugin=finetune", "+train.max_steps=9"])


def test_tilde_resets_to_the_dataclass_default() -> None:
    # The default preset sets train.max_steps=120 and the override sets 7; `~` goes back to the
    # dataclass default (TrainConfig.max_steps = 100), not to the preset's value.
    cfg, _ = compose(["plugin=finetune", "train.max_steps=7", "~train.max_steps"])
    assert cfg.train.max_steps == TrainConfig().max_steps
    cfg, _ = compose(["plugin=finetune", "finetune.num_labels=5", "finetune.freeze_base=true", "~finetune"])
    assert OmegaConf.to_object(cfg.finetune) == FinetuneRunConfig()  # the section is typed by the run config
    assert "no such key" in error_of(["plugin=finetune", "~train.nope"])


def test_whole_section_replacement_is_type_checked() -> None:
    # A plugin section is typed like `train`: assigning a dict, a number or null to it is refused (before the
    # fix in compose._schema, `finetune={num_label: 3}` silently replaced FinetuneConfig by a plain dict).
    for arg in ["finetune={num_label: 3}", "finetune=3", "finetune=null", "train=3"]:
        msg = error_of(["plugin=finetune", arg])
        assert msg.startswith("wrong value for 'finetune'" if arg.startswith("finetune") else "wrong value for 'train'")


def test_unknown_key_suggests_the_nearest() -> None:
    msg = error_of(["plugin=finetune", "train.max_step=3"])
    assert "unknown config key 'train.max_step'" in msg and "did you mean 'train.max_steps'" in msg
    msg = error_of(["plugin=finetune", "finetune.num_label=3"])
    assert "did you mean 'finetune.num_labels'" in msg
    msg = error_of(["plugin=finetune", "modle=x"])
    assert "did you mean 'model'" in msg


@pytest.mark.parametrize(
    ("arg", "key", "expected"),
    [
        ("train.max_steps=abc", "train.max_steps", "Integer"),
        ("train.learning_rate=fast", "train.learning_rate", "Float"),
        ("resume=maybe", "resume", "bool"),
        ("data.max_length=3.5", "data.max_length", "Integer"),
        ("finetune.num_labels=[1,2]", "finetune.num_labels", "Integer"),
        ("train.max_steps=null", "train.max_steps", "not Optional"),
    ],
)
def test_wrong_type_names_key_and_expected_type(arg: str, key: str, expected: str) -> None:
    msg = error_of(["plugin=finetune", arg])
    assert f"wrong value for '{key}'" in msg and expected in msg


def test_post_init_checks_run_at_compose_time() -> None:
    assert "train.max_steps must be at least 1" in error_of(["plugin=finetune", "train.max_steps=0"])
    assert "train.mixed_precision must be one of" in error_of(["plugin=finetune", "train.mixed_precision=fp8"])
    assert "finetune.num_labels must be at least 1" in error_of(["plugin=finetune", "finetune.num_labels=0"])


@pytest.mark.parametrize(
    ("arg", "needle"),
    [
        ("max_steps", "is not key=value"),
        ("model=a=b", "mismatched input '='"),  # Hydra's reason, not its link (fixed in parse_overrides)
        ("train.max_steps=[1,2", "cannot parse override"),
        ("train.max_steps=1,2", "sweeps"),
    ],
)
def test_malformed_arguments(arg: str, needle: str) -> None:
    msg = error_of(["plugin=finetune", arg])
    assert needle in msg and "hydra.cc" not in msg


def test_quoted_value_may_hold_equals_sign() -> None:
    cfg, _ = compose(["plugin=finetune", "model='dir/a=b'"])
    assert cfg.model == "dir/a=b"


# ------------------------------------------------------------------------------------ presets and --config


def test_named_preset_seq2seq() -> None:
    cfg, _ = compose(["plugin=finetune", "preset=seq2seq"])
    s = preset("seq2seq")
    assert cfg.preset == "seq2seq"
    assert (cfg.model, cfg.task) == (s["model"], s["task"]) == ("minilm2minilm", "seq2seq-lm")
    assert cfg.data.target_column == s["data"]["target_column"]
    assert cfg.train.max_steps == s["train"]["max_steps"]
    # a key set only in default.yaml is not applied: presets replace each other, they do not stack
    assert cfg.finetune.num_labels == FinetuneConfig().num_labels
    assert cfg.train.eval_every == TrainConfig().eval_every != preset("default")["train"]["eval_every"]


def test_unknown_preset_lists_the_presets() -> None:
    msg = error_of(["plugin=finetune", "preset=seq2sq"])
    assert "preset 'seq2sq'" in msg
    assert all(name in msg for name in ("decoder", "default", "seq2seq"))


def test_config_file_layers_between_preset_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  max_steps: 7\n  batch_size: 3\nfinetune:\n  num_labels: 4\n")
    cfg, _ = compose(["plugin=finetune", "train.batch_size=5"], str(path))
    assert cfg.train.max_steps == 7  # file over preset (default.yaml says 120)
    assert cfg.train.batch_size == 5  # override over file
    assert cfg.finetune.num_labels == 4  # file over preset (default.yaml says 2)
    assert cfg.train.warmup_steps == preset("default")["train"]["warmup_steps"]  # preset, untouched by the file
    assert cfg.train.weight_decay == TrainConfig().weight_decay  # dataclass default, set by no layer


@pytest.mark.parametrize("plugin_line", ["plugin: finetune", "plugin: [finetune]"])
def test_config_file_may_name_the_plugin_and_preset(tmp_path: Path, plugin_line: str) -> None:
    # `plugin: finetune` (a plain name) failed before the fix in compose(): it was merged into list[str].
    path = tmp_path / "run.yaml"
    path.write_text(f"{plugin_line}\npreset: decoder\ntrain:\n  max_steps: 7\n")
    cfg, plugins = compose([], str(path))
    assert [p.name for p in plugins] == ["finetune"] and cfg.plugin == ["finetune"]
    assert cfg.model == preset("decoder")["model"] == "smollm2-135m"
    assert cfg.train.max_steps == 7


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert "does not exist" in error_of(["plugin=finetune"], str(missing))
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("train:\n  max_stps: 7\n")
    msg = error_of(["plugin=finetune"], str(bad_key))
    assert str(bad_key) in msg and "did you mean 'train.max_steps'" in msg
    bad_type = tmp_path / "bad_type.yaml"
    bad_type.write_text("train:\n  max_steps: seven\n")
    msg = error_of(["plugin=finetune"], str(bad_type))
    assert str(bad_type) in msg and "train.max_steps" in msg and "Integer" in msg
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- 1\n- 2\n")
    assert "must hold a mapping" in error_of(["plugin=finetune"], str(not_a_mapping))
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1, 2\n")
    assert "cannot read config file" in error_of(["plugin=finetune"], str(broken))


def test_plugin_named_like_a_run_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A plugin called `train` would replace the train section; compose refuses it (fixed in compose._schema).
    monkeypatch.setitem(registry._cache, "train", registry.Plugin("train", "clash", ExtraConfig))
    assert "has the name of a run setting" in error_of(["plugin=train"])


# --------------------------------------------------------------------------------------------- help text


@pytest.mark.parametrize("cls", [RunConfig, TrainConfig, DataConfig, FinetuneConfig])
def test_every_field_has_help(cls: type) -> None:
    docs = field_docs(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    assert sorted(docs) == sorted(names)
    assert all(docs[n].strip() for n in names), [n for n in names if not docs[n].strip()]


def test_field_docs_reads_the_docstring_under_each_field() -> None:
    # Copied by hand from plugins/finetune/config.py: the string on the line after the field.
    assert field_docs(FinetuneConfig)["freeze_base"] == (
        "Train only the new head (linear probing) instead of every weight."
    )


def test_describe_flattens_nested_sections() -> None:
    rows = {key: (type_name, default, doc) for key, type_name, default, doc in describe(RunConfig)}
    expected = {f.name for f in dataclasses.fields(RunConfig)} - {"data", "train"}
    expected |= {f"data.{f.name}" for f in dataclasses.fields(DataConfig)}
    expected |= {f"train.{f.name}" for f in dataclasses.fields(TrainConfig)}
    assert set(rows) == expected
    assert rows["train.max_steps"][:2] == ("int", TrainConfig().max_steps)
    assert rows["data.path"][1] == DataConfig().path
    assert all(doc for _, _, doc in rows.values())


def test_every_installed_plugin_documents_every_field() -> None:
    plugins = registry.iter_plugins()
    assert "finetune" in [p.name for p in plugins]
    for p in plugins:
        assert p.description.strip() and "\n" not in p.description, p.name
        rows = list(describe(p.config_cls, p.name))
        assert rows, f"{p.name}: config has no fields"
        undocumented = [key for key, _, _, doc in rows if not doc.strip()]
        assert not undocumented, f"{p.name}: fields without help: {undocumented}"
        for f in dataclasses.fields(p.config_cls):  # a default for every field
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
        p.config_cls()  # the defaults pass the config's own checks
