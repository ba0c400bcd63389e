"""How pages get slow work done: the cache at once, else a job (submitted once, polled, never resubmitted
when it failed); maps shown from a finished job with the same parameters."""

from __future__ import annotations

import pytest

from featscope.frontend import standard
from featscope.frontend.services import Need, fetch, forget_failed, map_job, request_key
from featscope.worker import jobs

from .conftest import run_queued


def test_a_cached_analysis_is_answered_without_a_job(world):
    before = len(jobs.list_jobs(world.ws.ctx, limit=1000))
    out = fetch(world.svc, standard.pairs_needs(world.a, world.b), {})
    assert set(out.results) == {"closest", "contrast"} and not out.jobs and not out.active
    assert out.results["closest"].data == world.ws.closest_pairs([world.a, world.b]).data
    assert len(jobs.list_jobs(world.ws.ctx, limit=1000)) == before


def test_a_missing_analysis_becomes_one_job_that_later_answers_from_the_cache(world):
    need = Need("cm", "comembership", [world.a, world.b], {"ks": [2, 3, 5], "seeds": [7]})
    first = fetch(world.svc, [need], {})
    assert not first.results and first.active and first.jobs["cm"].kind == "analysis"
    again = fetch(world.svc, [need], first.tracked)  # the next poll: the same job, not a second one
    assert again.jobs["cm"].id == first.jobs["cm"].id
    assert first.tracked == {request_key("analysis", need.job_params()): first.jobs["cm"].id}
    assert run_queued(world.svc) == 1
    done = fetch(world.svc, [need], again.tracked)
    assert not done.active and done.results["cm"].data["ks"] == [2, 3, 5]
    ref = world.ws.comembership(world.a, world.b, ks=[2, 3, 5], seeds=[7])
    assert done.results["cm"].data == ref.data


def test_fetch_without_submit_queues_nothing(world):
    need = Need("cm", "comembership", [world.a, world.b], {"ks": [2, 4], "seeds": [11]})
    out = fetch(world.svc, [need], {}, submit=False)
    assert not out.results and not out.jobs and not out.tracked


def test_a_bad_request_is_an_error_not_a_job(world):
    out = fetch(world.svc, [Need("x", "similarity", [world.a, world.a])], {})
    assert "two different embedding sets" in out.errors["x"] and not out.jobs
    out = fetch(world.svc, [Need("y", "similarity", [world.a, 99999])], {})
    assert "no embedding set 99999" in out.errors["y"]


def test_a_failed_job_is_reported_and_only_retried_on_request(world, monkeypatch):
    need = Need("sim", "similarity", [world.a, world.b], {"k": 3})
    first = fetch(world.svc, [need], {})
    job = first.jobs["sim"]
    jobs.cancel_job(world.ws.ctx, job.id, queue=world.svc.queue)  # a cancelled job counts as failed for the page
    run_queued(world.svc)
    later = fetch(world.svc, [need], first.tracked)
    assert later.jobs["sim"].id == job.id and later.jobs["sim"].state == "cancelled"
    assert later.failed and not later.active
    assert forget_failed(later.tracked, world.svc) == {}
    retried = fetch(world.svc, [need], forget_failed(later.tracked, world.svc))
    assert retried.jobs["sim"].id != job.id and retried.active
    run_queued(world.svc)
    assert "sim" in fetch(world.svc, [need], retried.tracked).results


def test_map_job_is_submitted_once_then_found_finished(world):
    image_id = world.ws.images("shapes", limit=1)[0].id
    params = {"backbone": "r18a", "image_id": image_id, "tap": "conv5", "method": "mean"}
    tracked: dict = {}
    job = map_job(world.svc, "heatmap", params, tracked)
    assert job.state == "queued" and tracked == {request_key("heatmap", params): job.id}
    assert map_job(world.svc, "heatmap", params, tracked).id == job.id
    run_queued(world.svc)
    fresh: dict = {}  # another page (or browser) asking for the same map gets the finished job at once
    done = map_job(world.svc, "heatmap", params, fresh, submit=False)
    assert done.id == job.id and done.state == "done"
    assert world.ws.ctx.store.has("map", done.result["artifact_key"])


def test_map_job_without_submit_and_nothing_done_is_none(world):
    image_id = world.ws.images("shapes", limit=2)[1].id
    params = {"backbone": "r18b", "image_id": image_id, "target": "red", "probe_dataset": "shapes"}
    assert map_job(world.svc, "maskout", params, {}, submit=False) is None


def test_services_share_the_api_apps_queue(tmp_path):
    from fastapi.testclient import TestClient

    from featscope.frontend.services import Services
    from featscope.server import create_app
    from featscope.server.settings import ServerSettings

    app = create_app(ServerSettings(data_dir=tmp_path / "d"))
    svc = Services(app.state)
    queue = svc.queue
    assert app.state.queue is queue and svc.queue is queue
    with TestClient(app) as c:
        assert c.get("/api/v1/jobs").status_code == 200


@pytest.mark.parametrize("n,expected", [(24, 6.666666666666667), (40, 12.0), (1000, 30.0), (5, 2.0)])
def test_perplexity_stays_below_a_third_of_the_points(n, expected):
    assert standard.perplexity_for(n) == pytest.approx(expected)
    assert standard.perplexity_for(n) < n / 3 or n <= 6
