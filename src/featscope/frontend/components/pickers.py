"""The A/B picker every comparison page shows: embedding set A, embedding set B (same data set), swap.

Its ids are pattern-matching ids keyed by the page (``{"type": "fs-ab", "role": "a", "page": "pairs"}``),
so one pair of callbacks here serves every page. The choice is remembered in the browser
(``fs-comparison``, local storage) and carried by links as ``?a=ID&b=ID``, which win over it.
"""

from __future__ import annotations

import logging
from typing import Any

from dash import ALL, MATCH, Input, Output, State, dcc, html

from featscope.frontend import data
from featscope.frontend.components.layout import badge
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback, clientside, layout_services, triggered_id

log = logging.getLogger(__name__)


def ab_id(page: Any, role: str) -> dict[str, Any]:
    return {"type": "fs-ab", "role": role, "page": page}


def comparison_bar(page: str, a: Any = None, b: Any = None, scope: str | None = None) -> html.Div:
    """Two set pickers and a swap button; ``a``/``b`` are the URL's ``?a=&b=`` (strings) when given. ``scope``
    limits the choice to one data set (the image page: the image's own); a page may also change it later by
    setting ``{"type": "fs-ab-scope", "page": page}``'s data.

    A valid URL pair is rendered chosen (options, values, the line describing them), so the page's own
    callbacks start with the first render instead of after a round trip that picks it (about a third of a
    second of every linked page's load). Without one the bar carries ``fs-ab-init``, whose callback picks
    the remembered or the newest comparable pair; the nav links carry the remembered pair, so in-app
    navigation takes the first path."""
    svc, pa, pb = layout_services(), as_id(a), as_id(b)
    chosen, (opts_a, opts_b, note) = False, ([], [], None)
    if svc is not None:
        try:
            chosen = data.valid_pair(svc.ctx, pa, pb) and (scope is None or data.set_info(svc.ctx, pa).dataset == scope)
            if chosen:
                opts_a, opts_b, note = pair_view(svc, pa, pb, scope)
        except Exception:  # noqa: BLE001 - the page must render; the start-up callback picks the pair instead
            log.exception("the A/B bar of %s could not use the pair a=%r b=%r", page, a, b)
            chosen, (opts_a, opts_b, note) = False, ([], [], None)
    return html.Div(className="fs-abbar", children=[
        dcc.Store(id={"type": "fs-ab-scope", "page": page}, data=scope),
        dcc.Store(id={"type": "fs-ab-url", "page": page}, data={"a": pa, "b": pb}),
        None if chosen else dcc.Store(id={"type": "fs-ab-init", "page": page}, data=True),
        html.Div([badge("A"), dcc.Dropdown(id=ab_id(page, "a"), value=pa, options=opts_a, clearable=False,
                                           placeholder="embedding set A", className="fs-dropdown")],
                 className="fs-abbar-pick"),
        html.Button("⇄ Swap", id={"type": "fs-ab-swap", "page": page}, className="fs-button fs-button-ghost",
                    title="Swap A and B"),
        html.Div([badge("B"), dcc.Dropdown(id=ab_id(page, "b"), value=pb, options=opts_b, clearable=False,
                                           placeholder="embedding set B (same data set)", className="fs-dropdown")],
                 className="fs-abbar-pick"),
        html.Div(note, id={"type": "fs-ab-note", "page": page}, className="fs-abbar-note"),
    ])


def as_id(v: Any) -> int | None:
    """An id from a URL or a store: an int in SQLite's range, else None."""
    try:
        x = int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return x if x is None or -(1 << 63) <= x < (1 << 63) else None


def choose_pair(svc: Services, a: int | None, b: int | None, remembered: dict | None, *, swap: bool = False,
                dataset: str | None = None, url: dict | None = None) -> tuple[int | None, int | None]:
    """The pair to show: the given one if valid; a changed A keeps B when it fits, else B's best match;
    no A: the URL's pair, the remembered pair, else the newest comparable pair (of ``dataset`` when given)."""
    ctx = svc.ctx
    if swap:
        a, b = b, a

    def fits(x: int | None) -> bool:
        info = data.set_info(ctx, x)
        return info is not None and (dataset is None or info.dataset == dataset)

    if a is None:
        for source in (url, remembered):
            pa, pb = as_id((source or {}).get("a")), as_id((source or {}).get("b"))
            if fits(pa):
                a, b = pa, pb
                break
    if data.valid_pair(ctx, a, b) and fits(a):
        return a, b
    if not fits(a):
        scoped = [s for s in _sets(ctx) if dataset is None or s.dataset == dataset]
        a = _default_in(ctx, scoped)
        if a is None:
            return None, None
    info_a = data.set_info(ctx, a)
    if data.valid_pair(ctx, a, b):
        return a, b
    candidates = [s for s in _sets(ctx) if s.dataset == info_a.dataset and s.id != info_a.id]
    same = [s for s in candidates if s.tap == info_a.tap and s.pooling == info_a.pooling and s.backbone != info_a.backbone]
    best = (same or candidates or [None])[0]
    return a, (best.id if best else None)


