"""InferenceService on a real registry and object store (embedded flavour; the API tests run both):
each model's production pointer and its hot swap, models served side by side, the LRU cache of
versions within STRATA_INFERENCE_MAX_LOADED and leases, readiness per model."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from services.cli.run import prepare
from services.db.session import make_engine, make_session_factory
from services.inference.errors import ModelUnavailable, NoModelYet, NoProductionVersion
from services.inference.service import InferenceService
from services.registry.errors import VersionNotFound
from services.storage import open_store
from tests.services.inference.helpers import (
    checkpoint_of,
    create_model,
    publish,
    random_image,
    set_production,
)

V1 = {0: "background", 1: "cat", 2: "dog"}
V2 = {**V1, 3: "bird"}
# A second model that learnt the same names in another order: "cat" is 2 there, "dog" 1.
W1 = {0: "background", 1: "dog", 2: "cat"}
W2 = {**W1, 3: "fish"}
IMAGE = random_image(24, 16)


@pytest.fixture
def ctx(embedded_settings):
    prepare(embedded_settings)
    engine = make_engine(embedded_settings)
    yield SimpleNamespace(settings=embedded_settings, sessions=make_session_factory(engine),
                          store=open_store(embedded_settings))
    engine.dispose()


def run(ctx, body, *, on_batch=None, **overrides):
    """Run ``await body(service)`` with a started service (settings ``overrides`` applied)."""
    settings = ctx.settings.model_copy(update=overrides)

    async def main():
        service = InferenceService(settings, ctx.sessions, ctx.store, on_batch=on_batch, poll_interval_s=0.1)
        await service.start()
        try:
            return await body(service)
        finally:
            await service.stop()

    return asyncio.run(main())


def pub(ctx, model_id: int, **kw) -> int:
    return publish(ctx.sessions, ctx.store, ctx.settings, model_id=model_id, **kw)


def uniform(mask: np.ndarray) -> int:
    values = np.unique(mask)
    assert len(values) == 1, f"mask mixes classes {values.tolist()}"
    return int(values[0])


async def until(condition, timeout: float = 60.0) -> None:
    """Wait (without blocking the event loop) until ``condition()`` holds."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    assert condition()


def test_before_any_model(ctx):
    async def body(service):
        assert service.ready() == (True, "no model exists yet: create one with POST /models", {})

    run(ctx, body)


def test_a_model_without_versions(ctx):
    m = create_model(ctx.sessions, "roads")

    async def body(service):
        assert service.ready() == (True, "0 of 1 model(s) loaded", {
            "roads": "no version has been trained yet: segmenting answers 409 until a task produces one"})
        with pytest.raises(NoModelYet, match="^model 'roads': no version has been trained yet$"):
            await service.predict(m, IMAGE)
        with pytest.raises(VersionNotFound, match="model version 1 does not exist"):
            await service.predict(m, IMAGE, "1")

    run(ctx, body)


def test_serves_production_once_loaded(ctx):
    m = create_model(ctx.sessions, "pets")
    cat = pub(ctx, m, version=1, class_map=V1, winner=1)
    batches: list[tuple[str, int]] = []

    async def body(service):
        # Right after start the registry has been read, the load has not happened yet.
        assert service.ready() == (False, "not serving yet: pets", {"pets": "loading production version 1"})
        result = await service.predict(m, IMAGE)  # waits for the load instead of failing
        assert result.model == "pets" and result.version == 1
        assert result.mask.shape == (16, 24) and uniform(result.mask) == cat
        assert result.class_names == V1
        assert service.ready() == (True, "1 of 1 model(s) loaded", {"pets": "serving production version 1"})
        for ref in ("1", 1, "production", "latest"):
            assert (await service.predict(m, IMAGE, ref)).version == 1
        with pytest.raises(VersionNotFound, match=r"model version 7 does not exist \(known versions: 1; aliases: "
                                                  r"latest, production\)"):
            await service.predict(m, IMAGE, "7")
        with pytest.raises(VersionNotFound, match="'nope' is neither a version number nor a set alias"):
            await service.predict(m, IMAGE, "nope")
        assert service.loaded_versions() == [(m, 1)]

    run(ctx, body, on_batch=lambda name, size: batches.append((name, size)))
    assert batches and all(name == "pets" and size >= 1 for name, size in batches)


