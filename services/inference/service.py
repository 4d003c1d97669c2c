"""The inference service: loaded versions (an LRU cache), their batchers, and the production pointer.

``InferenceService`` keeps up to ``settings.inference_cache_size`` versions loaded, each a
``Served`` pair of ``Predictor`` and ``DynamicBatcher``. A request leases its version for as long
as it runs (``lease``/``predict``): a version dropped from the cache (evicted, or replaced as
production) is closed only once its last request is done, so no request fails because another
version arrived.

The production pointer follows the registry's ``production`` alias. A watcher task reads the alias
every ``poll_interval_s`` (and at once after ``refresh()``, which the promote route calls); when it
moved, the new version is loaded and warmed in a loader thread while requests keep being served by
the old one, and only then is the pointer swapped, in one assignment under a lock. Every request
takes the pointer once, so it is answered entirely by one version: the old or the new.

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
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db.models import ModelVersion
from services.inference.batcher import DynamicBatcher
from services.inference.errors import ModelLoadError, ModelUnavailable, NoModelYet, NoProductionVersion
from services.inference.predictor import Predictor, VersionSpec
from services.registry.aliases import PRODUCTION, production_version
from services.registry.versions import get_version, resolve_version
from services.storage import ObjectStore

log = logging.getLogger(__name__)

NO_MODEL_YET = "no model has been trained yet"
STARTUP_READ_TIMEOUT_S = 10.0  # an unreachable database must not hold up the API's start
ACQUIRE_ATTEMPTS = 3  # a freshly loaded version can be evicted before its request leases it


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


@dataclass(frozen=True)
class Segmentation:
    """One answered request: the version that answered and its mask at the input's size."""

    version: int
    mask: np.ndarray  # uint8 [H, W], global class indices
    class_names: dict[int, str]  # the version's classes: global index -> name


@dataclass(frozen=True)
class RegistryView:
    """What the last look at the registry found."""

    production: int | None
    any_versions: bool
    spec: VersionSpec | None = None  # the production version's, when it could be read
    problem: str | None = None  # why the production version cannot be served, if known from its row