def _default_in(ctx, sets: list) -> int | None:
    """The older set of the newest comparable pair among ``sets`` (newest first), else the newest set."""
    for x in sets:
        for y in sets:
            if y.id != x.id and y.dataset == x.dataset and y.tap == x.tap and y.pooling == x.pooling \
                    and y.backbone != x.backbone:
                return y.id
    return sets[0].id if sets else None


def _sets(ctx):
    from featscope.workspace.embeddings import list_embeddings

    return list(reversed(list_embeddings(ctx)))


def describe(svc: Services, a: int | None, b: int | None) -> list:
    ia, ib = data.set_info(svc.ctx, a), data.set_info(svc.ctx, b)
    if ia is None:
        return [html.Span("No embedding sets yet: run a Compare on the ", className="fs-muted"),
                dcc.Link("overview", href="/"), html.Span(".", className="fs-muted")]
    if ib is None:
        return [html.Span(f"Set B must embed the same data set as A ({ia.dataset}); extract it with another "
                          f"backbone from the overview.", className="fs-muted")]
    return [html.Span([badge("A"), f" {ia.backbone}"], className="fs-abbar-who"),
            html.Span(" vs ", className="fs-muted"),
            html.Span([badge("B"), f" {ib.backbone}"], className="fs-abbar-who"),
            html.Span(f" · {data.tap_label(ia.tap)}/{ia.pooling} vs {data.tap_label(ib.tap)}/{ib.pooling} · "
                      f"{ia.dataset}, {min(ia.n, ib.n):,} images",
                      className="fs-muted")]


def pair_view(svc: Services, a: int | None, b: int | None, scope: str | None) -> tuple[list, list, list]:
    """Options of A (the page's scope) and of B (A's data set, A left out), and the line describing the pair."""
    info_a = data.set_info(svc.ctx, a)
    opts_a = data.set_options(svc.ctx, scope)
    opts_b = [o for o in data.set_options(svc.ctx, info_a.dataset) if o["value"] != a] if info_a else []
    return opts_a, opts_b, describe(svc, a, b)


_PICKED = (Output(ab_id(MATCH, "a"), "options", allow_duplicate=True),
           Output(ab_id(MATCH, "b"), "options", allow_duplicate=True),
           Output(ab_id(MATCH, "a"), "value", allow_duplicate=True),
           Output(ab_id(MATCH, "b"), "value", allow_duplicate=True),
           Output({"type": "fs-ab-note", "page": MATCH}, "children", allow_duplicate=True))


@callback(*_PICKED, Input(ab_id(MATCH, "a"), "value"), Input(ab_id(MATCH, "b"), "value"),
          Input({"type": "fs-ab-swap", "page": MATCH}, "n_clicks"),
          Input({"type": "fs-ab-scope", "page": MATCH}, "data"), State({"type": "fs-ab-url", "page": MATCH}, "data"),
          State("fs-comparison", "data"), prevent_initial_call=True)
def sync_pair(svc: Services, a: int | None, b: int | None, swap: int | None, scope: str | None, url: dict | None,
              remembered: dict | None):
    """Options and values of a page's A/B pickers (B limited to A's data set, both to the page's scope),
    and the line describing them, after a change of A, B, the scope or a swap."""
    trig = triggered_id()
    swapping = isinstance(trig, dict) and trig.get("type") == "fs-ab-swap"
    a, b = choose_pair(svc, a, b, remembered, swap=swapping, dataset=scope, url=url)
    opts_a, opts_b, note = pair_view(svc, a, b, scope)
    return opts_a, opts_b, a, b, note


@callback(*_PICKED, Input({"type": "fs-ab-init", "page": MATCH}, "data"),
          State({"type": "fs-ab-scope", "page": MATCH}, "data"), State({"type": "fs-ab-url", "page": MATCH}, "data"),
          State("fs-comparison", "data"), prevent_initial_call="initial_duplicate")
def init_pair(svc: Services, _init: Any, scope: str | None, url: dict | None, remembered: dict | None):
    """A page opened without a valid ``?a=&b=``: the remembered pair, else the newest comparable one."""
    a, b = choose_pair(svc, None, None, remembered, dataset=scope, url=url)
    opts_a, opts_b, note = pair_view(svc, a, b, scope)
    return opts_a, opts_b, a, b, note


CLIENTSIDE = [
    # keeps the last complete pair in the browser (also on a page's first render, whose pair may come from its
    # URL), so the next page and the nav links (``navPair``) open on it
    clientside("rememberPair", Output("fs-comparison", "data"), Input(ab_id(ALL, "a"), "value"),
               Input(ab_id(ALL, "b"), "value"), State("fs-comparison", "data")),
    clientside("navPair", Output({"type": "fs-nav", "path": ALL, "pair": ALL}, "href"), Input("fs-comparison", "data"),
               State({"type": "fs-nav", "path": ALL, "pair": ALL}, "id")),
]
