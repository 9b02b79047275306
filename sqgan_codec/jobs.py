"""File jobs: what ``sqgan encode|decode|segment`` do with each input, engine-independent.

Planning maps inputs (files, folders, ``-``) to outputs; a :class:`Reporter` prints the progress
bar, warnings, errors and ``--json`` rows; ``encode_batch``/``decode_batch`` load, code and
atomically write one batch of jobs, reporting each file's outcome. The local engine (the CLI's
loop) and the Ray engine (:mod:`sqgan_codec.ray_engine`, whose workers report into a recording
reporter that the driver replays) run the same functions, so outputs, rows and exit codes agree.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import click

from .errors import OutputExistsError, SqganError

if TYPE_CHECKING:  # pragma: no cover
    from .codec import Codec
    from .options import EncodeOptions

PROG = "sqgan"
SQG_SUFFIX = ".sqg"
DECODED_SUFFIX = ".png"
STDIO = "-"


# ----------------------------------------------------------------------------- planning


@dataclass
class Job:
    src: str   # a path, or "-" for stdin
    dst: str   # a path, or "-" for stdout


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, message)
    notes: list[str] = field(default_factory=list)                 # warnings to print
    mirror: bool = False                                          # output is a folder


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _scan(folder: str, recursive: bool, accept: Callable[[str], bool],
          skip_dir: str | None) -> tuple[list[str], bool]:
    """Files under ``folder`` that ``accept`` likes (sorted; hidden entries skipped);
    and whether subfolders were left unvisited (for a hint)."""
    from .imageio import same_file

    found: list[str] = []
    skipped_subdirs = False
    for root, dirs, files in os.walk(folder, onerror=None):
        keep = []
        for d in sorted(dirs):
            full = os.path.join(root, d)
            if _is_hidden(d) or (skip_dir is not None and same_file(full, skip_dir)):
                continue
            keep.append(d)
        if not recursive:
            skipped_subdirs = skipped_subdirs or bool(keep)
            keep = []
        dirs[:] = keep
        found.extend(os.path.join(root, f) for f in sorted(files)
                     if not _is_hidden(f) and accept(f))
    return found, skipped_subdirs


def plan_jobs(inputs: Sequence[str], output: str, *, recursive: bool,
               accept: Callable[[str], bool], out_suffix: str, what: str) -> Plan:
    """Map inputs to outputs.

    One input that is a file (or ``-``): ``output`` is the output file (``-`` =
    stdout), or, when it is an existing folder, the folder to put it in. Otherwise
    ``output`` is a folder (created if needed) mirroring each input folder's tree;
    files named directly go to its top level. Outputs get ``out_suffix``."""
    plan = Plan()
    single = len(inputs) == 1 and (inputs[0] == STDIO or not os.path.isdir(inputs[0]))
    out_is_dir = output != STDIO and (os.path.isdir(output) or output.endswith(("/", os.sep)))

    if single and not out_is_dir:
        plan.jobs.append(Job(inputs[0], output))
        return plan

    plan.mirror = True
    if output == STDIO:
        raise click.UsageError(
            "with several inputs or a folder, -o must be a folder, not - (stdout)")
    if STDIO in inputs:
        if len(inputs) > 1:
            raise click.UsageError("- (stdin) can only be used as the only input")
        raise click.UsageError("reading stdin needs an output file name (or - for stdout), "
                               f"not a folder: {output}")
    if os.path.exists(output) and not os.path.isdir(output):
        raise click.UsageError(
            f"{output} is an existing file; with several inputs or a folder, -o must be a folder")

    def out_name(name: str) -> str:
        return str(Path(name).with_suffix(out_suffix)) if Path(name).suffix else name + out_suffix

    seen: dict[str, str] = {}

    def add(src: str, rel: str) -> None:
        dst = os.path.join(output, out_name(rel))
        key = os.path.normcase(os.path.realpath(dst))
        if key in seen:
            plan.failures.append(
                (src, f"its output {dst} is also the output of {seen[key]}; skipped"))
            return
        seen[key] = src
        plan.jobs.append(Job(src, dst))

    for inp in inputs:
        if os.path.isdir(inp):
            files, skipped = _scan(inp, recursive, accept, output)
            if not files:
                hint = " (use --recursive to look in subfolders)" if skipped else ""
                plan.notes.append(f"{inp}: no {what} found{hint}")
            for f in files:
                add(f, os.path.relpath(f, inp))
        else:
            # Named explicitly: taken whatever its suffix; a missing file fails later.
            add(inp, os.path.basename(inp))
    return plan


# ----------------------------------------------------------------------------- reporting


class Reporter:
    """Progress bar and messages on stderr, JSON lines on stdout."""

    def __init__(self, total: int, label: str, *, quiet: bool, as_json: bool) -> None:
        self.total, self.label, self.quiet, self.as_json = total, label, quiet, as_json
        self.done = 0
        self.failed = 0
        self.skipped = 0
        try:
            tty = sys.stderr.isatty()
        except (AttributeError, ValueError):
            tty = False
        self.bar = tty and not quiet and total > 0 and os.environ.get("TERM") != "dumb"
        self._drawn = False

    # -- bar
    def _clear(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._drawn = False

    def _draw(self) -> None:
        if not self.bar:
            return
        width = 30
        filled = width * self.done // max(self.total, 1)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{self.done}/{self.total}")
        sys.stderr.flush()
        self._drawn = True

    def start(self) -> None:
        self._draw()

    def advance(self) -> None:
        self.done += 1
        self._draw()

    def close(self) -> None:
        self._clear()

    # -- messages
    def error(self, path: str, message: str, other: str | None = None) -> None:
        self.failed += 1
        self._clear()
        click.echo(f"{PROG}: error: {with_path(path, message, other)}", err=True)
        self._draw()

    def warn(self, message: str) -> None:
        if self.quiet:
            return
        self._clear()
        click.echo(f"{PROG}: warning: {message}", err=True)
        self._draw()

    def record(self, stats: dict[str, Any]) -> None:
        self.skipped += bool(stats.get("skipped"))
        if self.as_json:
            self._clear()
            click.echo(json.dumps(stats))
            self._draw()


def with_path(path: str, message: str, other: str | None = None) -> str:
    """``PATH: message``, unless the message already starts with ``path`` or ``other``
    (e.g. the output path it is about)."""
    shown = "<stdin>" if path == STDIO else path
    for p in (path, shown, other):
        if p and p != STDIO and message.startswith(f"{p}: "):
            return message
    return f"{shown}: {message}"


def message_of(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    if isinstance(e, OutputExistsError):
        msg += " (use --overwrite to replace it)"
    return msg


def fail_json(rep: Reporter, job: Job, message: str) -> None:
    rep.record({"input": job.src, "output": job.dst, "ok": False, "error": message})


# ----------------------------------------------------------------------------- I/O helpers


def read_input(src: str) -> bytes:
    if src == STDIO:
        stdin = sys.stdin
        return getattr(stdin, "buffer", stdin).read()
    try:
        with open(src, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise JobError("no such file") from None
    except IsADirectoryError:
        raise JobError("is a folder") from None
    except PermissionError:
        raise JobError("permission denied") from None
    except OSError as e:
        raise JobError(f"cannot read: {e.strerror or e}") from None


class JobError(Exception):
    """A per-file failure detected by the CLI itself (not a SqganError)."""


def precheck_output(job: Job, overwrite: bool) -> str | None:
    """Why this job's output cannot be written, before doing any work on it."""
    from .imageio import same_file

    if job.dst == STDIO:
        return None
    if job.src != STDIO and same_file(job.src, job.dst):
        return f"{job.dst}: is the input file; refusing to overwrite it"
    if os.path.isdir(job.dst):
        return f"{job.dst}: is a folder"
    if not overwrite and os.path.lexists(job.dst):
        return message_of(OutputExistsError(f"{job.dst}: already exists; not overwriting it"))
    return None


