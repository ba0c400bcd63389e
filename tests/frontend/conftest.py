"""A small served world for the dashboard: 24 labelled images, two ResNet-18s, their embedding sets, the
standard analyses cached, and the :class:`Services` the page callbacks take."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from featscope.extractors.types import Preprocess

SMALL = Preprocess(resize=40, crop=32)


@dataclass
class World:
    root: Path
    settings: object
    ws: object
    svc: object
    a: int
    b: int


def make_services(ws, settings):
    from featscope.frontend.services import Services

    return Services(SimpleNamespace(workspace=ws, settings=settings, queue=None))


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_images) -> World:
    from featscope.frontend import standard
    from featscope.server.settings import ServerSettings
    from featscope.workspace import Workspace

    root = tmp_path_factory.mktemp("dash")
    allowed = root / "allowed"
    make_images(allowed / "imgs", {"red": 8, "green": 8, "blue": 8}, size=36)
    settings = ServerSettings(data_dir=root / "data", allowed_roots=[allowed], num_workers=0, batch_size=8,
                              shard_size=64)
    ws = Workspace(settings)
    ws.add_dataset(allowed / "imgs", name="shapes")
    ws.add_backbone("torchvision:resnet18", random_init=True, seed=0, name="r18a", preprocess=SMALL)
    ws.add_backbone("torchvision:resnet18", random_init=True, seed=1, name="r18b", preprocess=SMALL)
    [a] = ws.extract("r18a", "shapes")
    [b] = ws.extract("r18b", "shapes")
    svc = make_services(ws, settings)
    from featscope.frontend.services import cached_analysis
    from featscope.workspace.analyses import NotCached
    from featscope.server.api.routes.analyses import ANALYSES

    for need in standard.compare_needs(a.id, b.id, a.n, "r18a", "r18b", "shapes", "avg", labelled=True):
        try:
            cached_analysis(svc, need)
        except NotCached:  # compute it as the worker would
            _, fn, args, _ = ANALYSES[need.kind]
            fn(ws.ctx, *args(list(need.inputs)), **need.params)
    return World(root, settings, ws, svc, a.id, b.id)


def run_queued(svc) -> int:
    """Run every queued job message in this thread (what a worker would do); returns how many ran."""
    queue = svc.queue
    n = 0
    while (task := queue.dequeue()) is not None:
        queue.execute(task)
        n += 1
    return n


def find(component, predicate) -> list:
    """Every Dash component in a tree (components, lists, tuples), in document order, for which ``predicate`` holds."""
    if isinstance(component, (list, tuple)):
        return [c for child in component for c in find(child, predicate)]
    if component is None or isinstance(component, (str, int, float, dict)):
        return []
    return ([component] if predicate(component) else []) + find(getattr(component, "children", None), predicate)


def text_of(component) -> str:
    """All the text in a component tree, in order, whitespace collapsed."""
    return " ".join(_text(component).split())


def _text(component) -> str:
    if component is None:
        return ""
    if isinstance(component, (str, int, float)):
        return str(component)
    if isinstance(component, (list, tuple)):
        return " ".join(_text(c) for c in component)
    if isinstance(component, dict):
        return ""
    return _text(getattr(component, "children", None))
