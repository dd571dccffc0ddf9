"""The `mqinspect` command: the root Typer app, its command groups, and the one error ladder.

Every failure, from a mistyped option to a missing capability, ends here as one line on stderr and an
`ExitStatus`. `--debug` (anywhere on the command line) adds the traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import click
import typer

from mqinspect import __version__
from mqinspect.cli.lazy import LazyGroup
from mqinspect.errors import ExitStatus, describe, exit_status_for

DEBUG_FLAG = "--debug"


class MqinspectGroup(LazyGroup):
    """The root group. It owns error reporting so that every command behaves the same.

    Each command's module is imported only when that command runs (or `--help` lists them all), so a
    command pays only for its own imports: Textual only for top, replay and demo; bcc only when a probe
    loads. The order here is the order of `mqinspect --help`.
    """

    COMMAND_MODULES: ClassVar[Mapping[str, str]] = {
        "cache": "mqinspect.cli.cache",
        "doctor": "mqinspect.cli.doctor",
        "mem": "mqinspect.cli.mem",
        "top": "mqinspect.cli.top",
        "replay": "mqinspect.cli.top",
        "demo": "mqinspect.cli.demo",
        "store": "mqinspect.cli.store",
        "export": "mqinspect.cli.export",
        "trace": "mqinspect.cli.trace",
        "lab": "mqinspect.cli.lab",
    }

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        # after `--`: a command to start (`trace ... -- CMD`), whose words are not ours
        ours, command = _split_at_dashes(args)
        debug = DEBUG_FLAG in ours or bool(os.environ.get("MQINSPECT_DEBUG"))
        if debug:  # accepted anywhere, like httpie's --debug; the root callback sees it first
            args = [DEBUG_FLAG, *(arg for arg in ours if arg != DEBUG_FLAG), *command]
        status = run_with_error_ladder(
            lambda: super(MqinspectGroup, self).main(
                args, prog_name or "mqinspect", complete_var, standalone_mode=False, **extra
            ),
            debug=debug,
        )
        if not standalone_mode:
            return status
        sys.exit(status)


def _split_at_dashes(args: list[str]) -> tuple[list[str], list[str]]:
    """`args` before the first `--`, and from it on."""
    split = args.index("--") if "--" in args else len(args)
    return args[:split], args[split:]


def run_with_error_ladder(command, *, debug: bool) -> int:
    """Run the parsed command and map whatever escapes it to an exit status and one stderr line."""
    try:
        result = command()
    except click.UsageError as error:
        _report(_usage_line(error))
        return ExitStatus.BAD_INPUT
    except click.exceptions.Exit as error:
        return error.exit_code
    except (click.Abort, KeyboardInterrupt):
        _report("interrupted")
        return ExitStatus.INTERRUPTED
    except click.ClickException as error:
        _report(error.format_message())
        return error.exit_code
    except BrokenPipeError:
        return _reader_gone()
    except SystemExit as error:
        # click turns a broken pipe into sys.exit(1) itself; it is the same reader gone away
        if isinstance(error.__context__, BrokenPipeError):
            return _reader_gone()
        raise
    except Exception as error:
        if debug:
            import traceback  # only --debug prints one: every command's start-up need not import it

            traceback.print_exc()
        _report(describe(error))
        return exit_status_for(error)
    return int(result) if isinstance(result, int) else ExitStatus.OK


def _reader_gone() -> int:
    """The reader went away (`mqinspect ... | head`): nothing left to say, and nobody to say it to."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the dead stream for interpreter shutdown
    return ExitStatus.OK


def _usage_line(error: click.UsageError) -> str:
    command = error.ctx.command_path if error.ctx else "mqinspect"
    return f"{error.format_message()} (see '{command} --help')"


def _report(message: str) -> None:
    print(f"mqinspect: error: {message}", file=sys.stderr)


app = typer.Typer(
    cls=MqinspectGroup,
    name="mqinspect",
    help="Inspect RocketMQ-format message-log stores (CommitLog, ConsumeQueue, index) and how the kernel "
    "serves them: page cache, dirty pages, faults, writeback and copies per send path.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        print(f"mqinspect {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, DEBUG_FLAG, help="Show tracebacks for errors (accepted anywhere)."),
) -> None:
    """mqinspect: is the hot tail of the log in the page cache, how close is writeback throttling, who pays
    the page faults, and how many times is each byte copied on its way to a consumer?"""


def main() -> None:
    app()