WRITE, SKIP, FAIL = "write", "skip", "fail"
Verdict = tuple  # (WRITE | SKIP | FAIL, message or None): plain data, so it travels to workers


def triage(job: Job, overwrite: bool, skip_existing: bool = False) -> Verdict:
    """What to do with a job's output, decided before any work on it: write it, skip it (it
    exists and ``--skip-existing`` was given: a re-run after an interruption), or fail."""
    problem = precheck_output(job, overwrite)
    if (problem is not None and skip_existing and job.dst != STDIO and os.path.isfile(job.dst)
            and "already exists" in problem):
        return (SKIP, None)
    return (FAIL, problem) if problem is not None else (WRITE, None)


def to_write(batch: list[Job], rep: "Reporter", overwrite: bool, skip_existing: bool,
             verdicts: Sequence[Verdict] | None) -> Iterable[Job]:
    """The jobs of ``batch`` whose output is to be written (triaged here, or by the caller as
    ``verdicts``); the others are reported as skipped or failed, in order."""
    for job, (action, problem) in zip(batch, verdicts or [triage(j, overwrite, skip_existing) for j in batch]):
        if action == WRITE:
            yield job
        elif action == SKIP:
            rep.record({"input": job.src, "output": job.dst, "ok": True, "skipped": True})
            rep.advance()
        else:
            job_failed(rep, job, problem or "failed")


