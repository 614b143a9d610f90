"""The ``hfx`` command: ``run``, ``plugins``, ``config`` and ``validate``.

Every input mistake ends as one line on stderr and exit status 2; ``HFX_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from hfx.errors import HfxError
from hfx.quiet import quiet_libraries, set_verbose

__all__ = ["main"]

_EPILOG = """\
overrides use Hydra's grammar:
  key=value            change a key            (model=smollm2-135m, train.max_steps=50)
  section.key=[a,b]    a list value            (lora.target_modules=[q_proj,v_proj])
  plugin=[quant,lora]  compose plugins in order; the last one's recipe drives the run
  +key=value           add a key that does not exist yet (an entry of a dict field)
  ++key=value          add or change
  ~key                 reset a field to its default (or remove a dict entry)
  preset=NAME          load <plugin>/configs/NAME.yaml instead of default.yaml
`hfx config plugin=NAME` prints every key with its help text.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfx", description="Readable, validated extensions of the Hugging Face stack.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the libraries' own logs, warnings and progress bars (as HFX_DEBUG=1 does)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,plugins,config,validate}")
    for name, help_ in (("run", "train/evaluate/save with a plugin's recipe"),
                        ("config", "print the resolved config with each field's help")):
        p = sub.add_parser(name, help=help_, description=help_, epilog=_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", metavar="FILE", help="YAML file applied after the presets, before the overrides")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (see below)")
    sub.add_parser("plugins", help="list installed plugins")
    v = sub.add_parser("validate", help="compare plugins with their reference libraries")
    v.add_argument("overrides", nargs="*", metavar="plugin=NAME", help="plugin=NAME or plugin=[a,b] (default: all)")
    return parser


def _cmd_plugins() -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from hfx import registry

    table = Table(title="installed hfx plugins")
    for col in ("plugin", "description", "apply", "recipe", "checks", "from"):
        table.add_column(col)
    for p in registry.iter_plugins():
        module = (p.recipe or p.config_cls).__module__.split(".")[0]
        table.add_row(escape(p.name), escape(p.description), *("yes" if x else "-" for x in (p.apply, p.recipe, p.checks)), module)
    Console().print(table)
    return 0


def _cmd_config(overrides: list[str], config_file: str | None) -> int:
    from hfx.config.compose import compose

    cfg, plugins = compose(overrides, config_file)  # input errors end here, before rich is imported

    from omegaconf import OmegaConf
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from hfx.config.run import RunConfig
    from hfx.config.schema import describe

    help_rows = list(describe(RunConfig))
    for p in plugins:
        help_rows += list(describe(p.section_cls, p.name))
    table = Table(title=f"resolved config for plugin={cfg.plugin}")
    for col in ("key", "value", "type", "help"):
        table.add_column(col, overflow="fold")
    for key, type_name, _default, doc in help_rows:
        value = OmegaConf.select(cfg, key)
        shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        table.add_row(escape(key), escape(repr(shown)), escape(type_name), escape(doc))
    Console(width=max(160, Console().width)).print(table)
    return 0


def _cmd_validate(overrides: list[str]) -> int:
    from hfx.config.compose import parse_overrides, plugin_names
    from hfx.validate import print_results, run_checks

    parsed = parse_overrides(overrides)
    for ov in parsed:
        if ov.key_or_group != "plugin":
            raise HfxError(f"hfx validate takes only plugin=NAME, got {ov.input_line!r}")
    names = plugin_names(parsed) if parsed else None
    results = run_checks(names)
    print_results(results)
    if not results:
        raise HfxError("no checks to run: the selected plugins define none")
    return 0 if all(r.passed for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hfx`` console script (also ``python -m hfx``)."""
    args = _parser().parse_args(argv)
    set_verbose(args.verbose)
    quiet_libraries()  # before any library is imported: their banners, warnings and per-file bars stay off
    try:
        if args.command == "plugins":
            return _cmd_plugins()
        if args.command == "config":
            return _cmd_config(args.overrides, args.config)
        if args.command == "validate":
            return _cmd_validate(args.overrides)
        from hfx.config.compose import compose_run

        composed = compose_run(args.overrides, args.config)  # config errors end here, before torch is imported
        from hfx.runner.launch import cpu_relaunch

        status = cpu_relaunch(sys.argv[1:] if argv is None else argv)
        if status is not None:  # the run happened in the processes it started
            return status
        from hfx.runner.run import run

        run(args.overrides, args.config, composed=composed)  # the same config: composed and validated once
        return 0
    except HfxError as err:
        if os.environ.get("HFX_DEBUG") == "1":
            traceback.print_exc()
        print(f"hfx: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("hfx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
