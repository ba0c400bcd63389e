"""The A/B picker every comparison page shows: embedding set A, embedding set B (same data set), swap.

Its ids are pattern-matching ids keyed by the page (``{"type": "fs-ab", "role": "a", "page": "pairs"}``),
so one pair of callbacks here serves every page. The choice is remembered in the browser
(``fs-comparison``, local storage) and carried by links as ``?a=ID&b=ID``, which win over it.
"""

from __future__ import annotations

from typing import Any

from dash import ALL, MATCH, Input, Output, State, dcc, html

from featscope.frontend import data
from featscope.frontend.components.layout import badge
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback, triggered_id


def ab_id(page: Any, role: str) -> dict[str, Any]:
    return {"type": "fs-ab", "role": role, "page": page}


def comparison_bar(page: str, a: Any = None, b: Any = None) -> html.Div:
    """Two set pickers and a swap button; ``a``/``b`` are the URL's ``?a=&b=`` (strings) when given. A page
    may limit the choice to one data set by setting ``{"type": "fs-ab-scope", "page": page}``'s data."""
    return html.Div(className="fs-abbar", children=[
        dcc.Store(id={"type": "fs-ab-scope", "page": page}),
        dcc.Store(id={"type": "fs-ab-url", "page": page}, data={"a": _int(a), "b": _int(b)}),
        html.Div([badge("A"), dcc.Dropdown(id=ab_id(page, "a"), value=_int(a), clearable=False,
                                           placeholder="embedding set A", className="fs-dropdown")],
                 className="fs-abbar-pick"),
        html.Button("⇄ Swap", id={"type": "fs-ab-swap", "page": page}, className="fs-button fs-button-ghost",
                    title="Swap A and B"),
        html.Div([badge("B"), dcc.Dropdown(id=ab_id(page, "b"), value=_int(b), clearable=False,
                                           placeholder="embedding set B (same data set)", className="fs-dropdown")],
                 className="fs-abbar-pick"),
        html.Div(id={"type": "fs-ab-note", "page": page}, className="fs-abbar-note"),
    ])


def _int(v: Any) -> int | None:
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


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
            pa, pb = _int((source or {}).get("a")), _int((source or {}).get("b"))
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


@callback(Output(ab_id(MATCH, "a"), "options"), Output(ab_id(MATCH, "b"), "options"),
          Output(ab_id(MATCH, "a"), "value"), Output(ab_id(MATCH, "b"), "value"),
          Output({"type": "fs-ab-note", "page": MATCH}, "children"),
          Input(ab_id(MATCH, "a"), "value"), Input(ab_id(MATCH, "b"), "value"),
          Input({"type": "fs-ab-swap", "page": MATCH}, "n_clicks"),
          Input({"type": "fs-ab-scope", "page": MATCH}, "data"), State({"type": "fs-ab-url", "page": MATCH}, "data"),
          State("fs-comparison", "data"))
def sync_pair(svc: Services, a: int | None, b: int | None, swap: int | None, scope: str | None, url: dict | None,
              remembered: dict | None):
    """Options and values of a page's A/B pickers (B limited to A's data set, both to the page's scope),
    and the line describing them."""
    trig = triggered_id()
    swapping = isinstance(trig, dict) and trig.get("type") == "fs-ab-swap"
    a, b = choose_pair(svc, a, b, remembered, swap=swapping, dataset=scope, url=url)
    info_a = data.set_info(svc.ctx, a)
    opts_a = data.set_options(svc.ctx, scope)
    opts_b = [o for o in data.set_options(svc.ctx, info_a.dataset) if o["value"] != a] if info_a else []
    return opts_a, opts_b, a, b, describe(svc, a, b)


@callback(Output("fs-comparison", "data"), Input(ab_id(ALL, "a"), "value"), Input(ab_id(ALL, "b"), "value"),
          State("fs-comparison", "data"),
          prevent_initial_call=True, services=False)
def remember_pair(a: list, b: list, remembered: dict | None) -> dict:
    """Keep the last complete pair in the browser so the next page opens on it."""
    pairs = [(x, y) for x, y in zip(a or [], b or []) if x is not None and y is not None]
    return {"a": pairs[0][0], "b": pairs[0][1]} if pairs else (remembered or {})
