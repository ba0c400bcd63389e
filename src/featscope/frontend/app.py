"""The dashboard: a Dash multi-page app attached to the API's FastAPI app with ``Dash(server=app)``.

Same server, same port, same workspace and job queue as the REST API. Pages live in :mod:`.pages` (one
module each: ``PAGE``, ``layout``, callbacks), shared widgets in :mod:`.components`, CSS and clientside
JavaScript in ``assets/``. Pages are registered here rather than at import so a page module can be
imported (and its callbacks tested) without an app.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path

import dash
from dash import Dash, dcc, html
from fastapi import FastAPI

from featscope.frontend import routes, wiring
from featscope.frontend.components import figures, layout as furniture, pickers
from featscope.frontend.pages import PAGES
from featscope.frontend.services import Services

log = logging.getLogger(__name__)
ASSETS = Path(__file__).parent / "assets"
PLOTLY_JS = "_dash-component-suites/plotly/package_data/plotly.min.js"  # what dcc.Graph itself would load
SHARED = (furniture, figures, pickers)  # component modules that own callbacks


def attach_dashboard(api: FastAPI) -> Dash:
    """Attach the dashboard to ``api`` (built by ``server.app.create_app``) and return the Dash app."""
    app = Dash(__name__, server=api, use_pages=True, pages_folder="", assets_folder=str(ASSETS),
               title="featscope", update_title=None, serve_locally=True)
    # plotly.js (4.8 MB) loads while the page asks for its layout and content, instead of once a graph first
    # renders; dcc.Graph uses window.Plotly when it is there (read when the index page is rendered)
    app.config.external_scripts = [{"src": app.config.requests_pathname_prefix + PLOTLY_JS, "defer": "defer"}]
    modules = [importlib.import_module(f"{__package__}.pages.{name}") for name in PAGES]
    services = Services(api.state)
    for module in modules:
        dash.register_page(module.__name__, layout=wiring.page_layout(module.layout, services), **module.PAGE)
    token = bool(api.state.settings.token)
    app.layout = lambda: shell(token)
    for module in (*SHARED, *modules):
        wiring.register(app, module, services)
    routes.install(api, app)
    _warm_rasters(services)
    return app


def _warm_rasters(services: Services) -> threading.Thread | None:
    """When the catalog has a set big enough to be drawn as a raster, in the background: read the image tables of
    the data sets such sets belong to (a million rows take about 0.8 s), then compile datashader's kernels for
    their numbers of classes (numba compiles on first use, several seconds), so the first visit of their
    projection page waits for neither."""
    from sqlalchemy import func, select

    from featscope.catalog import EmbeddingSet
    from featscope.frontend import data, raster

    with services.ctx.session() as s:
        largest = s.scalar(select(func.max(EmbeddingSet.n))) or 0
    if largest <= raster.RASTER_ABOVE:
        return None

    def warm() -> None:  # a warm-up only saves time: whatever fails here, the page does itself
        counts = [1]
        try:
            counts += [len(data.dataset_points(services.ctx, i).classes)  # read just now: cached
                       for i in data.warm_points(services.ctx, raster.RASTER_ABOVE)]
        except Exception:  # noqa: BLE001
            log.warning("start-up warm-up: finding the large data sets failed", exc_info=True)
        try:
            raster.warm_up(counts)
        except Exception:  # noqa: BLE001
            log.warning("start-up warm-up: compiling the raster kernels failed", exc_info=True)

    thread = threading.Thread(target=warm, name="featscope-raster-warmup", daemon=True)
    thread.start()
    return thread


def shell(token: bool) -> html.Div:
    """What every page sits in: the nav bar, the page, the stores shared across pages."""
    return html.Div(className="fs-app", children=[
        dcc.Store(id="fs-comparison", storage_type="local"),
        html.Div(id="fs-dl-img-sink", hidden=True),
        html.Div(id="fs-dl-data-sink", hidden=True),
        furniture.navbar(token),
        html.Main(dash.page_container, className="fs-main"),
        html.Footer([html.Span("featscope · compare the feature spaces of CNN backbones · analyses after "),
                     html.Em("An Analysis of Pre-Training on Object Detection"), html.Span(" (Li et al., 2019)")],
                    className="fs-footer"),
    ])
