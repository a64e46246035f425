"""Where measuring jobs run, behind one interface (``Executor.run(jobs)``): here or on Ray.

A job is items ``[lo, hi)`` of the work that runs on a worker's state with the very function
the local path uses, so its arrays do not depend on where it ran. Two kinds of job, each
beside the code it runs (this module knows jobs only as ``Job``, so it imports neither
``measure`` nor ``sample``):

- ``ChunkJob`` (in ``pipeline/measure.py``): a chunk of a screening (the measurement
  cache's unit: ``measure``'s ``chunk`` vectors, starting at multiples of ``chunk``),
  measured by ``measure.chunk_arrays`` on a ``ScreenState``: an ``EditSetup`` and the
  screening's hooks.
- ``FaceJob`` (in ``pipeline/sample.py``): a batch of the faces a direction fit samples,
  measured by ``sample.face_batch`` on a ``FaceSetup``: the models only (there are no
  directions yet).

Two executors: ``LocalExecutor`` runs the jobs in this process, on the state built here
(what ``measure`` and ``sample_and_score`` use when the context holds no executor);
``RayExecutor`` (``execution=ray``) on a pool of stateful Ray actors, each of which builds
its state ONCE from a picklable ``build`` callable; the driver's directions travel inside a
screening's, so every worker edits along the very directions the driver resolved. Either
way the command's process alone reads and writes the cache and talks to MLflow; chunks
already cached are never sent out.

Faults on Ray: when an actor dies (its process killed, its node lost), the chunks it held go
back to the queue and are measured by the others; a replacement actor is started while
``restarts`` allow. An error raised by the measuring code itself is re-raised on the driver.

Ray is imported lazily (``pip install -e '.[scale]'``): importing ``ohlora_eval`` never
needs it. Like every ``pipeline`` module this knows nothing of MLflow, Hydra or OmegaConf;
``apps/execution.py`` turns ``cfg.execution`` into a ``RayExecutor``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from ohlora_eval.errors import ConfigError, UserError

# A measured job as it comes back: (lo, hi, arrays, worker name).
Done = tuple[int, int, dict[str, np.ndarray], str]
# What a worker builds once; its jobs' ``run`` gets it (measure.ScreenState, sample.FaceSetup).
WorkerBuild = Callable[[], Any]


class Job(Protocol):
    """What an executor runs: items ``[lo, hi)`` of the work, on a worker's state; its
    arrays hold ``seconds`` (its compute time) beside what it measured."""

    @property
    def lo(self) -> int: ...

    @property
    def hi(self) -> int: ...

    def run(self, state: Any) -> dict[str, np.ndarray]: ...


@dataclass
class WorkerStats:
    """What each worker did (for the progress bar, the bench and docs/scaling.md)."""

    chunks: dict[str, int] = field(default_factory=dict)  # jobs (chunks, face batches) done
    seconds: dict[str, float] = field(default_factory=dict)  # compute seconds per worker
    retried: int = 0  # chunks sent again after their worker died
    replaced: int = 0  # workers started to replace dead ones

    def add(self, worker: str, got: Mapping[str, np.ndarray]) -> None:
        """One job done by ``worker``."""
        self.chunks[worker] = self.chunks.get(worker, 0) + 1
        self.seconds[worker] = self.seconds.get(worker, 0.0) + float(got["seconds"])

    def line(self, unit: str = "chunks") -> str:
        """e.g. ``chunks per worker w0:6 w1:6, 1 retried`` (``unit``: what the jobs are)."""
        done = " ".join(f"{w}:{n}" for w, n in sorted(self.chunks.items()))
        extra = f", {self.retried} retried" if self.retried else ""
        return f"{unit} per worker {done}{extra}"


class Executor(Protocol):
    """Runs jobs: ``run`` yields each job's ``(lo, hi, arrays, worker name)`` in the order
    they finish, taking the jobs one at a time as it has room (``jobs`` may be a generator:
    those waiting are never all in memory); ``stats`` says what each worker did."""

    stats: WorkerStats

    def run(self, jobs: Iterable[Job]) -> Iterator[Done]: ...


class LocalExecutor:
    """This process: each job run on ``state`` (built here), in order, the next one taken
    from ``jobs`` only when the last is done."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.stats = WorkerStats()

    def run(self, jobs: Iterable[Job]) -> Iterator[Done]:
        for job in jobs:
            got = job.run(self.state)
            self.stats.add("here", got)
            yield job.lo, job.hi, got, "here"


