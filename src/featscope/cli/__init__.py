"""The ``featscope`` command: the same verbs as the Python API (:class:`featscope.Workspace`).

One module per verb group (as the REST routes are split); each registers its commands on the root
:data:`app` from :mod:`featscope.cli.common` when imported here.
"""

from __future__ import annotations

from featscope.cli.common import _state, app
# Importing a verb group registers its commands; this order is the order of `featscope --help`.
from featscope.cli import datasets, backbones, extract, maps, analyze, serve  # noqa: F401,I001
from featscope.cli import train, runs  # noqa: F401,I001
from featscope.cli import demo  # noqa: F401,I001
from featscope.worker.cli import jobs_app, worker_command  # light: huey and typer only

app.add_typer(jobs_app, name="jobs")
app.command("worker")(worker_command)

__all__ = ["app", "_state"]

if __name__ == "__main__":  # pragma: no cover
    app()