def test_forwards_run_on_the_torch_thread(ctx):
    """Every forward of a served version runs on the process's torch thread (one OpenMP team:
    services/inference/compute.py), not on its batcher thread or the caller's."""
    import threading

    from services.inference.compute import THREAD_NAME

    m = create_model(ctx.sessions, "pets")
    pub(ctx, m, version=1, class_map=V1, winner=1)
    threads: list[str] = []

    async def body(service):
        await service.predict(m, IMAGE)
        async with service.lease(m) as served:
            served.predictor.model.register_forward_pre_hook(
                lambda *_: threads.append(threading.current_thread().name))
        await asyncio.gather(*(service.predict(m, IMAGE) for _ in range(3)))

    run(ctx, body)
    assert threads and set(threads) == {THREAD_NAME}


def test_versions_without_production(ctx):
    m = create_model(ctx.sessions, "pets")
    dog = pub(ctx, m, version=1, class_map=V1, winner=2, to_production=False)

    async def body(service):
        ready, _, notes = service.ready()
        assert ready and notes["pets"].startswith("no version is in production yet")
        with pytest.raises(NoProductionVersion, match="set its production alias, or pass"):
            await service.predict(m, IMAGE)
        assert uniform((await service.predict(m, IMAGE, "1")).mask) == dog

    run(ctx, body)


def test_hot_swap_serves_every_request_from_one_version(ctx):
    """Requests keep flowing while production moves: none fails, none mixes versions."""
    m = create_model(ctx.sessions, "pets")
    answers = {1: pub(ctx, m, version=1, class_map=V1, winner=1),
               2: pub(ctx, m, version=2, class_map=V2, winner=3, parent=1, to_production=False)}
    assert answers == {1: 1, 2: 3}

    async def body(service):
        seen: list[tuple[int, int]] = []

        async def client() -> None:
            while len(seen) < 2000:
                r = await service.predict(m, IMAGE)
                seen.append((r.version, uniform(r.mask)))
                if r.version == 2 and sum(v == 2 for v, _ in seen) > 40:
                    return

        assert (await service.predict(m, IMAGE)).version == 1
        clients = [asyncio.ensure_future(client()) for _ in range(6)]
        await asyncio.sleep(0.2)
        await asyncio.to_thread(set_production, ctx.sessions, m, 2)
        await asyncio.to_thread(service.refresh)  # from another thread, as the alias route does
        await asyncio.wait_for(asyncio.gather(*clients), timeout=120)
        return seen

    seen = run(ctx, body, poll_interval_s=60)
    assert {v for v, _ in seen} == {1, 2}
    assert all(answers[version] == value for version, value in seen)


