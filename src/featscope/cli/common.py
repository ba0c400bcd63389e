"""The root ``featscope`` Typer app and the helpers every verb group shares (output, errors, progress).

Each verb group lives in its own module of this package and registers its commands on :data:`app`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(help="featscope: compare the feature spaces of CNN backbones over the same images.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

# Piped output (logs, CI) gets a wide fixed width instead of Rich's 80-column fallback.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_state: dict[str, Any] = {}

# Errors a user can fix: printed as one line with the fix, exit code 2, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, LookupError, FileNotFoundError, PermissionError)


@app.callback()
def _main(data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="FEATSCOPE_DATA_DIR",
                                                     help="Where the catalog and artifacts live (default ./featscope-data).")) -> None:
    _state["data_dir"] = data_dir


def ws():
    if "ws" not in _state:
        from featscope.config import Settings
        from featscope.workspace import Workspace

        settings = Settings() if _state.get("data_dir") is None else Settings(data_dir=_state["data_dir"])
        _state["ws"] = Workspace(settings)
    return _state["ws"]


def run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None


def emit(rows: list, columns: list[str], as_json: bool, title: str) -> None:
    dicts = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in rows]
    if as_json:
        sys.stdout.write(json.dumps(dicts, indent=2, default=str) + "\n")
        return
    if not dicts:
        out.print(f"no {title} yet")
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for d in dicts:
        table.add_row(*[cell(d.get(c)) for c in columns])
    out.print(table)


def cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, list):
        return ", ".join(map(str, v[:12])) + (" ..." if len(v) > 12 else "")
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]
    return "" if v is None else str(v)


def count_progress(label: str):
    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                        transient=True)
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


def say(message: str) -> None:
    err.print(message, highlight=False)


def write_output(text: str, out_file: Optional[Path]) -> None:
    if out_file is None:
        sys.stdout.write(text)
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text, encoding="utf-8")
    err.print(f"wrote {out_file}", highlight=False)


def csv_text(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    columns = list(dict.fromkeys(c for r in rows for c in r))
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