def prepare_folder(job: Job, mirror: bool) -> None:
    if not mirror or job.dst == STDIO:
        return
    parent = os.path.dirname(job.dst)
    if parent:
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise JobError(f"{job.dst}: cannot create folder {parent}: {e.strerror or e}") from None


def write_stdout(data: bytes) -> None:
    out = getattr(sys.stdout, "buffer", sys.stdout)
    out.write(data)
    out.flush()


def batches(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def start_report(plan: Plan, label: str, quiet: bool, as_json: bool) -> Reporter:
    rep = Reporter(len(plan.jobs), label, quiet=quiet, as_json=as_json)
    for note in plan.notes:
        rep.warn(note)
    for path, message in plan.failures:
        rep.error(path, message)
        fail_json(rep, Job(path, ""), message)
    rep.start()
    return rep


class CodecHolder:
    """Creates codecs on first use (``make(model)``; model None: the run's own, e.g. ``--model``
    or the registry's default), so runs with nothing to do never load one; ``max_pixels`` (None:
    the package default) is their pixel limit, also for reading images."""

    def __init__(self, make: Callable[[str | None], "Codec"], max_pixels: int | None = None) -> None:
        self.make, self.max_pixels = make, max_pixels
        self._codecs: dict[str | None, Codec] = {}

    def get(self, model: str | None = None) -> "Codec":
        if model not in self._codecs:
            codec = self.make(model)
            if self.max_pixels:
                codec.max_pixels = self.max_pixels
            self._codecs[model] = codec
        return self._codecs[model]

    def for_stream(self, header: Any) -> "Codec":
        """The codec of the model a stream names: the run's own, or another installed model
        (streams of every model decode in one run). ModelMismatchError when none is installed."""
        own = self.get()
        entry = own.entry
        if (header.model_id, header.weights_hash) == (entry.id, entry.hash_prefix):
            return own
        from . import registry

        return self.get(registry.find_by_id(header.model_id, header.weights_hash).name)


def load_job(job: Job, rep: Reporter, max_pixels: int | None = None):
    from .imageio import MAX_PIXELS, load_image

    limit = max_pixels or MAX_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if job.src == STDIO:
            loaded = load_image(read_input(STDIO), name="<stdin>", max_pixels=limit)
        else:
            loaded = load_image(job.src, max_pixels=limit)
    for w in caught:
        rep.warn(str(w.message))
    return loaded


def load_ready(jobs: Iterable[Job], rep: Reporter, max_pixels: int | None = None
               ) -> list[tuple[Job, Any, float]]:
    """(job, loaded image, seconds spent loading) of the jobs whose image loads; the others
    are reported as failed."""
    ready = []
    for job in jobs:
        t0 = time.perf_counter()
        try:
            loaded = load_job(job, rep, max_pixels)
        except (SqganError, JobError) as e:
            job_failed(rep, job, message_of(e))
            continue
        ready.append((job, loaded, time.perf_counter() - t0))
    return ready


def encode_batch(batch: list[Job], codec: CodecHolder, rep: Reporter, mirror: bool, *,
                 options: "EncodeOptions", overwrite: bool, skip_existing: bool = False,
                 verdicts: Sequence[Verdict] | None = None) -> None:
    """Encode one batch of jobs: load, code together, write each output atomically, report.
    ``verdicts``: the outputs were already triaged by the caller (the Ray driver, before
    dispatch): those to write are replaced if present, so a retried batch rewrites its own."""
    from dataclasses import asdict

    from .imageio import write_atomic

    ready = load_ready(to_write(batch, rep, overwrite, skip_existing, verdicts), rep, codec.max_pixels)
    if not ready:
        return

    images = [loaded for _, loaded, _ in ready]
    c = codec.get()  # a failure here (missing weights, ...) is fatal, not per file
    kwargs = asdict(options)
    results = run_batch(lambda items: encode_warned(c, items, kwargs, rep), images)
    for (job, loaded, t_load), (decision, seconds) in zip(ready, results):
        if isinstance(decision, BaseException):
            job_failed(rep, job, message_of(decision))
            continue
        result = decision.data
        if decision.unfamiliar:
            rep.warn(with_path(job.src, "unlike what the model was trained on: the encoder leaned on "
                                         f"the coarse image ({decision.mode})"))
        try:
            prepare_folder(job, mirror)
            if job.dst == STDIO:
                write_stdout(result)
            else:
                write_atomic(job.dst, result, overwrite=overwrite or verdicts is not None,
                             input_path=None if job.src == STDIO else job.src)
        except (SqganError, JobError) as e:
            job_failed(rep, job, message_of(e))
            continue
        pixels = loaded.width * loaded.height
        rep.record({"input": job.src, "output": job.dst, "ok": True,
                    "width": loaded.width, "height": loaded.height, "bytes": len(result),
                    "bpp": round(8 * len(result) / pixels, 6),
                    "seconds": round(t_load + seconds, 4),
                    "mode": decision.mode, "patches": _patch_count(result, loaded.width, loaded.height),
                    "unfamiliar": decision.unfamiliar,
                    "confidence": None if decision.confidence is None else round(decision.confidence, 4)})
        rep.advance()


def _patch_count(data: bytes, width: int, height: int) -> int:
    """How many regions of interest or prioritised objects a stream sends as coarse-image
    patches (chunk P; 0 for a stream without, a packet stream among them)."""
    from . import bitstream, coarse, packets

    if packets.is_packet_stream(data):
        return 0
    chunk = bitstream.unpack(data).chunks.get(bitstream.CHUNK_PATCHES)
    return 0 if chunk is None else len(coarse.parse_patches(chunk, width, height))


def quiet_packet_loss(decode, items: list) -> list:
    """``decode(items)`` with the codec's PacketLossWarning silenced: the CLI reports it per file."""
    from .errors import PacketLossWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PacketLossWarning)
        return decode(items)