def test_two_models_side_by_side(ctx):
    """Same class names, other indices, the same version numbers: each model's requests get its own
    production version, and moving one model's production leaves the other's answers alone."""
    a, b = create_model(ctx.sessions, "a"), create_model(ctx.sessions, "b")
    a_cat = pub(ctx, a, version=1, class_map=V1, winner=1)
    pub(ctx, a, version=2, class_map=V2, winner=3, parent=1, to_production=False)  # never production here
    b_cat = pub(ctx, b, version=1, class_map=W1, winner=2)
    b_fish = pub(ctx, b, version=2, class_map=W2, winner=3, parent=1, to_production=False)
    assert (a_cat, b_cat, b_fish) == (1, 2, 3)

    async def body(service):
        ra, rb = await asyncio.gather(service.predict(a, IMAGE), service.predict(b, IMAGE))
        assert (ra.model, ra.version, uniform(ra.mask), ra.class_names) == ("a", 1, a_cat, V1)
        assert (rb.model, rb.version, uniform(rb.mask), rb.class_names) == ("b", 1, b_cat, W1)
        assert ra.class_names[a_cat] == rb.class_names[b_cat] == "cat"
        assert sorted(service.loaded_versions()) == [(a, 1), (b, 1)]
        assert service.ready() == (True, "2 of 2 model(s) loaded", {"a": "serving production version 1",
                                                                   "b": "serving production version 1"})
        async with service.lease(a) as a_before:
            pass

        seen: dict[int, list[tuple[str, int, int]]] = {a: [], b: []}

        async def client(model_id: int) -> None:
            while len(seen[a]) + len(seen[b]) < 10000:
                r = await service.predict(model_id, IMAGE)
                seen[model_id].append((r.model, r.version, uniform(r.mask)))
                if sum(v == 2 for _, v, _ in seen[b]) > 40 and len(seen[a]) > 100:
                    return

        clients = [asyncio.ensure_future(client(m)) for m in (a, b, a, b)]
        await asyncio.sleep(0.2)
        await asyncio.to_thread(set_production, ctx.sessions, b, 2)
        service.refresh()
        await asyncio.wait_for(asyncio.gather(*clients), timeout=120)

        # Model a never noticed: the same loaded version answered all along, and still does.
        assert set(seen[a]) == {("a", 1, a_cat)}
        async with service.lease(a) as a_after:
            assert a_after is a_before and not a_after.retired
        assert set(seen[b]) == {("b", 1, b_cat), ("b", 2, b_fish)}
        last = await service.predict(b, IMAGE)
        assert (last.version, uniform(last.mask), last.class_names) == (2, b_fish, W2)
        assert (await service.predict(a, IMAGE, "latest")).version == 2  # a's latest, not b's
        assert service.ready()[2] == {"a": "serving production version 1", "b": "serving production version 2"}

    run(ctx, body, poll_interval_s=60)


def test_the_budget_serves_more_models_than_it_holds(ctx):
    """STRATA_INFERENCE_MAX_LOADED=2 and three models in production: the first two load at start,
    the third on its request (evicting the least recently used); every request is answered by
    its own model, and never more than budget + 1 versions stay loaded."""
    ids = [create_model(ctx.sessions, name) for name in ("m1", "m2", "m3")]
    winners = {m: pub(ctx, m, version=1, class_map=V2, winner=i + 1) for i, m in enumerate(ids)}
    assert list(winners.values()) == [1, 2, 3]
    names = dict(zip(ids, ("m1", "m2", "m3")))

    async def body(service):
        await until(lambda: service.ready()[0])
        _, sentence, notes = service.ready()
        assert sentence == "2 of 3 model(s) loaded"
        assert notes == {"m1": "serving production version 1", "m2": "serving production version 1",
                         "m3": "production version 1 is not loaded (STRATA_INFERENCE_MAX_LOADED=2 is full): "
                               "it loads on its first request"}
        assert service.loaded_versions() == [(ids[0], 1), (ids[1], 1)]

        r = await service.predict(ids[2], IMAGE)  # loaded on demand: m1, the least recently used, goes
        assert (r.model, r.version, uniform(r.mask)) == ("m3", 1, winners[ids[2]])
        assert service.loaded_versions() == [(ids[1], 1), (ids[2], 1)]
        assert service.ready()[0]  # a production left out by the budget is not a failure

        for m in (ids[0], ids[1], ids[2], ids[0], ids[2], ids[1]):  # sequential: at most the budget stays
            r = await service.predict(m, IMAGE)
            assert (r.model, uniform(r.mask)) == (names[m], winners[m])
            assert (m, 1) in service.loaded_versions() and len(service.loaded_versions()) <= 2

        # All at once, many times over: every request answered by its own model.
        most = 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal most
            while not done.is_set():
                most = max(most, len(service.loaded_versions()))
                await asyncio.sleep(0.001)

        watcher = asyncio.ensure_future(watch())
        results = await asyncio.gather(*(service.predict(m, IMAGE) for _ in range(8) for m in ids))
        done.set()
        await watcher
        assert [(r.model, uniform(r.mask)) for r in results] == [(names[m], winners[m]) for _ in range(8) for m in ids]
        assert 2 <= most <= 3
        assert len(service.loaded_versions()) <= 2

    run(ctx, body, inference_max_loaded=2)


