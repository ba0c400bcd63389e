"""Tables of fine-tuning results shared by ``/runs`` and ``/detections``: missed objects by occlusion (Table 3)."""

from __future__ import annotations

from typing import Any

from dash import html

from featscope.workspace.detection_errors import FIXED, threshold_rule, threshold_words

STUDY_LEVELS = ("low", "medium")  # the occlusion bins the study's Table 3 reports


def pct(v: Any) -> str:
    return "—" if v is None or v < 0 else f"{100 * v:.1f}%"


def init_name(run) -> str:
    """The backbone a fine-tuning run started from (its ``init`` reads "backbone NAME (SPEC)")."""
    return run.init.replace("backbone ", "").split(" (")[0] if run.init else "?"


def missed_by_occlusion(run) -> dict[str, Any] | None:
    """The run's missed-object rates per occlusion bin, if it has them: from its ``detections.json`` at its
    operating score when it kept one, else its stored evaluation (see
    :func:`featscope.workspace.detection_errors.run_missed_by_occlusion`)."""
    from featscope.workspace.detection_errors import run_missed_by_occlusion

    if run.task != "finetune-det":
        return None
    return run_missed_by_occlusion(run)


def occlusion_table(columns: list[tuple[Any, dict[str, Any]]], table_id: str) -> Any:
    """Table 3: one row per occlusion bin, one column per run (``(header, missed_by_occlusion)``): missed of
    objects and the rate; the study's low and medium rows are marked."""
    if not columns:
        return html.Div("No detection fine-tuning run has missed-object rates yet (they need the test set's "
                        "occlusion: the study sets have it).", className="fs-muted")
    names = [b["name"] for b in columns[0][1]["bins"]]
    head = html.Thead(html.Tr([html.Th("Occlusion"), *[html.Th(h, className="fs-num") for h, _ in columns]]))
    body = []
    for name in names:
        cells = []
        for _, res in columns:
            b = next((x for x in res["bins"] if x["name"] == name), None)
            cells.append(html.Td("—" if b is None else [html.Strong(pct(b["rate"])),
                                                        html.Span(f" {b['missed']} of {b['objects']}",
                                                                  className="fs-muted")], className="fs-num"))
        first = next(x for x in columns[0][1]["bins"] if x["name"] == name)
        label = [html.Strong(name) if name in STUDY_LEVELS else name,
                 html.Span(f" {100 * first['low']:g}-{100 * first['high']:g}% hidden", className="fs-muted")]
        body.append(html.Tr([html.Td(label), *cells], className="fs-row-study" if name in STUDY_LEVELS else None))
    foot = html.Tfoot(html.Tr([html.Td("judged at", className="fs-muted"),
                               *[html.Td(threshold_words(res), className="fs-num fs-muted") for _, res in columns]]))
    res0 = columns[0][1]
    fixed = any(threshold_rule(res) == FIXED for _, res in columns)
    note = html.Div(f"An object is missed when no box of its class scoring at least the run's score threshold "
                    f"overlaps it at IoU {res0.get('iou', 0.5):g} or more. The threshold is 0.5; a run with fewer "
                    f"than N boxes scoring 0.5 (N = its test set's objects) is judged at its N-th best box score "
                    f"(its lowest, when it has fewer than N boxes): a weakly trained detector scores everything "
                    f"lower and at 0.5 would miss every object. A run that stays at 0.5 may keep more than N boxes."
                    + (" A run recorded before per-detector thresholds that kept no detections.json shows its "
                       "stored rates at the fixed score 0.5; run it again to count it at its own score."
                       if fixed else "")
                    + " Bold rows: the levels the study reports (VOC07: 14.7% / 15.7% from IMAGENET-CLS, 10.1% / "
                      "10.8% from OPENIMAGES).", className="fs-muted fs-small")
    return html.Div([html.Table([head, html.Tbody(body), foot], className="fs-table", id=table_id), note])
