"""Batch coding on a Ray cluster: ``sqgan encode|decode IN -o OUT --engine ray``, and the same as
functions over a Ray Dataset (:func:`encode_dataset`, :func:`decode_dataset`).

Ray Data's ``map_batches`` with a stateful worker class: each worker creates its codec once (on
CPU, or on a GPU with ``device="cuda"``) and keeps it for every batch it gets. Ray restarts a
worker that dies and runs its batch again (Ray Data's actor-pool defaults: ``max_restarts=-1``,
``max_task_retries=-1``, at-least-once).

Files. The driver plans the jobs exactly as the local engine does, cuts them into the same
batches (``--batch-size``), and triages every output before dispatch (write / skip with
``--skip-existing`` / fail, e.g. it exists without ``--overwrite``). Workers run the local
engine's own ``encode_batch``/``decode_batch`` on those batches with a recording reporter;
the driver replays each batch's messages and ``--json`` rows in input order. So outputs are the
same bytes (the same images go through the network together), rows and exit codes are the same,
and a batch run again after a worker died simply rewrites its own outputs (atomically, like
every output). Inputs and outputs must be at the same paths on every node: one machine, or a
shared filesystem.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from .errors import SqganError
from .jobs import STDIO, CodecHolder, Job, Plan, Reporter, batches, decode_batch, encode_batch, triage

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

INSTALL_HINT = "--engine ray needs Ray: pip install 'sqgan-codec[ray]'"


class RayUnavailableError(SqganError):
    """Ray is not installed (it is an optional extra)."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailableError(INSTALL_HINT) from None
    return ray


def connect(address: str | None = None) -> Any:
    """Join the cluster at ``address`` (``ray://`` or ``HOST:PORT``; ``auto``: the one this
    machine belongs to), or start a local one when ``address`` is None."""
    ray = _ray()
    if not ray.is_initialized():
        local = {"include_dashboard": False} if address is None else {}
        ray.init(address=address, log_to_driver=False, logging_level="ERROR", **local)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows come back in input order
    ctx.enable_progress_bars = False
    # Ray Data's execution notes are not this command's output (the job's own messages are)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray


class Recorder:
    """A :class:`~sqgan_codec.jobs.Reporter` stand-in on a worker: it records what the batch
    reports (plain data, replayed by the driver)."""

    def __init__(self) -> None:
        self.events: list[list[Any]] = []

    def warn(self, message: str) -> None:
        self.events.append(["warn", message])

    def error(self, path: str, message: str, other: str | None = None) -> None:
        self.events.append(["error", path, message, other])

    def record(self, stats: dict[str, Any]) -> None:
        self.events.append(["record", stats])

    def advance(self) -> None:
        self.events.append(["advance"])


def replay(events: list[list[Any]], rep: Reporter) -> None:
    for kind, *args in events:
        getattr(rep, kind)(*args)


class FileWorker:
    """One Ray worker: a codec, and the local engine's batch function over file jobs."""

    def __init__(self, verb: str, device: str, mirror: bool, kwargs: dict[str, Any],
                 max_pixels: int | None = None, model: str | None = None, segmenter: str = "bundled") -> None:
        from .codec import Codec

        self.batch_fn = encode_batch if verb == "encode" else decode_batch
        self.codec = CodecHolder(lambda name: Codec(name or model, device=device, segmenter=segmenter), max_pixels)
        self.mirror, self.kwargs = mirror, kwargs
        self.codec.get()  # a worker that cannot load its model fails at start, not per batch

    def __call__(self, rows: dict[str, Any]) -> dict[str, list[str]]:
        out = []
        for jobs_json, verdicts_json in zip(rows["jobs"], rows["verdicts"]):
            jobs = [Job(src, dst) for src, dst in json.loads(jobs_json)]
            verdicts = [tuple(v) for v in json.loads(verdicts_json)]
            rec = Recorder()
            self.batch_fn(jobs, self.codec, rec, self.mirror, verdicts=verdicts, **self.kwargs)
            out.append(json.dumps(rec.events))
        return {"events": out}


def _workers(ray: Any, workers: int | None, device: str) -> int:
    if workers:
        return workers
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU" if device == "cuda" else "CPU", 1)))