def test_production_versions_are_kept_over_other_versions(ctx):
    """With room for three, two productions and explicit versions: a ?version= request evicts the
    other non-production version first, even when the productions were used less recently."""
    a, b = create_model(ctx.sessions, "a"), create_model(ctx.sessions, "b")
    for v in (1, 2, 3):
        pub(ctx, a, version=v, class_map=V1, winner=v - 1, to_production=v == 1)
    pub(ctx, b, version=1, class_map=W1, winner=1)

    async def body(service):
        await until(lambda: service.ready()[0])  # both productions loaded and serving
        assert sorted(service.loaded_versions()) == [(a, 1), (b, 1)]
        assert uniform((await service.predict(a, IMAGE, 2)).mask) == 1
        assert service.loaded_versions()[-1] == (a, 2)  # the productions are now the least recently used
        assert uniform((await service.predict(a, IMAGE, 3)).mask) == 2
        assert sorted(service.loaded_versions()) == [(a, 1), (a, 3), (b, 1)]  # a's version 2 made way
        assert service.ready()[2] == {"a": "serving production version 1", "b": "serving production version 1"}
        assert uniform((await service.predict(b, IMAGE)).mask) == 1
        assert uniform((await service.predict(a, IMAGE)).mask) == 0

    run(ctx, body, inference_max_loaded=3)


def test_lru_cache_closes_evicted_versions_when_unused(ctx):
    m = create_model(ctx.sessions, "pets")
    for v in (1, 2, 3):
        pub(ctx, m, version=v, class_map=V1, winner=v - 1, to_production=v == 1)

    async def body(service):
        await service.predict(m, IMAGE)
        await service.predict(m, IMAGE, 2)
        assert service.loaded_versions() == [(m, 1), (m, 2)]
        async with service.lease(m, 2) as leased:
            assert uniform((await service.predict(m, IMAGE, 3)).mask) == 2
            # v2 was evicted (production v1 stays) but its lease still answers.
            assert service.loaded_versions() == [(m, 1), (m, 3)]
            assert not leased.closed
            assert uniform(await leased.batcher.submit(IMAGE)) == 1
        assert leased.closed and leased.batcher.closed
        assert (await service.predict(m, IMAGE, 2)).version == 2  # loaded again
        assert service.loaded_versions() == [(m, 1), (m, 2)]

    run(ctx, body, inference_max_loaded=2)


def test_a_broken_production_version_is_reported_and_not_retried_every_time(ctx):
    m = create_model(ctx.sessions, "pets")
    pub(ctx, m, version=1, class_map=V1, winner=1)
    ctx.store.delete(checkpoint_of(ctx.sessions, m, 1))

    async def body(service):
        with pytest.raises(ModelUnavailable, match="model 'pets': the production version 1 cannot be served: "
                                                   "model version 1 cannot be loaded"):
            await service.predict(m, IMAGE)
        ready, sentence, notes = service.ready()
        assert not ready and sentence == "not serving yet: pets"
        assert notes["pets"].startswith("production version 1 cannot be loaded: model version 1 cannot")
        with pytest.raises(ModelUnavailable):
            await service.predict(m, IMAGE, 1)  # remembered: no new download attempt
        assert service.loaded_versions() == []

    run(ctx, body)


def test_a_broken_new_version_leaves_the_old_one_serving(ctx):
    m = create_model(ctx.sessions, "pets")
    pub(ctx, m, version=1, class_map=V1, winner=1)
    pub(ctx, m, version=2, class_map=V2, winner=3, parent=1, to_production=False)
    ctx.store.delete(checkpoint_of(ctx.sessions, m, 2))

    async def body(service):
        assert (await service.predict(m, IMAGE)).version == 1
        await asyncio.to_thread(set_production, ctx.sessions, m, 2)
        service.refresh()
        await until(lambda: "cannot be loaded" in service.ready()[2]["pets"])
        ready, _, notes = service.ready()
        assert ready and notes["pets"].startswith("serving version 1 while production moves to 2: model version 2 "
                                                  "cannot be loaded")
        assert (await service.predict(m, IMAGE)).version == 1

    run(ctx, body)


