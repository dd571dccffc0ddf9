"""Command groups whose commands are imported only when they are looked up.

A command's module imports what its command needs (Textual for `top`, the store's inspection code for
`store stat`, the eBPF probes for `trace`), so importing every module to build the command line made every
command pay for all of them. A `LazyGroup` names its commands and the module that defines each; a module is
imported, and its command built, the first time click or typer looks the name up: to run it, or for `--help`,
which lists every command. Typos still get suggestions, because the names are known without importing.

A module defines its commands as it always did and exposes `register(app: typer.Typer)`, which adds them
to `app`; the group calls it on a throwaway Typer app and keeps the one command it wanted.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, ClassVar

import click
import typer
from typer.core import TyperGroup


def command_from_module(module_name: str, command_name: str) -> click.Command:
    """The click command `command_name` as the `register` function of `module_name` defines it."""
    return _commands_of(module_name)[command_name]


@functools.cache
def _commands_of(module_name: str) -> Mapping[str, click.Command]:
    """Every command the module registers, built once (`top` and `replay` share a module)."""
    holder = typer.Typer()
    importlib.import_module(module_name).register(holder)
    commands = typer.main.get_group(holder).commands
    for command in commands.values():
        reflow_help(command)
    return commands


def reflow_help(command: click.Command) -> None:
    """Join the lines of each paragraph of the command's help (and its subcommands'), so that the terminal's
    width decides where they break: typer keeps a docstring's line breaks after its first paragraph, which
    cut `--help` lines in odd places at any width but the source's. A paragraph with an indented line or a
    list item keeps its lines."""
    if command.help:
        command.help = "\n\n".join(map(_joined_paragraph, inspect.cleandoc(command.help).split("\n\n")))
    subcommands = getattr(command, "commands", {})
    built = subcommands.built() if isinstance(subcommands, LazyCommands) else subcommands
    for subcommand in built.values():
        reflow_help(subcommand)


def _joined_paragraph(paragraph: str) -> str:
    lines = paragraph.splitlines()
    kept = paragraph.startswith("\b") or any(
        line[:1].isspace() or line.startswith(("- ", "* ")) for line in lines
    )
    return paragraph if kept else " ".join(line.strip() for line in lines)


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name: those already built, and those built from their module on first access.

    Iteration gives every name in order (built ones first, then the modules' in the order given) without
    importing anything; looking a name up imports its module once.
    """

    def __init__(self, built: Mapping[str, click.Command], modules: Mapping[str, str]):
        self._built = dict(built)
        self._modules = dict(modules)
        self._order = list(dict.fromkeys([*self._built, *self._modules]))

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._built:
            if name not in self._modules:
                raise KeyError(name)
            self._built[name] = command_from_module(self._modules[name], name)
        return self._built[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._built[name] = command
        if name not in self._order:
            self._order.append(name)

    def __delitem__(self, name: str) -> None:
        if name not in self._order:
            raise KeyError(name)
        self._built.pop(name, None)
        self._modules.pop(name, None)
        self._order.remove(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._order

    def built(self) -> Mapping[str, click.Command]:
        """The commands built so far, without importing any module."""
        return dict(self._built)


class LazyGroup(TyperGroup):
    """A typer group whose `COMMAND_MODULES` ({command name: module}) are imported on first use.

    Subclass it with the mapping, and pass the subclass as `cls=` to `typer.Typer`.
    """

    COMMAND_MODULES: ClassVar[Mapping[str, str]] = {}

    def __init__(self, *, commands: Mapping[str, click.Command] | None = None, **attrs: Any):
        super().__init__(commands=LazyCommands(commands or {}, self.COMMAND_MODULES), **attrs)
