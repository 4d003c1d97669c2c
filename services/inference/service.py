"""The inference service: loaded versions of every model (an LRU cache within a budget), their
batchers, and each model's production pointer.

``InferenceService`` keeps up to ``settings.inference_max_loaded`` versions loaded, of any models,
each a ``Served`` pair of ``Predictor`` and ``DynamicBatcher``, keyed by (model id, version).
Production versions are pinned while the budget allows: eviction takes the least recently used
other version first, and a production version only when productions alone fill the budget (it is
then loaded again on its model's next request). A request leases its version for as long as it
runs (``lease``/``predict``): a version dropped from the cache (evicted, or replaced as
production) is closed only once its last request is done, so no request fails because another
version arrived.

Each model's production pointer follows its ``production`` alias. A watcher task reads every
model's alias every ``poll_interval_s`` (and at once after ``refresh()``, which the alias route
calls); when one moved, the new version is downloaded in a loader thread, then loaded and warmed on
the process's torch thread (services/inference/compute.py: every forward runs there, on one OpenMP
team) while requests keep being served by the old one (its batches wait only while the new version
is being loaded and warmed, not while it downloads), and only then is that model's pointer swapped,
in one assignment under a lock. Every request takes its model's pointer once, so it is answered entirely by one
version: the old or the new. Models are independent: one model's swap or broken checkpoint never
touches another's answers.

Loads that fail (missing or corrupt checkpoint) are remembered for ``retry_failed_after_s``, so a
broken version is not downloaded again on every poll or request. Nothing here imports FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db.models import Model, ModelVersion
from services.errors import dependency_of
from services.inference.batcher import DynamicBatcher
from services.inference.compute import torch_thread
from services.inference.errors import ModelLoadError, ModelUnavailable, NoModelYet, NoProductionVersion
from services.inference.predictor import Predictor, VersionSpec, fetch_version
from services.registry.aliases import PRODUCTION, production_versions
from services.registry.models import model_by_id
from services.registry.versions import get_version, parse_version_number, resolve_version
from services.storage import ObjectStore

log = logging.getLogger(__name__)

NO_MODEL_YET = "no version has been trained yet"
REGISTRY_UNREADABLE = "cannot read the production aliases"
STARTUP_READ_TIMEOUT_S = 10.0  # an unreachable database must not hold up the API's start
ACQUIRE_ATTEMPTS = 3  # a freshly loaded version can be evicted before its request leases it
Key = tuple[int, int]  # (model id, version)


@dataclass
class Served:
    """A loaded version being served. ``users``: requests holding a lease on it; ``retired``: out
    of the cache (closed once unused); ``closed``: its batcher is shut down."""

    predictor: Predictor
    batcher: DynamicBatcher
    users: int = 0
    retired: bool = False
    closed: bool = False

    @property
    def version(self) -> int:
        return self.predictor.version

    @property
    def key(self) -> Key:
        return self.predictor.spec.model_id, self.predictor.version


@dataclass(frozen=True)
class Segmentation:
    """One answered request: the version that answered and its mask at the input's size."""

    model: str
    version: int
    mask: np.ndarray  # uint8 [H, W], the model's class indices
    class_names: dict[int, str]  # the version's classes: index -> name


@dataclass(frozen=True)
class ModelView:
    """What the last look at the registry found about one model's production version."""

    model_id: int
    name: str
    production: int | None
    has_versions: bool
    spec: VersionSpec | None = None  # the production version's, when it could be read
    problem: str | None = None  # why the production version cannot be served, if known from its row


@dataclass(frozen=True)
class RegistryView:
    models: dict[int, ModelView] = field(default_factory=dict)
    versions: frozenset[Key] = frozenset()  # every (model id, version) that exists