class ChunkWorker:
    """The actor: builds its state once, then runs job after job on it."""

    def __init__(self, build: WorkerBuild, name: str, threads: int = 0) -> None:
        if threads > 0:
            torch.set_num_threads(threads)
        self.name = name
        self.state = build()

    def ready(self) -> tuple[str, int, str]:
        """(name, process id, Ray node id): answered once the models are built."""
        import ray

        return self.name, os.getpid(), ray.get_runtime_context().get_node_id()

    def measure(self, job: Job) -> Done:
        return job.lo, job.hi, job.run(self.state), self.name


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "execution=ray needs Ray: pip install -e '.[scale]' (or pip install 'ray[default]')"
        ) from None
    return ray


class RayExecutor:
    """A pool of ``workers`` ChunkWorker actors; ``run(jobs)`` yields each measured job.

    ``address``: None starts a local Ray (stopped again on exit), ``"auto"`` or
    ``"ray://host:port"`` joins a running cluster. A Ray already initialised in this
    process is used as it is (and left running).
    """

    def __init__(
        self,
        build: WorkerBuild,
        *,
        address: str | None = None,
        workers: int = 2,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        restarts: int = 4,
        in_flight: int = 2,
        start_timeout_s: float = 600.0,
    ) -> None:
        """Eight parameters, one of two such in the package: each keyword is one
        ``execution.*`` config key (conf/execution/ray.yaml), passed by name from the config."""
        self.build = build
        self.address = address
        self.workers = int(workers)
        self.cpus = float(cpus_per_worker)
        self.gpus = float(gpus_per_worker)
        self.restarts = int(restarts)
        self.in_flight = max(1, int(in_flight))
        self.start_timeout_s = float(start_timeout_s)
        self._have = "unknown resources"
        self.stats = WorkerStats()
        self._started_ray = False
        self._actors: dict[str, Any] = {}
        self._count = 0
        self.startup_seconds = 0.0
        self.places: dict[str, tuple[int, str]] = {}  # worker -> (pid, Ray node id) at start

    # -- life cycle -------------------------------------------------------------------
    def __enter__(self) -> RayExecutor:
        return self

    def start(self) -> None:
        """Join or start Ray and build the pool (``run`` does it when it has work: a run
        whose chunks are all cached starts no Ray at all)."""
        if self._actors:
            return
        ray = _ray()
        t0 = time.perf_counter()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if self.address is None:
                need = max(self.workers * self.cpus, 1.0)
                kwargs["num_cpus"] = max(int(np.ceil(need)), os.cpu_count() or 1)
            try:
                ray.init(address=self.address, **kwargs)
            except ConnectionError as exc:
                raise UserError(_join_hint(self.address, exc)) from None
            except Exception as exc:  # noqa: BLE001 - Ray could not start here at all
                raise UserError(
                    f"cannot start Ray ({type(exc).__name__}: {_cause(exc)}); check RAY_TMPDIR"
                    " and the disk (Ray writes its session files there), or use"
                    " execution=local"
                ) from None
            self._started_ray = True
        self._check_resources(ray)
        self._remote = ray.remote(ChunkWorker)
        self._build_ref = ray.put(self.build)
        for _ in range(self.workers):
            self._spawn()
        try:
            ready = [a.ready.remote() for a in self._actors.values()]
            for name, pid, node in ray.get(ready, timeout=self.start_timeout_s):
                self.places[name] = (pid, node)
        except ray.exceptions.GetTimeoutError:
            self.__exit__(None, None, None)
            raise UserError(
                f"{self.workers} Ray worker(s) did not start in {self.start_timeout_s:.0f} s"
                f" (each asks {self.cpus:g} CPU, {self.gpus:g} GPU; the cluster has"
                f" {self._have}); lower execution.workers or the per-worker resources, or"
                " raise execution.start_timeout_s"
            ) from None
        except Exception as exc:
            self.__exit__(None, None, None)
            raise RuntimeError(f"Ray workers could not build the models: {_cause(exc)}") from exc
        self.startup_seconds = time.perf_counter() - t0

    def _check_resources(self, ray: Any) -> None:
        """Refuse a pool the cluster can never hold (Ray would wait for it forever, printing
        "No available node types"): more GPUs or CPUs than all its nodes have together."""
        have = ray.cluster_resources()
        self._have = f"{have.get('CPU', 0):g} CPU, {have.get('GPU', 0):g} GPU"
        for key, each, setting in (
            ("GPU", self.gpus, "gpus_per_worker"),
            ("CPU", self.cpus, "cpus_per_worker"),
        ):
            need = each * self.workers
            if need > have.get(key, 0) + 1e-9:
                self.__exit__(None, None, None)
                raise UserError(
                    f"execution.{setting}={each:g} x execution.workers={self.workers} needs"
                    f" {need:g} {key}; the Ray cluster has {have.get(key, 0):g} (it would wait"
                    f" forever); lower execution.{setting} or execution.workers"
                )

    def __exit__(self, *exc: object) -> None:
        if not self._actors and not self._started_ray:
            return
        ray = _ray()
        for actor in self._actors.values():
            ray.kill(actor, no_restart=True)
        self._actors.clear()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def _spawn(self) -> str:
        name = f"w{self._count}"
        self._count += 1
        options: dict[str, Any] = {"num_cpus": self.cpus, "max_restarts": 0}
        if self.gpus > 0:
            options["num_gpus"] = self.gpus
        threads = int(self.cpus) if self.cpus >= 1 else 1
        self._actors[name] = self._remote.options(**options).remote(self._build_ref, name, threads)
        return name

    # -- work -------------------------------------------------------------------------
    def run(self, jobs: Iterable[Job]) -> Iterator[Done]:
        """Each job's ``(lo, hi, arrays, worker)``, in the order they finish. A job whose
        worker died is sent to another; the run fails only when no worker is left. ``jobs``
        is taken one at a time as workers have room (it may be a generator: the jobs
        waiting are never all in memory); with no job at all, Ray is not started."""
        source = iter(jobs)
        first = next(source, None)
        if first is None:
            return
        queue: deque[Job] = deque([first])  # taken before the source: retries

        def take() -> Job | None:
            return queue.popleft() if queue else next(source, None)

        ray = _ray()
        from ray.exceptions import ActorUnavailableError, RayActorError, WorkerCrashedError

        lost = (RayActorError, ActorUnavailableError, WorkerCrashedError)
        self.start()
        flying: dict[Any, tuple[Job, str]] = {}
        load = dict.fromkeys(self._actors, 0)
        last_death = ""
        more = True
        while more or queue or flying:
            for depth in range(1, self.in_flight + 1):  # one job each first, then the next
                for name in list(self._actors):
                    if (more or queue) and load.get(name, 0) < depth:
                        job = take()
                        if job is None:
                            more = False
                            continue
                        flying[self._actors[name].measure.remote(job)] = (job, name)
                        load[name] = load.get(name, 0) + 1
            if not flying and not (more or queue):
                break
            if not flying:
                raise RuntimeError(
                    "every Ray worker died and no restarts are left"
                    + (f" (last: {last_death})" if last_death else "")
                )
            (ref,), _ = ray.wait(list(flying), num_returns=1)
            job, name = flying.pop(ref)
            load[name] = load.get(name, 1) - 1
            try:
                lo, hi, got, worker = ray.get(ref)
            except lost as exc:
                last_death = _cause(exc)
                queue.appendleft(job)
                self.stats.retried += 1
                if name in self._actors:  # first of its failed chunks: replace it
                    ray.kill(self._actors.pop(name), no_restart=True)
                    load.pop(name, None)
                    if self.stats.replaced < self.restarts:
                        self.stats.replaced += 1
                        load[self._spawn()] = 0
                continue
            except ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None
            self.stats.add(worker, got)
            yield lo, hi, got, worker


def _join_hint(address: str | None, exc: BaseException) -> str:
    """One line for a cluster that cannot be joined: what failed and what to try."""
    head = f"execution.address={address}: cannot join Ray ({_cause(exc)})"
    if str(address).startswith("ray://"):
        return (
            f"{head}; is its client server up (ray start --head --ray-client-server-port=PORT)?"
            " Clusters of Ray >= 2.59 want token authentication: set RAY_AUTH_MODE=token here"
            " (the token is read from RAY_AUTH_TOKEN or ~/.ray/auth_token, as on the cluster)"
        )
    return (
        f"{head}; start one (ray start --head), give its address (execution.address=host:port),"
        " or leave execution.address=null for a Ray of this command only"
    )


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] + ("..." if len(text) > 500 else "")
