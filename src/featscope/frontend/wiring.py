"""Callbacks as plain functions: declared in their page's module, bound to one Dash app at attach time.

``dash.callback`` files callbacks in a process-wide list that the first app to serve a request takes, so a
second app in the same process (a test, a second server) would get none. Pages instead mark their
callbacks with :func:`callback` (which records the Dash dependencies on the function and returns it
unchanged) and :func:`register` binds every marked function of a module to one app, passing the app's
:class:`~featscope.frontend.services.Services` as the first argument. The functions stay importable and
callable as they are: the tests call them with a workspace of their own.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from dash import ClientsideFunction, Dash
from dash.exceptions import PreventUpdate

from featscope.frontend.services import Services

log = logging.getLogger(__name__)
_MARK = "__featscope_callback__"
_LAYOUT_SERVICES: contextvars.ContextVar[Services | None] = contextvars.ContextVar("featscope_layout_services",
                                                                                   default=None)
CLIENTSIDE_NAMESPACE = "featscope"


def callback(*dependencies: Any, services: bool = True, **options: Any) -> Callable[[Callable], Callable]:
    """Mark a page function as a Dash callback with these ``Output``/``Input``/``State`` dependencies.

    With ``services`` (the default) the function's first parameter receives the app's :class:`Services`."""

    def mark(fn: Callable) -> Callable:
        setattr(fn, _MARK, (dependencies, options, services))
        return fn

    return mark


def clientside(function: str, *dependencies: Any, **options: Any) -> tuple[str, tuple, dict]:
    """A clientside callback: ``window.dash_clientside.featscope[function]`` from ``assets/featscope.js``."""
    return function, dependencies, options


def register(app: Dash, module: ModuleType, services: Services) -> int:
    """Bind every marked callback of ``module`` and its ``CLIENTSIDE`` list to ``app``; returns how many."""
    n = 0
    for name in dir(module):
        fn = getattr(module, name)
        spec = getattr(fn, _MARK, None)
        if spec is None or getattr(fn, "__module__", None) != module.__name__:
            continue
        dependencies, options, wants_services = spec
        app.callback(*dependencies, **options)(_bind(fn, services) if wants_services else fn)
        n += 1
    for function, dependencies, options in getattr(module, "CLIENTSIDE", ()):
        app.clientside_callback(ClientsideFunction(CLIENTSIDE_NAMESPACE, function), *dependencies, **options)
        n += 1
    return n


def _bind(fn: Callable, services: Services) -> Callable:
    @functools.wraps(fn)
    def bound(*args: Any) -> Any:
        try:
            return fn(services, *args)
        except PreventUpdate:
            raise
        except Exception:  # Dash's FastAPI backend answers 500 without a trace: keep one in the server's log
            log.exception("dashboard callback %s.%s failed", fn.__module__, fn.__name__)
            raise

    del bound.__wrapped__  # Dash must see the callback's own arguments, not the services parameter
    return bound


def triggered_id() -> Any:
    """The id of the component whose change ran this callback; None on a first call or outside Dash
    (the tests call callbacks as plain functions)."""
    from dash import callback_context

    try:
        return callback_context.triggered_id if callback_context.triggered else None
    except Exception:  # dash.exceptions.MissingCallbackContextException: not inside a callback
        return None


def page_layout(layout: Callable[..., Any], services: Services) -> Callable[..., Any]:
    """``layout`` as Dash calls it (``layout(**query)``), with :func:`layout_services` answering ``services``
    while it runs: a page can then put what the catalog already knows (the chosen pair, a cached figure) in
    its first render instead of waiting for a chain of callbacks. A context variable rather than a keyword,
    so no query string can stand in for it."""

    @functools.wraps(layout)
    def with_services(*args: Any, **query: Any) -> Any:
        token = _LAYOUT_SERVICES.set(services)
        try:
            return layout(*args, **query)
        finally:
            _LAYOUT_SERVICES.reset(token)

    return with_services


def layout_services() -> Services | None:
    """The app's :class:`Services` while a page layout runs (see :func:`page_layout`); None elsewhere."""
    return _LAYOUT_SERVICES.get()