class InferenceService:
    """Per-version predictors and batchers of every model, and each model's hot-swapped production pointer."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        *,
        on_batch: Callable[[str, int], Any] | None = None,
        poll_interval_s: float = 2.0,
        retry_failed_after_s: float = 30.0,
    ) -> None:
        self.settings, self._sessions, self._store = settings, sessions, store
        self._on_batch = on_batch
        self._poll_interval_s, self._retry_failed_after_s = poll_interval_s, retry_failed_after_s
        self._budget = settings.inference_max_loaded
        self._lock = threading.Lock()  # guards everything below up to _stopped
        self._cache: OrderedDict[Key, Served] = OrderedDict()  # least recently used first
        self._loading: dict[Key, Future] = {}
        self._failed: dict[Key, tuple[float, str]] = {}  # (model, version) -> (monotonic time, why)
        self._production: dict[int, Served] = {}  # model id -> the version its requests get by default
        self._view: RegistryView | None = None
        self._registry_error: str | None = None  # why the registry could not be read, until it can
        self._stopped = False
        self._loader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="strata-model-load")
        self._sync_lock = asyncio.Lock()  # one registry sync at a time: swaps happen in alias order
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: asyncio.Task | None = None

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Read the production aliases, then watch them; the first loads run in the background."""
        self._loop = asyncio.get_running_loop()
        try:  # so readiness knows at once whether there are models to wait for
            view = await asyncio.wait_for(asyncio.to_thread(self._read_registry), STARTUP_READ_TIMEOUT_S)
        except Exception as err:  # the database may not be ready yet: the watcher keeps trying
            self._registry_error = _registry_problem(err)
        else:
            with self._lock:
                self._view = view
        self._watcher = asyncio.create_task(self._watch(), name="strata-production-watcher")

    async def stop(self) -> None:
        """Stop the watcher and close every batcher once its requests are done."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        with self._lock:
            self._stopped = True
            retiring = list(self._cache.values())
            self._cache.clear()
            self._production.clear()
            closing = [s for s in retiring if self._retire_locked(s)]
        for served in closing:
            served.batcher.close(wait=False)
        self._loader.shutdown(wait=False, cancel_futures=True)

    def refresh(self) -> None:
        """Look at the production aliases now instead of at the next poll (callable from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    # --- serving -----------------------------------------------------------------------------
    async def predict(self, model_id: int, image: Image.Image, version: str | int | None = None) -> Segmentation:
        """Segment one image with the model's ``version`` (number or alias; None: production).

        Raises VersionNotFound, NoModelYet, NoProductionVersion or ModelUnavailable.
        """
        async with self.lease(model_id, version) as served:
            mask = await served.batcher.submit(image)
            predictor = served.predictor
            return Segmentation(predictor.spec.model_name, served.version, mask, predictor.class_names)

    @contextlib.asynccontextmanager
    async def lease(self, model_id: int, version: str | int | None = None) -> AsyncIterator[Served]:
        """The model's loaded ``version`` (loading it if needed), kept open until the block ends."""
        served = await self._acquire(model_id, version)
        try:
            yield served
        finally:
            self._release(served)

    def ready(self, *, detail: bool = True) -> tuple[bool, str, dict[str, str]]:
        """(ready, in a sentence, each model's production state by name).

        Not ready while the registry cannot be read at all, or while a model's production version
        exists, fits the budget, and no version of that model serves by default yet (loading, or
        failing to load). A model with no version, or none in production, is ready and says so.
        Without ``detail`` no sentence says why something fails: error texts may name servers and
        paths (the unauthenticated /readyz)."""
        with self._lock:
            view = self._view
            serving = {m: s.version for m, s in self._production.items()}
            failures = dict(self._failed)
            loading = set(self._loading)
        if view is None:
            error = self._registry_error if detail else self._registry_error and REGISTRY_UNREADABLE
            return False, error or "looking up the production models in the registry", {}
        notes: dict[str, str] = {}
        waiting: list[str] = []
        fits = len(serving) < self._budget  # another production version would be loaded
        for m in sorted(view.models.values(), key=lambda m: m.name):
            note, ok = self._model_state(m, serving.get(m.model_id), failures, loading, fits, detail)
            notes[m.name] = note
            if not ok:
                waiting.append(m.name)
        if waiting:
            return False, f"not serving yet: {', '.join(waiting)}", notes
        if not view.models:
            return True, "no model exists yet: create one with POST /models", notes
        return True, f"{len(serving)} of {len(view.models)} model(s) loaded", notes

    def _model_state(self, m: ModelView, serving: int | None, failures: dict[Key, tuple[float, str]],
                     loading: set[Key], fits: bool, detail: bool) -> tuple[str, bool]:
        if m.production is None:
            if not m.has_versions:
                return f"{NO_MODEL_YET}: segmenting answers 409 until a task produces one", True
            return "no version is in production yet (set the production alias); ?version=N works meanwhile", True
        if serving == m.production:
            return f"serving production version {serving}", True
        failure = failures.get((m.model_id, m.production))
        problem = m.problem or (failure[1] if failure else None)
        if problem and not detail:  # its text may name servers and paths
            problem = "it cannot be loaded"
        if serving is not None:
            return (f"serving version {serving} while production moves to {m.production}: "
                    f"{problem or 'loading'}"), True
        if problem:
            why = f": {problem}" if detail else ""
            return f"production version {m.production} cannot be loaded{why}", False
        if (m.model_id, m.production) in loading or fits:
            return f"loading production version {m.production}", False
        return (f"production version {m.production} is not loaded (STRATA_INFERENCE_MAX_LOADED={self._budget} "
                "is full): it loads on its first request"), True

    def loaded_versions(self) -> list[Key]:
        """The (model id, version) pairs in the cache, least recently used first."""
        with self._lock:
            return list(self._cache)

    # --- leases ------------------------------------------------------------------------------
    async def _acquire(self, model_id: int, ref: str | int | None) -> Served:
        if ref is None or ref == PRODUCTION:
            return await self._acquire_production(model_id)
        number = parse_version_number(ref)
        spec = None
        if number is None:  # an alias other than production ("latest", "candidate"): ask the registry
            spec = await asyncio.to_thread(self._spec_of, model_id, ref)
            number = spec.version
        for _ in range(ACQUIRE_ATTEMPTS):
            served = self._acquire_cached((model_id, number))
            if served is not None:
                return served
            spec = spec or await asyncio.to_thread(self._spec_of, model_id, number)
            served = self._lease(await _wait(self._load(spec)))
            if served is not None:
                return served
        raise ModelUnavailable(
            f"model version {number} was loaded but evicted again before it could answer: too many versions "
            f"in use at once for STRATA_INFERENCE_MAX_LOADED={self._budget}")

    async def _acquire_production(self, model_id: int) -> Served:
        for _ in range(ACQUIRE_ATTEMPTS):
            served = self._acquire_pointer(model_id)
            if served is not None:
                return served
            # Not loaded (startup, a first version, evicted over the budget): sync now and wait for it.
            await self._sync_production(wanted=model_id)
            served = self._acquire_pointer(model_id)
            if served is not None:
                return served
            with self._lock:
                view = self._view.models.get(model_id) if self._view else None
                failure = self._failed.get((model_id, view.production)) if view and view.production else None
            if view is not None and view.production is None:
                if not view.has_versions:
                    raise NoModelYet(f"model {view.name!r}: {NO_MODEL_YET}")
                raise NoProductionVersion(f"model {view.name!r} has no version in production yet: set its "
                                          "production alias, or pass ?version=N")
            if view is not None and (view.problem or failure):
                raise ModelUnavailable(f"model {view.name!r}: the production version {view.production} cannot "
                                       f"be served: {view.problem or failure[1]}")
        raise ModelUnavailable("the production version is not loaded yet; try again shortly")

    def _acquire_pointer(self, model_id: int) -> Served | None:
        with self._lock:
            served = self._production.get(model_id)
            if served is None or served.closed:
                return None
            self._use_locked(served)
            return served

    def _acquire_cached(self, key: Key) -> Served | None:
        with self._lock:
            served = self._cache.get(key)
            if served is None or served.closed:
                return None
            self._use_locked(served)
            return served

    def _lease(self, served: Served) -> Served | None:
        """A lease on a version just loaded for a request (None: it was closed again meanwhile)."""
        with self._lock:
            if served.closed:
                return None
            self._use_locked(served)
            return served

    def _use_locked(self, served: Served) -> None:
        served.users += 1
        if self._cache.get(served.key) is served:
            self._cache.move_to_end(served.key)

    def _release(self, served: Served) -> None:
        with self._lock:
            served.users -= 1
            close = served.retired and served.users == 0 and not served.closed
            if close:
                served.closed = True
            closing = [served] if close else []
            if len(self._cache) > self._budget:  # a version loaded past the budget for this request
                closing += self._evict_locked()
        for s in closing:
            s.batcher.close(wait=False)

    # --- loading -----------------------------------------------------------------------------
    def _load(self, spec: VersionSpec) -> Future:
        """A future of the loaded version: done at once when cached, shared while loading."""
        key = spec.key
        future: Future = Future()
        with self._lock:
            if key in self._cache and not self._cache[key].closed:
                self._cache.move_to_end(key)
                future.set_result(self._cache[key])
                return future
            if key in self._loading:
                return self._loading[key]
            failed = self._failed.get(key)
            if failed and time.monotonic() - failed[0] < self._retry_failed_after_s:
                future.set_exception(ModelLoadError(failed[1]))
                return future
            if self._stopped:
                future.set_exception(ModelUnavailable("the inference service is shutting down"))
                return future
            future = self._loader.submit(self._load_now, spec)
            self._loading[key] = future
            future.add_done_callback(lambda f, k=key: f.cancelled() and self._forget_loading(k, f))
        return future

    def _forget_loading(self, key: Key, future: Future) -> None:
        with self._lock:
            if self._loading.get(key) is future:
                del self._loading[key]

    def _load_now(self, spec: VersionSpec) -> Served:
        """In a loader thread: download; load and warm up on the torch thread; then insert into the cache."""
        key = spec.key
        try:
            # The download here; loading and the warm-up on the torch thread, where its forwards run.
            path = fetch_version(spec, self._store, self.settings.cache_dir)
            predictor = torch_thread().call(Predictor.from_file, spec, path, self.settings.inference_device)
        except Exception as err:
            message = str(err) if isinstance(err, ModelLoadError) else f"model version {spec.version}: {err}"
            log.error("cannot load model %r %s", spec.model_name, message)
            if dependency := dependency_of(err):  # what a caller sees: which server, not where it lives
                message = f"model version {spec.version} cannot be loaded now: {dependency} unavailable"
            with self._lock:
                self._loading.pop(key, None)
                self._failed[key] = (time.monotonic(), message)
            raise ModelLoadError(message) from err
        on_batch = (lambda size, name=spec.model_name: self._on_batch(name, size)) if self._on_batch else None
        batcher = DynamicBatcher(partial(torch_thread().call, predictor.predict_batch),
                                 self.settings.inference_max_batch,
                                 self.settings.inference_max_wait_ms, on_batch=on_batch,
                                 name=f"strata-batcher-m{spec.model_id}-v{spec.version}")
        served = Served(predictor, batcher)
        with self._lock:
            self._loading.pop(key, None)
            self._failed.pop(key, None)
            if self._stopped:
                closing = [served] if self._retire_locked(served) else []
            else:
                self._cache[key] = served
                closing = self._evict_locked(keep=served)
        for s in closing:
            s.batcher.close(wait=False)
        return served

    def _evict_locked(self, keep: Served | None = None) -> list[Served]:
        """Drop least recently used versions past the budget: other versions first; production
        versions only when they alone overfill it; never ``keep`` (a version just loaded for a
        request: it may stay one past the budget until that request ends, then ``_release``
        evicts again). Returns those to close now; the others close when their last request ends."""
        closing = []
        while len(self._cache) > self._budget:
            pinned = {id(s) for s in self._production.values()}
            candidates = [k for k, s in self._cache.items() if s is not keep]
            victim = next((k for k in candidates if id(self._cache[k]) not in pinned), None)
            if victim is None and sum(id(s) in pinned for s in self._cache.values()) > self._budget:
                victim = next(iter(candidates), None)
            if victim is None:
                break
            served = self._cache.pop(victim)
            if self._production.get(victim[0]) is served:
                del self._production[victim[0]]  # loaded again on its model's next request
            log.info("unloading model %r version %s (STRATA_INFERENCE_MAX_LOADED=%s)",
                     served.predictor.spec.model_name, victim[1], self._budget)
            if self._retire_locked(served):
                closing.append(served)
        return closing

    @staticmethod
    def _retire_locked(served: Served) -> bool:
        """Mark retired; True when it has no users and must be closed now by the caller."""
        served.retired = True
        if served.users == 0 and not served.closed:
            served.closed = True
            return True
        return False

    # --- the production pointers ------------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            try:
                await self._sync_production()
            except Exception as err:  # the database may be briefly unreachable: keep serving, try again
                message = _registry_problem(err)
                if message != self._registry_error:  # once per distinct problem, not every poll
                    log.warning("%s", message)
                self._registry_error = message
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)
            self._wake.clear()

    async def _sync_production(self, wanted: int | None = None) -> None:
        """Read the aliases; load each model's production version where it moved (a hot swap), where
        a request wants it (``wanted``), or where the budget has room, then swap the pointers."""
        async with self._sync_lock:
            view = await asyncio.to_thread(self._read_registry)
            with self._lock:
                self._view, self._registry_error = view, None
                for model_id in [m for m in self._production if m not in view.models or
                                 view.models[m].production is None]:
                    del self._production[model_id]  # the alias or the model is gone: nothing by default
                # Versions deleted since, and the versions of deleted models, are served no more.
                gone = [k for k in self._cache if k not in view.versions]
                closing = [s for s in (self._cache.pop(k) for k in gone) if self._retire_locked(s)]
                for key in [k for k in self._failed if k not in view.versions]:
                    del self._failed[key]
                todo = self._to_load_locked(view, wanted)
            for served in closing:
                served.batcher.close(wait=False)
            loads = [(m, self._load(m.spec)) for m in todo]
            for m, future in loads:
                try:
                    served = await _wait(future)
                except ModelUnavailable:
                    continue  # recorded in _failed; ready() and requests report it; retried later
                self._swap(m, served)

    def _to_load_locked(self, view: RegistryView, wanted: int | None) -> list[ModelView]:
        """Models whose production moved (a swap), the one a request waits for, then others while
        the budget has room for more production versions (other versions make way for them)."""
        room = self._budget - len(self._production)
        todo = []
        for m in sorted(view.models.values(), key=lambda m: m.model_id):
            if m.production is None or m.spec is None:
                continue
            current = self._production.get(m.model_id)
            if current is not None and (current.closed or current.retired):
                del self._production[m.model_id]  # evicted: load it again like a missing one
                current = None
            if current is not None:
                if current.version != m.production:
                    todo.append(m)
            elif m.model_id == wanted or (room > 0 and (m.model_id, m.production) not in self._failed):
                todo.append(m)
                room -= 1
        return todo

    def _swap(self, m: ModelView, served: Served) -> None:
        with self._lock:
            if served.closed or served.retired:
                return  # evicted meanwhile (tiny budget): the next sync or request loads it again
            previous = self._production.get(m.model_id)
            self._production[m.model_id] = served
            if served.key in self._cache:
                self._cache.move_to_end(served.key)
            closing = self._evict_locked()
        for s in closing:
            s.batcher.close(wait=False)
        if previous is not served:
            log.info("model %r: production version %s now serves (was %s)", m.name, served.version,
                     previous.version if previous else "none")

    def _read_registry(self) -> RegistryView:
        with self._sessions() as session:
            models = session.execute(select(Model.id, Model.name)).all()
            productions = production_versions(session)
            rows = session.execute(select(ModelVersion.model_id, ModelVersion.version))
            versions = frozenset((model_id, version) for model_id, version in rows)
            with_versions = {model_id for model_id, _ in versions}
            views = {}
            for model_id, name in models:
                version = productions.get(model_id)
                spec, problem = None, None
                if version is not None:
                    try:
                        spec = VersionSpec.from_row(get_version(session, model_id, version), name)
                    except ModelLoadError as err:
                        problem = str(err)
                views[model_id] = ModelView(model_id, name, version, model_id in with_versions, spec, problem)
            return RegistryView(views, versions)

    def _spec_of(self, model_id: int, ref: str | int) -> VersionSpec:
        with self._sessions() as session:
            name = model_by_id(session, model_id).name
            return VersionSpec.from_row(resolve_version(session, model_id, ref), name)


def _registry_problem(err: Exception) -> str:
    return f"{REGISTRY_UNREADABLE}: {type(err).__name__}: {err or 'timed out'}"[:500]


async def _wait(future: Future) -> Served:
    """Await a shared load. Shielded: a cancelled request must not cancel the load that other
    requests (and the production watcher) are waiting for too."""
    return await asyncio.shield(asyncio.wrap_future(future))