def test_ready_reports_each_model_by_name(ctx):
    """One model broken, the others in every other state: each is named with its own note, and only
    the broken one holds readiness back."""
    serving, idle, _, broken = (create_model(ctx.sessions, n) for n in ("serving", "idle", "empty", "broken"))
    pub(ctx, serving, version=1, class_map=V1, winner=1)
    pub(ctx, serving, version=2, class_map=V2, winner=3, parent=1)
    pub(ctx, idle, version=1, class_map=W1, winner=1, to_production=False)
    pub(ctx, broken, version=1, class_map=V1, winner=2)
    ctx.store.delete(checkpoint_of(ctx.sessions, broken, 1))

    async def body(service):
        await until(lambda: "cannot be loaded" in service.ready()[2]["broken"]
                    and service.ready()[2]["serving"].startswith("serving"))
        ready, sentence, notes = service.ready()
        assert (ready, sentence) == (False, "not serving yet: broken")
        assert list(notes) == ["broken", "empty", "idle", "serving"]
        assert notes["serving"] == "serving production version 2"
        assert notes["idle"].startswith("no version is in production yet")
        assert notes["empty"].startswith("no version has been trained yet")
        assert notes["broken"].startswith("production version 1 cannot be loaded: model version 1 cannot be loaded")
        # The broken model's state never reaches the others' answers.
        assert (await service.predict(serving, IMAGE)).version == 2
        assert uniform((await service.predict(idle, IMAGE, 1)).mask) == 1

    run(ctx, body)


def test_an_extra_version_never_evicts_production_within_the_budget(ctx):
    """Budget 1, production loaded: a ?version= request loads its version one past the budget for as
    long as it runs, and that version (not production) goes when the request ends; readiness never
    flickers."""
    m = create_model(ctx.sessions, "pets")
    pub(ctx, m, version=1, class_map=V1, winner=0, to_production=False)
    pub(ctx, m, version=2, class_map=V1, winner=1)

    async def body(service):
        await until(lambda: service.ready()[0] and service.loaded_versions() == [(m, 2)])
        async with service.lease(m, 1) as extra:
            assert sorted(service.loaded_versions()) == [(m, 1), (m, 2)]  # one past the budget, for now
            assert service.ready()[2] == {"pets": "serving production version 2"}
            assert uniform(await extra.batcher.submit(IMAGE)) == 0
        assert service.loaded_versions() == [(m, 2)] and extra.closed
        assert service.ready() == (True, "1 of 1 model(s) loaded", {"pets": "serving production version 2"})
        assert uniform((await service.predict(m, IMAGE, 1)).mask) == 0  # loaded again on demand
        assert (await service.predict(m, IMAGE)).version == 2 and service.loaded_versions() == [(m, 2)]

    run(ctx, body, inference_max_loaded=1)


def test_a_deleted_version_is_not_served_from_the_cache(ctx):
    from sqlalchemy import select

    from services.db.models import Task, TaskStatus
    from services.db.session import session_scope
    from services.registry.versions import delete_version

    m = create_model(ctx.sessions, "pets")
    pub(ctx, m, version=1, class_map=V1, winner=1)
    pub(ctx, m, version=2, class_map=V2, winner=3, to_production=False)

    async def body(service):
        assert (await service.predict(m, IMAGE, 2)).version == 2
        assert (m, 2) in service.loaded_versions()
        with session_scope(ctx.sessions) as s:
            for task in s.scalars(select(Task).where(Task.model_id == m)):
                task.status = TaskStatus.SUCCEEDED  # published as a worker would have finished them
            delete_version(s, m, 2)
        service.refresh()
        await until(lambda: (m, 2) not in service.loaded_versions())
        with pytest.raises(VersionNotFound, match="model version 2 does not exist"):
            await service.predict(m, IMAGE, 2)
        assert (await service.predict(m, IMAGE)).version == 1

    run(ctx, body, inference_max_loaded=4)
