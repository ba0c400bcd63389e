"""Thumbnails of catalog images (served by ``GET /api/v1/images/{id}/thumbnail``), alone, in grids and in pairs."""

from __future__ import annotations

from typing import Any

from dash import dcc, html


def thumb_url(image_id: int, size: int = 160) -> str:
    return f"/api/v1/images/{int(image_id)}/thumbnail?size={size}"


def thumb(image_id: int, caption: str | None = None, *, title: str | None = None, size: int = 160,
          link: bool = True, className: str = "") -> Any:
    """An image tile; a click opens the image's page (its maps and neighbours)."""
    img = html.Img(src=thumb_url(image_id, size), alt=title or caption or f"image {image_id}",
                   className="fs-thumb-img")
    body = [img, html.Div(caption, className="fs-thumb-caption") if caption else None]
    cls = f"fs-thumb {className}".strip()
    if link:
        return dcc.Link(body, href=f"/image/{int(image_id)}", className=cls, title=title or caption)
    return html.Div(body, className=cls, title=title or caption)


def thumb_grid(items: list[dict[str, Any]], *, empty: str = "Nothing here yet.", size: int = 128) -> html.Div:
    """Tiles for ``{"image_id", "label"?, "caption"?}`` items."""
    if not items:
        return html.Div(empty, className="fs-muted fs-grid-empty")
    return html.Div([thumb(it["image_id"], it.get("caption") or it.get("label"), title=it.get("relpath"), size=size)
                     for it in items], className="fs-thumb-grid")


def pair_tile(a: dict[str, Any], b: dict[str, Any], lines: list[Any]) -> html.Div:
    """Two images side by side with the numbers that make them a pair underneath."""
    return html.Div([
        html.Div([thumb(a["image_id"], a.get("label"), title=a.get("relpath"), size=128),
                  thumb(b["image_id"], b.get("label"), title=b.get("relpath"), size=128)], className="fs-pair-imgs"),
        html.Div([html.Div(line) for line in lines], className="fs-pair-meta"),
    ], className="fs-pair")