def encode_warned(codec: "Codec", items: list, kwargs: dict, rep: Reporter) -> list:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = codec.decide_many(items, **kwargs)
    for w in caught:
        rep.warn(str(w.message))
    return out


def run_batch(call: Callable[[list], list], items: list) -> list[tuple[Any, float]]:
    """``call(items)`` as one batch; if that raises an expected error, item by item so
    the failure is pinned on the file that caused it. Returns (result or exception,
    seconds) per item; time of a batch is shared equally."""
    t0 = time.perf_counter()
    try:
        out = call(items)
    except SqganError as e:
        if len(items) == 1:
            return [(e, time.perf_counter() - t0)]
        results: list[tuple[Any, float]] = []
        for item in items:
            t1 = time.perf_counter()
            try:
                results.append((call([item])[0], time.perf_counter() - t1))
            except SqganError as e1:
                results.append((e1, time.perf_counter() - t1))
        return results
    if len(out) != len(items):
        raise RuntimeError(f"codec returned {len(out)} results for {len(items)} inputs")
    share = (time.perf_counter() - t0) / len(items)
    return [(r, share) for r in out]


def job_failed(rep: Reporter, job: Job, message: str) -> None:
    rep.error(job.src, message, job.dst)
    fail_json(rep, job, message)
    rep.advance()


# ----------------------------------------------------------------------------- decode

def write_ssm(semantic_map, job: Job, mirror: bool, ssm_out: str, output: str, overwrite: bool) -> None:
    from PIL import Image

    from .errors import BitstreamError
    from .imageio import save_image_atomic

    if semantic_map is None:
        raise BitstreamError("--ssm-out: this stream sends a coarse image only, no semantic map")
    if mirror and job.dst != STDIO:
        dst = os.path.join(ssm_out, os.path.relpath(job.dst, output))
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    else:
        dst = ssm_out
    save_image_atomic(Image.fromarray(semantic_map, "L"), dst, overwrite=overwrite,
                      input_path=None if job.src == STDIO else job.src)


_TRUNCATED_BASE = "stream is truncated: only its base layer (semantic map) can be decoded"
_TRUNCATED_REFINE = "stream is truncated inside its refinement layer: decoded without it"


_TRUNCATED_COARSE = "stream is truncated: only its coarse image can be decoded"


def truncation_note(stream) -> str:
    from . import bitstream

    if bitstream.CHUNK_IMAGE in stream.chunks:
        return _TRUNCATED_REFINE
    if not any(k in stream.chunks for k in bitstream.SEMANTIC_CHUNKS):
        return _TRUNCATED_COARSE
    return _TRUNCATED_BASE


