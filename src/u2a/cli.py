"""The ``u2a`` command. Each area of the package registers its own subcommands.

A subcommand module exposes ``register(subparsers)``, which adds its parser(s) and sets
``func`` (called with the parsed ``argparse.Namespace``, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from u2a import __version__
from u2a.errors import U2AError

# Modules that add subcommands, in the order they appear in ``u2a --help``.
SUBCOMMAND_MODULES = [
    "u2a.commands.params",
    "u2a.commands.data",
    "u2a.commands.models",
    "u2a.commands.train",
    "u2a.commands.evaluate",
    "u2a.commands.experiment",
    "u2a.commands.demo",
    "u2a.commands.bench",
    "u2a.commands.export",
]


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _IntermixedParser(argparse.ArgumentParser):
    """Lets positionals (KEY=VALUE overrides) come after options too:
    ``u2a train CONFIG --no-progress train.epochs=1``. Parsers that hold subcommands of their own
    cannot be parsed intermixed; they parse as usual."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        except TypeError:  # a parser with subcommands
            return super().parse_known_args(args, namespace)
        finally:
            self._inside = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="u2a",
        description="Unified Unimodal Adaptation: multimodal models that stay accurate when modalities are missing.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"u2a {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_IntermixedParser)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub, _Formatter)
    return parser


def _quiet_libraries() -> None:
    """transformers' progress bars bury u2a's own output. Its warnings stay: the load reports of
    weights an encoder leaves out on purpose are held back where the encoders are loaded
    (:func:`u2a.encoders.base.load_checked`), so what it still says is worth reading."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _plain_warnings() -> None:
    """u2a's own warnings (:class:`~u2a.errors.U2AWarning`) as one line each, ``u2a: warning: ...``."""
    import warnings

    from u2a.errors import U2AWarning

    shown = warnings.showwarning
    if getattr(shown, "u2a_plain", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if isinstance(category, type) and issubclass(category, U2AWarning):
            print(f"u2a: warning: {message}", file=file or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    show.u2a_plain = True  # type: ignore[attr-defined]
    warnings.showwarning = show


#: the commands that run as one of several processes (torchrun, accelerate launch)
MULTI_PROCESS_COMMANDS = ("train",)


def _one_process_unless_training(command: str) -> None:
    """Under a multi-process launcher every process would run the whole command and write the same
    outputs: refuse, naming the launch, for the commands that run in one process."""
    import os

    from u2a.errors import ConfigError

    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    if world > 1 and command not in MULTI_PROCESS_COMMANDS:
        raise ConfigError(f"`u2a {command}` runs in one process, but this is one of {world} processes (WORLD_SIZE="
                          f"{world}, set by torchrun or accelerate launch); run it without the launcher "
                          f"(only {', '.join(f'`u2a {c}`' for c in MULTI_PROCESS_COMMANDS)} trains on several)")


def main(argv: list[str] | None = None) -> int:
    from u2a.allocator import tune_allocator

    tune_allocator()  # before the first tensor: see u2a.allocator
    parser = build_parser()
    _quiet_libraries()
    _plain_warnings()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        _one_process_unless_training(args.command)
        return int(args.func(args) or 0)
    except U2AError as e:
        print(f"u2a: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("u2a: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `u2a ... | head`: the reader went away; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # a full disk, a read-only folder, a permission: the path, not a traceback
        from u2a.io import describe_oserror

        print(f"u2a: error: {describe_oserror(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
