"""The settings table of docs/deployment.md, rendered from `app.settings.Settings`.

`python -m app.settings_doc` prints the Markdown table: one row per field, with its
environment variable, its default and the description given in its `Field`.
`python -m app.settings_doc --write docs/deployment.md` replaces the table between the
`<!-- settings-table:start -->` and `<!-- settings-table:end -->` comments of that file;
tests/test_docs.py fails when the two differ, so the table cannot drift from the code.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from app.settings import Settings, _default_threads

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"

# How a default computed at start-up is written in the table.
FACTORY_DEFAULTS: dict[Callable[[], Any], str] = {_default_threads: "CPUs available"}


def env_var(name: str, field: FieldInfo | None = None) -> str:
    """The environment variable that sets field `name` (an alias, else prefix + NAME)."""
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, str):
        return alias.upper()
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def default_text(field: FieldInfo) -> str:
    """A field's default as the table spells it: `unset`, `""`, `false`, `10,000,000`, ..."""
    if field.default_factory is not None:
        return FACTORY_DEFAULTS.get(field.default_factory, field.default_factory.__name__)
    default = field.default
    if default is None or default is PydanticUndefined:
        return "unset"
    if isinstance(default, str) and not default:
        return '""'
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, int) and default >= 10_000:
        return f"{default:,}"
    return str(default)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def settings_table() -> str:
    """The Markdown table of every setting, in the order `Settings` declares them."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        lines.append(
            f"| `{env_var(name, field)}` | `{default_text(field)}` "
            f"| {_cell(field.description or '')} |"
        )
    return "\n".join(lines)


def table_in(text: str) -> str:
    """What a document holds between the two marker comments (stripped)."""
    if START not in text or END not in text:
        raise ValueError(f"no {START} ... {END} block")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def with_table(text: str, table: str) -> str:
    """`text` with the block between the markers replaced by `table`."""
    table_in(text)  # both markers present
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help="replace the table between the marker comments of FILE instead of printing it",
    )
    args = parser.parse_args(argv)
    table = settings_table()
    if args.write is None:
        print(table)
        return
    args.write.write_text(with_table(args.write.read_text(), table))


if __name__ == "__main__":
    main()
