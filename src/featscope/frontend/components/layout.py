"""Page furniture: the nav bar, page headers with the study's figure numbers, cards, empty states, A/B badges."""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from featscope.frontend.wiring import clientside
from dash import ALL, Input, Output

# Okabe-Ito blue and vermillion: distinguishable with every common colour-vision deficiency.
COLOUR_A = "#0072B2"
COLOUR_B = "#D55E00"


def navbar(token: bool) -> html.Header:
    """The top bar: one link per page whose ``PAGE`` has ``nav`` set, in registry order."""
    links = [dcc.Link(p["name"], href=p["path"], id={"type": "fs-nav", "path": p["path"], "pair": bool(p.get("pair"))},
                      className="fs-nav-link") for p in dash.page_registry.values() if p.get("nav")]
    right = [html.A("API docs", href="/docs", className="fs-nav-link", target="_blank", rel="noopener")]
    if token:
        right.append(html.A("Log out", href="#", id="fs-logout", className="fs-nav-link"))
    return html.Header(className="fs-nav", children=[
        dcc.Link([html.Span("fs", className="fs-logo"), html.Span("featscope")], href="/", className="fs-brand"),
        html.Nav(links, className="fs-nav-links", **{"aria-label": "pages"}),
        html.Div(right, className="fs-nav-right"),
    ])


def page_header(title: str, lede: str | list | None = None, figure: str | None = None,
                actions: list | None = None) -> html.Div:
    """The page's title, the study figure or table it reproduces, and one or two lines of what it shows."""
    heading: list[Any] = [html.H1(title)]
    if figure:
        heading.append(html.Span(figure, className="fs-fig-badge", title="as in Li et al., 2019"))
    return html.Div(className="fs-page-header", children=[
        html.Div([html.Div(heading, className="fs-title-row"),
                  html.P(lede, className="fs-lede") if lede else None]),
        html.Div(actions or [], className="fs-header-actions"),
    ])


def card(title: str | list | None, children: Any, *, caption: str | list | None = None, actions: Any = None,
         id: str | None = None, className: str = "") -> html.Section:
    head = None
    if title or actions:
        head = html.Div(className="fs-card-header", children=[
            html.Div([html.H2(title, className="fs-card-title") if title else None,
                      html.P(caption, className="fs-card-caption") if caption else None]),
            html.Div(actions, className="fs-card-actions") if actions else None,
        ])
    kwargs = {"id": id} if id else {}
    return html.Section([head, html.Div(children, className="fs-card-body")], className=f"fs-card {className}",
                        **kwargs)


def empty_state(title: str, body: str | list, commands: list[str] | None = None,
                links: list[tuple[str, str]] | None = None) -> html.Div:
    """What to do next when a page has nothing to show: a sentence, the commands, links to the pages that help."""
    parts: list[Any] = [html.Div(title, className="fs-empty-title"), html.P(body)]
    if commands:
        parts.append(html.Pre(html.Code("\n".join(commands)), className="fs-code"))
    if links:
        parts.append(html.Div([dcc.Link(text, href=href, className="fs-button fs-button-small")
                               for text, href in links], className="fs-empty-links"))
    return html.Div(parts, className="fs-empty")


def badge(role: str) -> html.Span:
    """The A or B pill: the same colour on every page and in every figure."""
    return html.Span(role, className=f"fs-ab fs-ab-{role.lower()}", title=f"backbone {role}")


def error_box(message: str) -> html.Div:
    return html.Div([html.Strong("Cannot show this: "), message], className="fs-error-box", role="alert")


def stat(label: str, value: Any, hint: str | None = None) -> html.Div:
    return html.Div([html.Div(label, className="fs-stat-label"), html.Div(value, className="fs-stat-value"),
                     html.Div(hint, className="fs-stat-hint") if hint else None], className="fs-stat")


CLIENTSIDE = [
    clientside("navActive", Output({"type": "fs-nav", "path": ALL, "pair": ALL}, "className"),
               Input("_pages_location", "pathname"), Input({"type": "fs-nav", "path": ALL, "pair": ALL}, "id")),
]