class InferenceService:
    """Per-version predictors and batchers, and the hot-swapped production pointer."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        *,
        on_batch: Callable[[int], Any] | None = None,
        poll_interval_s: float = 2.0,
        retry_failed_after_s: float = 30.0,
    ) -> None:
        self.settings, self._sessions, self._store = settings, sessions, store
        self._on_batch = on_batch
        self._poll_interval_s, self._retry_failed_after_s = poll_interval_s, retry_failed_after_s
        self._lock = threading.Lock()  # guards everything below up to _stopped
        self._cache: OrderedDict[int, Served] = OrderedDict()  # least recently used first
        self._loading: dict[int, Future] = {}
        self._failed: dict[int, tuple[float, str]] = {}  # version -> (monotonic time, why)
        self._production: Served | None = None
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
        """Read the production alias, then watch it; the first load runs in the background."""
        self._loop = asyncio.get_running_loop()
        try:  # so readiness knows at once whether there is a model to wait for
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
            self._production = None
            closing = [s for s in retiring if self._retire_locked(s)]
        for served in closing:
            served.batcher.close(wait=False)
        self._loader.shutdown(wait=False, cancel_futures=True)

    def refresh(self) -> None:
        """Look at the production alias now instead of at the next poll (callable from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    # --- serving -----------------------------------------------------------------------------
    async def predict(self, image: Image.Image, version: str | int | None = None) -> Segmentation:
        """Segment one image with ``version`` (number or alias; None: production).

        Raises VersionNotFound, NoModelYet, NoProductionVersion or ModelUnavailable.
        """
        async with self.lease(version) as served:
            mask = await served.batcher.submit(image)
            return Segmentation(served.version, mask, served.predictor.class_names)

    @contextlib.asynccontextmanager
    async def lease(self, version: str | int | None = None) -> AsyncIterator[Served]:
        """The loaded ``version`` (loading it if needed), kept open until the block ends."""
        served = await self._acquire(version)
        try:
            yield served
        finally:
            self._release(served)

    def ready(self) -> tuple[bool, str]:
        """(ready, what the service is doing): not ready while a production version exists but
        none is loaded; ready with that said when nothing has been trained yet."""
        with self._lock:
            view, serving = self._view, self._production.version if self._production else None
            failure = self._failed.get(view.production) if view and view.production is not None else None
        if view is None:
            return False, self._registry_error or "looking up the production model in the registry"
        if view.production is None:
            if not view.any_versions:
                return True, f"{NO_MODEL_YET}: /segment answers 409 until a task produces a version"
            return True, "no version is in production yet (promote one); /segment needs ?version=N meanwhile"
        if serving == view.production:
            return True, f"serving production model version {serving}"
        problem = view.problem or (failure[1] if failure else f"loading model version {view.production}")
        if serving is None:
            return False, f"production model version {view.production} is not loaded: {problem}"
        return True, f"serving model version {serving} while production moves to {view.production}: {problem}"

    def loaded_versions(self) -> list[int]:
        """The versions in the cache, least recently used first."""
        with self._lock:
            return list(self._cache)

    # --- leases ------------------------------------------------------------------------------
    async def _acquire(self, ref: str | int | None) -> Served:
        if ref is None or ref == PRODUCTION:
            return await self._acquire_production()
        number = _version_number(ref)
        spec = None
        if number is None:  # an alias other than production ("latest"): ask the registry
            spec = await asyncio.to_thread(self._spec_of, ref)
            number = spec.version
        for _ in range(ACQUIRE_ATTEMPTS):
            served = self._acquire_cached(number)
            if served is not None:
                return served
            spec = spec or await asyncio.to_thread(self._spec_of, number)
            await _wait(self._load(spec))
        raise ModelUnavailable(
            f"model version {number} was loaded but evicted again before it could answer: too many versions "
            f"in use at once for STRATA_INFERENCE_CACHE_SIZE={self.settings.inference_cache_size}")

    async def _acquire_production(self) -> Served:
        for _ in range(ACQUIRE_ATTEMPTS):
            served = self._acquire_pointer()
            if served is not None:
                return served
            # Nothing loaded yet (startup, or the first version just appeared): sync now and wait for it.
            await self._sync_production()
            served = self._acquire_pointer()
            if served is not None:
                return served
            with self._lock:
                view = self._view
                failure = self._failed.get(view.production) if view and view.production is not None else None
            if view is not None and view.production is None:
                if not view.any_versions:
                    raise NoModelYet(NO_MODEL_YET)
                raise NoProductionVersion("no model version is in production yet: promote one, or pass ?version=N")
            if view is not None and (view.problem or failure):
                raise ModelUnavailable(
                    f"the production model version {view.production} cannot be served: {view.problem or failure[1]}")
        raise ModelUnavailable("the production model is not loaded yet; try again shortly")

    def _acquire_pointer(self) -> Served | None:
        with self._lock:
            served = self._production
            if served is None or served.closed:
                return None
            served.users += 1
            return served

    def _acquire_cached(self, version: int) -> Served | None:
        with self._lock:
            served = self._cache.get(version)
            if served is None or served.closed:
                return None
            self._cache.move_to_end(version)
            served.users += 1
            return served

    def _release(self, served: Served) -> None:
        with self._lock:
            served.users -= 1
            close = served.retired and served.users == 0 and not served.closed
            if close:
                served.closed = True
        if close:
            served.batcher.close(wait=False)

    # --- loading -----------------------------------------------------------------------------
    def _load(self, spec: VersionSpec) -> Future:
        """A future of the loaded version: done at once when cached, shared while loading."""
        future: Future = Future()
        with self._lock:
            if spec.version in self._cache and not self._cache[spec.version].closed:
                self._cache.move_to_end(spec.version)
                future.set_result(self._cache[spec.version])
                return future
            if spec.version in self._loading:
                return self._loading[spec.version]
            failed = self._failed.get(spec.version)
            if failed and time.monotonic() - failed[0] < self._retry_failed_after_s:
                future.set_exception(ModelLoadError(failed[1]))
                return future
            if self._stopped:
                future.set_exception(ModelUnavailable("the inference service is shutting down"))
                return future
            future = self._loader.submit(self._load_now, spec)
            self._loading[spec.version] = future
            future.add_done_callback(lambda f, v=spec.version: f.cancelled() and self._forget_loading(v, f))
        return future

    def _forget_loading(self, version: int, future: Future) -> None:
        with self._lock:
            if self._loading.get(version) is future:
                del self._loading[version]

    def _load_now(self, spec: VersionSpec) -> Served:
        """In a loader thread: download, load, warm up; then insert into the cache."""
        try:
            predictor = Predictor.load(spec, self._store, self.settings.cache_dir, self.settings.inference_device)
        except Exception as err:
            message = str(err) if isinstance(err, ModelLoadError) else f"model version {spec.version}: {err}"
            log.error("cannot load %s", message)
            with self._lock:
                self._loading.pop(spec.version, None)
                self._failed[spec.version] = (time.monotonic(), message)
            raise ModelLoadError(message) from err
        batcher = DynamicBatcher(predictor.predict_batch, self.settings.inference_max_batch,
                                 self.settings.inference_max_wait_ms, on_batch=self._on_batch,
                                 name=f"strata-batcher-v{spec.version}")
        served = Served(predictor, batcher)
        with self._lock:
            self._loading.pop(spec.version, None)
            self._failed.pop(spec.version, None)
            if self._stopped:
                closing = [served] if self._retire_locked(served) else []
            else:
                self._cache[spec.version] = served
                closing = self._evict_locked(keep=served)
        for s in closing:
            s.batcher.close(wait=False)
        return served

    def _evict_locked(self, keep: Served | None = None) -> list[Served]:
        """Drop least recently used versions past the cache size, never production nor ``keep`` (a
        version just loaded for a request: so one more than the cache size may stay loaded for a
        while). Returns those to close now; the others close when their last request ends."""
        closing = []
        while len(self._cache) > self.settings.inference_cache_size:
            victim = next((v for v, s in self._cache.items() if s is not self._production and s is not keep), None)
            if victim is None:
                break
            served = self._cache.pop(victim)
            log.info("unloading model version %s (cache size %s)", victim, self.settings.inference_cache_size)
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

    # --- the production pointer ------------------------------------------------------------------
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

    async def _sync_production(self) -> None:
        """Read the alias; when it moved, load the new version (off the loop), then swap."""
        async with self._sync_lock:
            view = await asyncio.to_thread(self._read_registry)
            with self._lock:
                self._view, self._registry_error = view, None
                if view.production is None:
                    self._production = None  # the alias is gone: nothing to serve by default
                    return
                if self._production is not None and self._production.version == view.production:
                    return
            if view.spec is None:
                return
            try:
                served = await _wait(self._load(view.spec))
            except ModelUnavailable:
                return  # recorded in _failed; ready() and requests report it; retried later
            with self._lock:
                if served.closed:
                    return  # evicted meanwhile (tiny cache): the next sync loads it again
                previous, self._production = self._production, served
                if served.version in self._cache:
                    self._cache.move_to_end(served.version)
                closing = self._evict_locked()
            for s in closing:
                s.batcher.close(wait=False)
            log.info("production model: version %s now serves (was %s)", served.version,
                     previous.version if previous else "none")

    def _read_registry(self) -> RegistryView:
        with self._sessions() as session:
            version = production_version(session)
            if version is None:
                any_versions = session.scalar(select(ModelVersion.version).limit(1)) is not None
                return RegistryView(None, any_versions)
            row = get_version(session, version)
            try:
                return RegistryView(version, True, VersionSpec.from_row(row))
            except ModelLoadError as err:
                return RegistryView(version, True, None, str(err))

    def _spec_of(self, ref: str | int) -> VersionSpec:
        with self._sessions() as session:
            return VersionSpec.from_row(resolve_version(session, ref))


def _registry_problem(err: Exception) -> str:
    return f"cannot read the production alias: {type(err).__name__}: {err or 'timed out'}"[:500]


def _version_number(ref: str | int) -> int | None:
    if isinstance(ref, int):
        return ref
    return int(ref) if ref.isdigit() else None


async def _wait(future: Future) -> Served:
    """Await a shared load. Shielded: a cancelled request must not cancel the load that other
    requests (and the production watcher) are waiting for too."""
    return await asyncio.shield(asyncio.wrap_future(future))
