"""A small served world: an image folder under an allowed root, two ResNet-18s, their embedding sets, an app."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from featscope.extractors.types import Preprocess

SMALL = Preprocess(resize=40, crop=32)


@dataclass
class World:
    root: Path
    settings: object
    ws: object
    dataset: object
    sets: list


def make_world(root: Path, make_images, **overrides) -> World:
    from featscope.server.settings import ServerSettings
    from featscope.workspace import Workspace

    allowed = root / "allowed"
    make_images(allowed / "imgs", {"a": 6, "b": 6, "c": 6}, size=36)
    settings = ServerSettings(data_dir=root / "data", allowed_roots=[allowed], num_workers=0, batch_size=8,
                              shard_size=64, **overrides)
    ws = Workspace(settings)
    ds = ws.add_dataset(allowed / "imgs", name="shapes")
    ws.add_backbone("torchvision:resnet18", random_init=True, seed=0, name="r18a", preprocess=SMALL)
    ws.add_backbone("torchvision:resnet18", random_init=True, seed=1, name="r18b", preprocess=SMALL)
    sets = ws.extract("r18a", "shapes") + ws.extract("r18b", "shapes")
    return World(root, settings, ws, ds, sets)


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_images) -> World:
    return make_world(tmp_path_factory.mktemp("served"), make_images)


@pytest.fixture(scope="module")
def client(world):
    from fastapi.testclient import TestClient

    from featscope.server import create_app

    with TestClient(create_app(world.settings)) as c:
        yield c


def run_queued(client) -> int:
    """Run every queued job message in this thread (what a worker would do); returns how many ran."""
    queue = client.app.state.queue
    n = 0
    while (task := queue.dequeue()) is not None:
        queue.execute(task)
        n += 1
    return n