def run_jobs(verb: str, plan: Plan, rep: Reporter, *, batch_size: int, device: str = "cpu",
             address: str | None = None, workers: int | None = None, overwrite: bool = False,
             skip_existing: bool = False, max_pixels: int | None = None, model: str | None = None,
             segmenter: str = "bundled", **kwargs: Any) -> None:
    """Run a planned ``encode``/``decode`` on Ray, reporting into ``rep`` as the local loop does.
    ``model``/``segmenter``: the codec's (None: the registry's default model).
    ``kwargs`` are the batch function's options (``options=`` for encode; ``layers=``,
    ``ssm_out=``, ``output=`` for decode)."""
    if any(STDIO in (j.src, j.dst) for j in plan.jobs):
        raise SqganError("--engine ray reads and writes files, not - (stdin/stdout)")
    groups = list(batches(plan.jobs, batch_size))
    if not groups:
        return
    ray = connect(address)
    if device == "auto":
        device = "cuda" if ray.cluster_resources().get("GPU") else "cpu"
    items = [{"jobs": json.dumps([[j.src, j.dst] for j in group]),
              "verdicts": json.dumps([triage(j, overwrite, skip_existing) for j in group])}
             for group in groups]
    # one block per batch: a worker's task is one batch, and a retry redoes exactly that batch
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    done = ds.map_batches(
        FileWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=_workers(ray, workers, device)),
        num_cpus=0 if device == "cuda" else 1, num_gpus=1 if device == "cuda" else 0,
        fn_constructor_kwargs={"verb": verb, "device": device, "mirror": plan.mirror, "max_pixels": max_pixels,
                               "model": model, "segmenter": segmenter,
                               "kwargs": {**kwargs, "overwrite": overwrite}})
    try:
        for row in done.iter_rows():
            replay(json.loads(row["events"]), rep)
    except Exception as e:  # a worker's fatal error (no weights, ...): the error itself
        raise _unwrap(e) from None


def _unwrap(e: BaseException) -> BaseException:
    seen = e
    while seen is not None:
        if isinstance(seen, SqganError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return SqganError(f"Ray job failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")


# ------------------------------------------------------------------------ Ray Dataset API

class _ArrayEncoder:
    def __init__(self, device: str, column: str, options: dict[str, Any]) -> None:
        from .codec import Codec

        self.codec, self.column, self.options = Codec(device=device), column, options

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        decisions = self.codec.decide_many(list(rows[self.column]), **self.options)
        return {**rows, "sqg": [d.data for d in decisions], "mode": [d.mode for d in decisions],
                "bytes": [len(d.data) for d in decisions]}


class _ArrayDecoder:
    def __init__(self, device: str, column: str, layers: str) -> None:
        from .codec import Codec

        self.codec, self.column, self.layers = Codec(device=device), column, layers

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        images = self.codec.decode_many([bytes(b) for b in rows[self.column]], layers=self.layers)
        return {**rows, "image": [np.asarray(im.convert("RGB")) for im in images]}


def encode_dataset(ds: "ray.data.Dataset", *, column: str = "image", device: str = "cpu",
                   batch_size: int = 4, concurrency: int | None = None, **options: Any) -> "ray.data.Dataset":
    """Rows with an RGB image (H×W×3 uint8 array) in ``column`` → the same rows plus ``sqg``
    (the stream's bytes), ``mode`` (what the encoder sent) and ``bytes``. ``options`` are
    :meth:`Codec.encode`'s (``bpp=``, ``max_bytes=``, ``tune=``, ...)."""
    ray = connect_if_needed()
    return ds.map_batches(_ArrayEncoder, batch_size=batch_size,
                          compute=ray.data.ActorPoolStrategy(size=_workers(ray, concurrency, device)),
                          num_cpus=0 if device == "cuda" else 1, num_gpus=1 if device == "cuda" else 0,
                          fn_constructor_kwargs={"device": device, "column": column, "options": options})


def decode_dataset(ds: "ray.data.Dataset", *, column: str = "sqg", device: str = "cpu", layers: str = "all",
                   batch_size: int = 4, concurrency: int | None = None) -> "ray.data.Dataset":
    """Rows with ``.sqg`` bytes in ``column`` → the same rows plus ``image`` (H×W×3 uint8)."""
    ray = connect_if_needed()
    return ds.map_batches(_ArrayDecoder, batch_size=batch_size,
                          compute=ray.data.ActorPoolStrategy(size=_workers(ray, concurrency, device)),
                          num_cpus=0 if device == "cuda" else 1, num_gpus=1 if device == "cuda" else 0,
                          fn_constructor_kwargs={"device": device, "column": column, "layers": layers})


def connect_if_needed() -> Any:
    ray = _ray()
    return ray if ray.is_initialized() else connect(None)
