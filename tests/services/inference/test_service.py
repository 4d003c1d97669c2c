"""InferenceService on a real registry and object store (embedded flavour; the API tests run both):
the production pointer and its hot swap, the per-version LRU cache and leases, readiness."""

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
from tests.services.inference.helpers import publish, random_image, set_production

V1 = {0: "background", 1: "cat", 2: "dog"}
V2 = {**V1, 3: "bird"}
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


def uniform(mask: np.ndarray) -> int:
    values = np.unique(mask)
    assert len(values) == 1, f"mask mixes classes {values.tolist()}"
    return int(values[0])


def test_before_any_model(ctx):
    async def body(service):
        assert service.ready() == (True, "no model has been trained yet: /segment answers 409 until a task "
                                         "produces a version")
        with pytest.raises(NoModelYet, match="^no model has been trained yet$"):
            await service.predict(IMAGE)
        with pytest.raises(VersionNotFound, match="model version 1 does not exist"):
            await service.predict(IMAGE, "1")

    run(ctx, body)


def test_serves_production_once_loaded(ctx):
    cat = publish(ctx.sessions, ctx.store, ctx.settings, version=1, class_map=V1, winner=1)
    batches: list[int] = []

    async def body(service):
        # Right after start the registry has been read, the load has not happened yet.
        ready, note = service.ready()
        assert not ready and note == "production model version 1 is not loaded: loading model version 1"
        result = await service.predict(IMAGE)  # waits for the load instead of failing
        assert result.version == 1 and result.mask.shape == (16, 24) and uniform(result.mask) == cat
        assert result.class_names == V1
        assert service.ready() == (True, "serving production model version 1")
        for ref in ("1", 1, "production", "latest"):
            assert (await service.predict(IMAGE, ref)).version == 1
        with pytest.raises(VersionNotFound, match=r"model version 7 does not exist \(known versions: 1\)"):
            await service.predict(IMAGE, "7")
        with pytest.raises(VersionNotFound, match="'nope' is neither a version number nor a set alias"):
            await service.predict(IMAGE, "nope")

    run(ctx, body, on_batch=batches.append)
    assert batches and all(size >= 1 for size in batches)


def test_versions_without_production(ctx):
    dog = publish(ctx.sessions, ctx.store, ctx.settings, version=1, class_map=V1, winner=2, to_production=False)

    async def body(service):
        ready, note = service.ready()
        assert ready and note.startswith("no version is in production yet")
        with pytest.raises(NoProductionVersion, match="promote one, or pass"):
            await service.predict(IMAGE)
        assert uniform((await service.predict(IMAGE, "1")).mask) == dog

    run(ctx, body)


def test_hot_swap_serves_every_request_from_one_version(ctx):
    """Requests keep flowing while production moves: none fails, none mixes versions."""
    answers = {1: publish(ctx.sessions, ctx.store, ctx.settings, version=1, class_map=V1, winner=1),
               2: publish(ctx.sessions, ctx.store, ctx.settings, version=2, class_map=V2, winner=3, parent=1,
                          to_production=False)}
    assert answers == {1: 1, 2: 3}

    async def body(service):
        seen: list[tuple[int, int]] = []

        async def client() -> None:
            while len(seen) < 2000:
                r = await service.predict(IMAGE)
                seen.append((r.version, uniform(r.mask)))
                if r.version == 2 and sum(v == 2 for v, _ in seen) > 40:
                    return

        assert (await service.predict(IMAGE)).version == 1
        clients = [asyncio.ensure_future(client()) for _ in range(6)]
        await asyncio.sleep(0.2)
        await asyncio.to_thread(set_production, ctx.sessions, 2)
        await asyncio.to_thread(service.refresh)  # from another thread, as the promote route does
        await asyncio.wait_for(asyncio.gather(*clients), timeout=120)
        return seen

    seen = run(ctx, body, poll_interval_s=60)
    assert {v for v, _ in seen} == {1, 2}
    assert all(answers[version] == value for version, value in seen)


def test_lru_cache_keeps_production_and_closes_evicted_versions_when_unused(ctx):
    for v in (1, 2, 3):
        publish(ctx.sessions, ctx.store, ctx.settings, version=v, class_map=V1, winner=v - 1, to_production=v == 1)

    async def body(service):
        await service.predict(IMAGE)
        await service.predict(IMAGE, 2)
        assert service.loaded_versions() == [1, 2]
        async with service.lease(2) as leased:
            assert uniform((await service.predict(IMAGE, 3)).mask) == 2
            # v2 was evicted (production v1 stays) but its lease still answers.
            assert service.loaded_versions() == [1, 3]
            assert not leased.closed
            assert uniform(await leased.batcher.submit(IMAGE)) == 1
        assert leased.closed and leased.batcher.closed
        assert (await service.predict(IMAGE, 2)).version == 2  # loaded again
        assert service.loaded_versions() == [1, 2]

    run(ctx, body, inference_cache_size=1)


def test_a_broken_production_version_is_reported_and_not_retried_every_time(ctx):
    publish(ctx.sessions, ctx.store, ctx.settings, version=1, class_map=V1, winner=1)
    ctx.store.delete("checkpoints/1/model.pt")

    async def body(service):
        with pytest.raises(ModelUnavailable, match="production model version 1 cannot be served: model version 1 "
                                                   "cannot be loaded"):
            await service.predict(IMAGE)
        ready, note = service.ready()
        assert not ready and note.startswith("production model version 1 is not loaded: model version 1 cannot")
        with pytest.raises(ModelUnavailable):
            await service.predict(IMAGE, 1)  # remembered: no new download attempt
        assert service.loaded_versions() == []

    run(ctx, body)


def test_a_broken_new_version_leaves_the_old_one_serving(ctx):
    publish(ctx.sessions, ctx.store, ctx.settings, version=1, class_map=V1, winner=1)
    publish(ctx.sessions, ctx.store, ctx.settings, version=2, class_map=V2, winner=3, parent=1, to_production=False)
    ctx.store.delete("checkpoints/2/model.pt")

    async def body(service):
        assert (await service.predict(IMAGE)).version == 1
        await asyncio.to_thread(set_production, ctx.sessions, 2)
        service.refresh()
        for _ in range(100):
            ready, note = service.ready()
            if "cannot be loaded" in note:
                break
            await asyncio.sleep(0.05)
        assert ready and note.startswith("serving model version 1 while production moves to 2: model version 2 "
                                         "cannot be loaded")
        assert (await service.predict(IMAGE)).version == 1

    run(ctx, body)