def check_stream(data: bytes):
    """Parse and verify a stream like the codec does (a stream cut after its coarse-image
    or semantic layer is still decodable); raise BitstreamError when nothing usable is left."""
    from . import bitstream, packets

    if packets.is_packet_stream(data):  # whatever arrived decodes; only a lost header fails
        header, plan = packets.read_header(data)
        return bitstream.Stream(header, {bitstream.CHUNK_SEMANTIC: b"",
                                         **({bitstream.CHUNK_IMAGE: b""} if plan["image"] else {})})
    stream = bitstream.unpack(data, allow_truncated=True)
    if not any(k in stream.chunks for k in bitstream.LAYER_CHUNKS):
        raise bitstream.TruncatedError("stream is truncated before its semantic-map layer")
    return stream


def decode_batch(batch: list[Job], codec: CodecHolder, rep: Reporter, mirror: bool, *,
                 layers: str, overwrite: bool, ssm_out: str | None = None, output: str = "",
                 skip_existing: bool = False, verdicts: Sequence[Verdict] | None = None,
                 allow_partial: bool = False) -> None:
    """Decode one batch of jobs (see :func:`encode_batch` for ``verdicts``). A truncated stream
    fails unless ``allow_partial`` (``--partial``): then its complete layers are decoded, with a
    warning."""
    from .imageio import encode_image, save_image_atomic

    ready = []  # (job, data, header, seconds spent reading)
    for job in to_write(batch, rep, overwrite, skip_existing, verdicts):
        t0 = time.perf_counter()
        try:
            data = read_input(job.src)
            stream = check_stream(data)  # cheap, torch-free: fail early
        except (SqganError, JobError) as e:
            job_failed(rep, job, message_of(e))
            continue
        if stream.truncated and layers == "all":
            if not allow_partial:
                job_failed(rep, job, f"{truncation_note(stream)}; --partial decodes it")
                continue
            rep.warn(with_path(job.src, truncation_note(stream)))
        header = stream.header
        ready.append((job, data, header, time.perf_counter() - t0))
    if not ready:
        return

    codec.get()  # a failure here (missing weights, ...) is fatal, not per file
    by_model: dict[int, list[int]] = {}  # each model's streams decode together
    owners: dict[int, Codec] = {}
    results: list[Any] = [None] * len(ready)
    for i, (job, _, header, _) in enumerate(ready):
        try:
            c = codec.for_stream(header)
        except SqganError as e:  # a stream of a model this installation lacks
            results[i] = (e, 0.0)
            continue
        owners[id(c)] = c
        by_model.setdefault(id(c), []).append(i)
    for key, idx in by_model.items():
        c = owners[key]
        if ssm_out is None:
            decode = lambda items, c=c: [(im, None) for im in c.decode_many(items, layers=layers, allow_partial=True)]  # noqa: E731
        else:
            decode = lambda items, c=c: [c.decode_with_map(d, layers=layers, allow_partial=True) for d in items]  # noqa: E731
        for i, r in zip(idx, run_batch(lambda items: quiet_packet_loss(decode, items), [ready[i][1] for i in idx])):
            results[i] = r
    for (job, data, header, t_read), (result, seconds) in zip(ready, results):
        if isinstance(result, BaseException):
            job_failed(rep, job, message_of(result))
            continue
        result, semantic_map = result
        try:
            prepare_folder(job, mirror)
            if ssm_out is not None:
                write_ssm(semantic_map, job, mirror, ssm_out, output, overwrite or verdicts is not None)
            if job.dst == STDIO:
                write_stdout(encode_image(result, "PNG"))
            else:
                save_image_atomic(result, job.dst, overwrite=overwrite or verdicts is not None,
                                  input_path=None if job.src == STDIO else job.src)
        except (SqganError, JobError) as e:
            job_failed(rep, job, message_of(e))
            continue
        width, height = result.size
        lost = result.info.get("sqgan_packets")
        if lost is not None and (lost["lost"] or lost["damaged"]):
            from .packets import describe

            rep.warn(with_path(job.src, f"packets lost or damaged ({describe(lost)}): their tokens "
                                         "were decoded as masked"))
        rep.record({"input": job.src, "output": job.dst, "ok": True,
                    "width": width, "height": height, "bytes": len(data),
                    "bpp": round(8 * len(data) / (width * height), 6),
                    "seconds": round(t_read + seconds, 4),
                    "layers": result.info.get("sqgan_layers"), "truncated": result.info.get("sqgan_truncated"),
                    **({"packets": lost} if lost is not None else {})})
        rep.advance()
