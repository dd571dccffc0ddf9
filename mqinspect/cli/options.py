"""Options shared by every data command, defined once so they read and behave the same everywhere."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

import click
import typer
from click.core import ParameterSource
from typer.core import TyperCommand

from mqinspect.errors import BadInput

Choice = TypeVar("Choice", bound=StrEnum)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"


def format_option(*choices: OutputFormat, default: OutputFormat = OutputFormat.TABLE):
    """`--format` restricted to what a command can produce (streams offer jsonl, tables may offer csv).
    A command registered with `cls=ShortFormsCommand` that offers json also takes fincore's `-J` for it."""
    allowed = choices or (OutputFormat.TABLE, OutputFormat.JSON)
    return typer.Option(
        default.value,
        "--format",
        "-f",
        click_type=click.Choice([choice.value for choice in allowed]),
        help="Output format: " + ", ".join(choice.value for choice in allowed) + ".",
        show_default=True,
    )


# --- the stream commands' shared forms: bcc's `[INTERVAL [COUNT]]`, fincore's -J, perf's `-- COMMAND` -------

JSON_SHORT = "-J"
# bcc's positional INTERVAL and COUNT, by the names of the parameters that take them (interval_argument,
# count_argument), as --help shows them.
POSITIONAL_NAMES = {"interval_arg": "INTERVAL", "count_arg": "COUNT"}
COMMAND_KEY = "mqinspect.command"  # ctx.meta: the words after `--`, for a command that starts one


class ShortFormsCommand(TyperCommand):
    """A command that reads like the tools its users know: `-J` is `--format json` (fincore) when the command
    offers json and has no -J of its own; with `takes_command`, the words after `--` are a command to start
    (perf stat, strace), kept in ctx.meta[COMMAND_KEY] and not parsed as arguments."""

    takes_command = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, click.Argument) and param.name in POSITIONAL_NAMES:
                # --help's arguments panel names an argument by its parameter's name (interval_arg, named
                # apart from --interval's); it reads as bcc's tools write it. Parsing goes by param.name.
                param.opts = [POSITIONAL_NAMES[param.name]]
        format_param = self._format_parameter()
        if format_param is not None and self._json_short():
            format_param.help = f"{format_param.help or ''} {JSON_SHORT} is --format json.".strip()

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ours, command = list(args), []
        if self.takes_command and "--" in ours:
            split = ours.index("--")
            ours, command = ours[:split], ours[split + 1 :]
        ctx.meta[COMMAND_KEY] = command
        if self._json_short():
            ours = ["--format=json" if arg == JSON_SHORT else arg for arg in ours]
        return super().parse_args(ctx, ours)

    def _format_parameter(self) -> click.Option | None:
        return next((p for p in self.params if isinstance(p, click.Option) and "--format" in p.opts), None)

    def _json_short(self) -> bool:
        claimed = any(JSON_SHORT in param.opts for param in self.params)
        format_param = self._format_parameter()
        offers_json = format_param is not None and OutputFormat.JSON in getattr(
            format_param.type, "choices", ()
        )
        return offers_json and not claimed

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        if self._json_short():
            pieces.insert(0, "[-J]")
        if self.takes_command:
            pieces.append("[-- COMMAND [ARGS]...]")
        return pieces


class CommandAfterDashes(ShortFormsCommand):
    takes_command = True


def interval_argument(minimum: float) -> Any:
    return typer.Argument(
        None,
        min=minimum,
        metavar="[INTERVAL]",
        show_default=False,
        help="Seconds per interval, as bcc tools take it (`biolatency 1 10`); the same as --interval.",
    )


def count_argument(minimum: int = 1) -> Any:
    return typer.Argument(
        None,
        min=minimum,
        metavar="[COUNT]",
        show_default=False,
        help="Intervals to print after INTERVAL; the same as --count.",
    )


def positional_or_option(positional: Any, option: Any, parameter: str, flag: str) -> Any:
    """The value given positionally (bcc's `INTERVAL COUNT`) or by its option, which is a usage error when
    both are on the command line (they might disagree)."""
    if positional is None:
        return option
    source = click.get_current_context().get_parameter_source(parameter)
    if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
        raise BadInput(
            f"{flag} {option} and the positional {parameter.upper()} {positional} both set the {parameter}: "
            "give one of them"
        )
    return positional


def interval_and_count(
    interval_arg: float | None, count_arg: int | None, interval: float, count: int | None
) -> tuple[float, int | None]:
    """The interval and count of a stream, from bcc's positional pair or from --interval and --count."""
    return (
        positional_or_option(interval_arg, interval, "interval", "--interval"),
        positional_or_option(count_arg, count, "count", "--count"),
    )


def one_line_per_interval(output: str, count: int | None) -> bool:
    """Whether a stream writes a line (or CSV row) per interval: in CSV always, in a table unless it takes
    one sample only (that one gets the whole table)."""
    return output == OutputFormat.CSV or (output == OutputFormat.TABLE and count != 1)


def parse_choices(text: str, choices: type[Choice], option: str, what: str) -> tuple[Choice, ...]:
    """'a,b+c' -> the members of `choices` named, in the order given, each once ("+" and "-" read as "_");
    "all" is every member. BadInput naming the known ones otherwise (`option` and `what` say where and what:
    "--paths", "send path")."""
    known = ", ".join(choice.value for choice in choices)
    if text.strip().lower() == "all":
        return tuple(choices)
    chosen: list[Choice] = []
    for name in (part.strip().lower().replace("+", "_").replace("-", "_") for part in text.split(",")):
        if not name:
            continue
        try:
            choice = choices(name)
        except ValueError:
            raise BadInput(f"{option}: unknown {what} {name!r} (known: {known})") from None
        if choice not in chosen:
            chosen.append(choice)
    if not chosen:
        raise BadInput(f"{option} names no {what} (known: {known})")
    return tuple(chosen)


def wide_option():
    """`--wide`: tables keep every column, in lines as long as they need (narrow output drops columns by
    priority, and says which)."""
    return typer.Option(
        False, "--wide", "-w", help="Keep every column of a table, however wide (default: fit the terminal)."
    )
