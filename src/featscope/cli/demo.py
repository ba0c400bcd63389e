"""``featscope demo``: the study reproduced on generated data, end to end as worker jobs, then served."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import Optional

import typer

from featscope.cli.common import _state, app


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value in (None, "") else value.strip().lower() not in ("0", "false", "no", "off")


@app.command("demo")
def demo(profile: Optional[str] = typer.Option(None, help="tiny, cpu or cuda [default: $DEMO_PROFILE, else cuda "
                                                          "when a GPU is present, else cpu]."),
         serve: Optional[bool] = typer.Option(None, "--serve/--no-serve",
                                              help="Serve the dashboard when done [default: $DEMO_SERVE, else yes]."),
         host: str = typer.Option("127.0.0.1", help="Bind address of the dashboard."),
         port: Optional[int] = typer.Option(None, help="Port of the dashboard [default: $DEMO_PORT, else 8050]."),
         heldout: Optional[str] = typer.Option(None, help="Pre-training classes to hold out for Table 2, comma-"
                                               "separated (e.g. star,cross; 'none': skip it) [default: the "
                                               "profile's: none on cpu, star,cross on cuda].")) -> None:
    """Generate the study sets, pre-train a classifier and a detector, run every analysis, map and fine-tuning as
    worker jobs (a second run is all cache hits), print the study's findings, then serve the dashboard."""
    from featscope.config import Settings
    from featscope.demo.profiles import choose_profile, with_heldout
    from featscope.demo.runner import run_demo

    try:
        chosen = with_heldout(choose_profile(profile), heldout)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    data_dir = _state.get("data_dir")
    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    serve = _env_bool("DEMO_SERVE", True) if serve is None else serve
    port = port if port is not None else int(os.environ.get("DEMO_PORT") or 8050)

    def say(line: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        sys.stdout.write(f"{stamp} {line}\n" if line.strip() else "\n")
        sys.stdout.flush()

    raise typer.Exit(run_demo(settings, chosen, serve=serve, host=host, port=port, say=say))
