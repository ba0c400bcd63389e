"""Figure cards: a Plotly graph with PNG/SVG export and its data as CSV/JSON, and the shared plot style.

Plotly's toolbar exports PNG; the card's bar adds SVG and the data. The data a figure was drawn from
sits in a ``dcc.Store`` next to it (``{"name": ..., "rows": [...]}``) and is turned into a file in the
browser (``assets/featscope.js``), so a download never goes back to the server.
"""

from __future__ import annotations

from typing import Any

from dash import ALL, Input, Output, State, dcc, html

from featscope.frontend.components.layout import COLOUR_A, COLOUR_B, card
from featscope.frontend.wiring import clientside

FONT = "Inter, -apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
GRID = "#e7e9ee"


def graph_config(filename: str) -> dict[str, Any]:
    return {"displaylogo": False, "responsive": True,
            "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2},
            "modeBarButtonsToRemove": ["autoScale2d", "toggleSpikelines"]}


def base_layout(**overrides: Any) -> dict[str, Any]:
    """A quiet, readable Plotly layout: white background, light grid, the page's font."""
    layout: dict[str, Any] = {
        "font": {"family": FONT, "size": 13, "color": "#1f2430"},
        "paper_bgcolor": "white", "plot_bgcolor": "white",
        "margin": {"l": 56, "r": 24, "t": 24, "b": 48},
        "xaxis": {"gridcolor": GRID, "zerolinecolor": GRID, "linecolor": "#c9cdd6", "ticks": "outside", "automargin": True},
        "yaxis": {"gridcolor": GRID, "zerolinecolor": GRID, "linecolor": "#c9cdd6", "ticks": "outside", "automargin": True},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        "hoverlabel": {"font": {"family": FONT}},
        "colorway": [COLOUR_A, COLOUR_B, "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def empty_figure(message: str = "") -> dict[str, Any]:
    layout = base_layout(xaxis={"visible": False}, yaxis={"visible": False})
    if message:
        layout["annotations"] = [{"text": message, "showarrow": False, "font": {"size": 14, "color": "#6b7280"},
                                  "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}]
    return {"data": [], "layout": layout}


def figure_card(fig_id: str, title: str | list, *, caption: str | list | None = None, height: int = 420,
                extra: Any = None, graph_props: dict[str, Any] | None = None, className: str = "") -> html.Section:
    """A card with the graph ``fig_id``, its data store and, under the graph, the PNG/SVG/CSV/JSON bar."""
    graph = dcc.Graph(id=fig_id, figure=empty_figure(), config=graph_config(fig_id), style={"height": f"{height}px"},
                      **(graph_props or {}))
    footer = html.Div([extra, download_bar(fig_id)], className="fs-card-footer")
    return card(title, [graph, footer, dcc.Store(id={"type": "fs-figdata", "fig": fig_id})], caption=caption,
                className=className)


def download_bar(fig_id: str, image: bool = True) -> html.Div:
    buttons = []
    if image:
        buttons += [html.Button(fmt.upper(), id={"type": "fs-dl-img", "fig": fig_id, "fmt": fmt},
                                className="fs-button fs-button-ghost fs-button-small", title=f"Download the figure as {fmt.upper()}")
                    for fmt in ("png", "svg")]
    buttons += [html.Button(fmt.upper(), id={"type": "fs-dl-data", "fig": fig_id, "fmt": fmt},
                            className="fs-button fs-button-ghost fs-button-small", title=f"Download the data as {fmt.upper()}")
                for fmt in ("csv", "json")]
    return html.Div([html.Span("Download", className="fs-dl-label"), *buttons], className="fs-dl-bar")


def figure_data(name: str, rows: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    """The store value behind a figure's CSV/JSON downloads (``name`` becomes the file name)."""
    return {"name": name, "rows": rows, "meta": meta}


CLIENTSIDE = [
    clientside("downloadImage", Output("fs-dl-img-sink", "children"),
               Input({"type": "fs-dl-img", "fig": ALL, "fmt": ALL}, "n_clicks"), prevent_initial_call=True),
    clientside("downloadData", Output("fs-dl-data-sink", "children"),
               Input({"type": "fs-dl-data", "fig": ALL, "fmt": ALL}, "n_clicks"),
               State({"type": "fs-figdata", "fig": ALL}, "data"), prevent_initial_call=True),
]
