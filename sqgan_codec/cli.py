"""The ``sqgan`` command line (docs/cli.md). Thin: all work is done by library calls.

Nothing heavy is imported at module level: ``sqgan info`` only needs
:mod:`sqgan_codec.bitstream` (no numpy, no torch); ``encode``/``decode`` import
:mod:`sqgan_codec.imageio` when they run and the codec (torch) only through
:func:`_make_codec`, once there is at least one file to work on.

Exit status: 0 when everything worked; 1 when any file failed (the others are still
done) or the codec could not be set up; 2 for usage errors; 130 on Ctrl-C.
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
    from .codec import Codec, EncodeOptions

PROG = "sqgan"
SQG_SUFFIX = ".sqg"
DECODED_SUFFIX = ".png"
STDIO = "-"


# ----------------------------------------------------------------------------- codec


def _make_codec(device: str) -> "Codec":
    """The one place the CLI creates a codec (tests substitute this function)."""
    from .codec import Codec, EncodeOptions

    return Codec(device=device)


# ----------------------------------------------------------------------------- group


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sqgan-codec")
    except Exception:
        return "unknown"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"{PROG} {_version()}")
        ctx.exit(0)


class _Group(click.Group):
    """Turns expected failures into one line and a status, never a traceback:
    usage errors -> 2, SqganError -> 1, Ctrl-C -> 130, a closed stdout pipe -> 1."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name or PROG, complete_var, False, **extra)
        except click.exceptions.Abort:  # click's wrapper for KeyboardInterrupt / EOF
            click.echo(f"{PROG}: interrupted", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo(f"{PROG}: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except SqganError as e:
            click.echo(f"{PROG}: error: {e}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            # The reader of stdout went away (`sqgan info *.sqg | head`): stop quietly.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and exit.")
def main() -> None:
    """SQ-GAN semantic image codec: images <-> .sqg files at 0.01-0.1 bpp."""


# The `segment` command (write semantic maps for images) is at the end of this file
# (section "segment"), after the helpers it shares with `encode`.


# ----------------------------------------------------------------------------- planning


@dataclass
class _Job:
    src: str   # a path, or "-" for stdin
    dst: str   # a path, or "-" for stdout


@dataclass
class _Plan:
    jobs: list[_Job] = field(default_factory=list)
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


def _plan_jobs(inputs: Sequence[str], output: str, *, recursive: bool,
               accept: Callable[[str], bool], out_suffix: str, what: str) -> _Plan:
    """Map inputs to outputs.

    One input that is a file (or ``-``): ``output`` is the output file (``-`` =
    stdout), or, when it is an existing folder, the folder to put it in. Otherwise
    ``output`` is a folder (created if needed) mirroring each input folder's tree;
    files named directly go to its top level. Outputs get ``out_suffix``."""
    plan = _Plan()
    single = len(inputs) == 1 and (inputs[0] == STDIO or not os.path.isdir(inputs[0]))
    out_is_dir = output != STDIO and (os.path.isdir(output) or output.endswith(("/", os.sep)))

    if single and not out_is_dir:
        plan.jobs.append(_Job(inputs[0], output))
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
        plan.jobs.append(_Job(src, dst))

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


class _Reporter:
    """Progress bar and messages on stderr, JSON lines on stdout."""

    def __init__(self, total: int, label: str, *, quiet: bool, as_json: bool) -> None:
        self.total, self.label, self.quiet, self.as_json = total, label, quiet, as_json
        self.done = 0
        self.failed = 0
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
        click.echo(f"{PROG}: error: {_with_path(path, message, other)}", err=True)
        self._draw()

    def warn(self, message: str) -> None:
        if self.quiet:
            return
        self._clear()
        click.echo(f"{PROG}: warning: {message}", err=True)
        self._draw()

    def record(self, stats: dict[str, Any]) -> None:
        if self.as_json:
            self._clear()
            click.echo(json.dumps(stats))
            self._draw()


def _with_path(path: str, message: str, other: str | None = None) -> str:
    """``PATH: message``, unless the message already starts with ``path`` or ``other``
    (e.g. the output path it is about)."""
    shown = "<stdin>" if path == STDIO else path
    for p in (path, shown, other):
        if p and p != STDIO and message.startswith(f"{p}: "):
            return message
    return f"{shown}: {message}"


def _message(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    if isinstance(e, OutputExistsError):
        msg += " (use --overwrite to replace it)"
    return msg


def _fail_json(rep: _Reporter, job: _Job, message: str) -> None:
    rep.record({"input": job.src, "output": job.dst, "ok": False, "error": message})


# ----------------------------------------------------------------------------- I/O helpers


def _read_input(src: str) -> bytes:
    if src == STDIO:
        stdin = sys.stdin
        return getattr(stdin, "buffer", stdin).read()
    try:
        with open(src, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise _JobError("no such file") from None
    except IsADirectoryError:
        raise _JobError("is a folder") from None
    except PermissionError:
        raise _JobError("permission denied") from None
    except OSError as e:
        raise _JobError(f"cannot read: {e.strerror or e}") from None


class _JobError(Exception):
    """A per-file failure detected by the CLI itself (not a SqganError)."""


def _precheck_output(job: _Job, overwrite: bool) -> str | None:
    """Why this job's output cannot be written, before doing any work on it."""
    from .imageio import same_file

    if job.dst == STDIO:
        return None
    if job.src != STDIO and same_file(job.src, job.dst):
        return f"{job.dst}: is the input file; refusing to overwrite it"
    if os.path.isdir(job.dst):
        return f"{job.dst}: is a folder"
    if not overwrite and os.path.lexists(job.dst):
        return _message(OutputExistsError(f"{job.dst}: already exists; not overwriting it"))
    return None


def _prepare_folder(job: _Job, mirror: bool) -> None:
    if not mirror or job.dst == STDIO:
        return
    parent = os.path.dirname(job.dst)
    if parent:
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise _JobError(f"{job.dst}: cannot create folder {parent}: {e.strerror or e}") from None


def _write_stdout(data: bytes) -> None:
    out = getattr(sys.stdout, "buffer", sys.stdout)
    out.write(data)
    out.flush()


def _check_stdout_use(output: str, as_json: bool) -> None:
    if output != STDIO:
        return
    if as_json:
        raise click.UsageError("--json and -o - both write to stdout; choose one")
    try:
        if sys.stdout.isatty():
            raise click.UsageError("refusing to write binary data to a terminal; "
                                   "redirect stdout or give -o FILE")
    except (AttributeError, ValueError):
        pass


def _batches(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _finish(rep: _Reporter, plan: _Plan, verb: str) -> None:
    rep.close()
    total = len(plan.jobs) + len(plan.failures)
    if not rep.quiet and total > 1:
        ok = total - rep.failed
        tail = f", {rep.failed} failed" if rep.failed else ""
        click.echo(f"{PROG}: {verb} {ok} of {total} file(s){tail}", err=True)
    if rep.failed:
        sys.exit(1)


def _start(plan: _Plan, label: str, quiet: bool, as_json: bool) -> _Reporter:
    rep = _Reporter(len(plan.jobs), label, quiet=quiet, as_json=as_json)
    for note in plan.notes:
        rep.warn(note)
    for path, message in plan.failures:
        rep.error(path, message)
        _fail_json(rep, _Job(path, ""), message)
    rep.start()
    return rep


class _CodecHolder:
    """Creates the codec on first use, so runs with nothing to do never load it."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._codec: Codec | None = None

    def get(self) -> "Codec":
        if self._codec is None:
            self._codec = _make_codec(self.device)
        return self._codec


# ----------------------------------------------------------------------------- options


_device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where the networks run (auto: CUDA when available).")
_output_option = click.option(
    "-o", "--output", required=True, type=click.Path(allow_dash=True, path_type=str),
    help="Output file, or folder when there are several inputs or a folder (- = stdout).")
_recursive_option = click.option(
    "-r", "--recursive", is_flag=True, help="Descend into subfolders of input folders.")
_overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace existing output files (never an input).")
_quiet_option = click.option(
    "-q", "--quiet", is_flag=True, help="No progress bar, warnings or summary; errors only.")
_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per file to stdout.")
_inputs_argument = click.argument(
    "inputs", nargs=-1, required=True, type=click.Path(allow_dash=True, path_type=str))


# ----------------------------------------------------------------------------- encode


@main.command()
@_inputs_argument
@_output_option
@click.option("--bpp", type=click.FloatRange(min=0, min_open=True),
              help="Target bits per pixel (the codec is built for 0.01-0.1).")
@click.option("--keep", type=click.FloatRange(0, 1),
              help="Fraction of latent blocks to keep, instead of --bpp.")
@click.option("--max-bytes", type=click.IntRange(min=1), metavar="N",
              help="Hard cap on each file's size in bytes (alone or with --bpp).")
@click.option("--priority", metavar="CLASS=W,...",
              help="Re-weight which regions keep tokens, e.g. Pedestrian=4,SignSymbol=4,Sky=0.")
@click.option("--roi", multiple=True, metavar="X,Y,W,H",
              help="Region of interest in pixels that keeps more tokens (repeatable).")
@click.option("--ssm", type=click.Choice(["auto", "vq", "lossless"]), default="auto", show_default=True,
              help="Semantic map coding: masked VQ (G_s), exact (lossless arithmetic coding), or auto "
                   "(exact when a --bpp/--max-bytes budget has room beyond G_s's largest stream).")
@click.option("--refine", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Refinement layer, a low-pass colour residual after the tokens: auto = only to fill "
                   "a --bpp/--max-bytes budget above the token stream's maximum; on = a quarter of "
                   "every budget (about +0.9 dB PSNR, a little less mIoU); off = tokens only.")
@click.option("--split", type=click.Choice(["fixed", "search"]), default="fixed", show_default=True,
              help="Semantic/image bit split with --bpp/--max-bytes: one schedule, or searched "
                   "per image (slower).")
@click.option("--tune", type=click.Choice(["semantic", "balanced", "perceptual"]), default="balanced",
              show_default=True,
              help="With --bpp/--max-bytes the encoder tries several splits of the budget between a "
                   "coarse image, the semantic map and the tokens, decodes each and sends the best for: "
                   "semantic = what a segmenter recovers (map and tokens only), perceptual = nearest "
                   "the original, balanced = both.")
@_device_option
@_recursive_option
@_overwrite_option
@_quiet_option
@_json_option
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Images sent through the network together.")
def encode(inputs: tuple[str, ...], output: str, bpp: float | None, keep: float | None,
           max_bytes: int | None, priority: str | None, roi: tuple[str, ...], ssm: str, refine: str,
           split: str, tune: str, device: str, recursive: bool, overwrite: bool, quiet: bool, as_json: bool,
           batch_size: int) -> None:
    """Compress images to .sqg files.

    INPUT is an image file, a folder of images, or - (stdin). IN/a/x.png is written
    to OUTPUT/a/x.sqg when INPUT is a folder (subfolders with --recursive)."""
    from .imageio import is_image_path

    from .codec import EncodeOptions, parse_priority

    if keep is not None and (bpp is not None or max_bytes is not None):
        raise click.UsageError("--keep and --bpp/--max-bytes are mutually exclusive")
    try:
        options = EncodeOptions(bpp=bpp, keep=keep, max_bytes=max_bytes,
                                priority=parse_priority(priority) if priority else None,
                                roi=tuple(_parse_box(b) for b in roi), ssm=ssm, split=split,
                                refine=refine, tune=tune)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    _check_stdout_use(output, as_json)
    plan = _plan_jobs(inputs, output, recursive=recursive, accept=is_image_path,
                      out_suffix=SQG_SUFFIX, what="images")
    rep = _start(plan, "encoding", quiet, as_json)
    codec = _CodecHolder(device)
    try:
        for batch in _batches(plan.jobs, batch_size):
            _encode_batch(batch, codec, rep, plan.mirror, options=options, overwrite=overwrite)
    finally:
        rep.close()
    _finish(rep, plan, "encoded")


def _parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--roi takes X,Y,W,H in pixels, got {text!r}") from None
    return x, y, w, h


def _load_job(job: _Job, rep: _Reporter):
    from .imageio import load_image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if job.src == STDIO:
            loaded = load_image(_read_input(STDIO), name="<stdin>")
        else:
            loaded = load_image(job.src)
    for w in caught:
        rep.warn(str(w.message))
    return loaded


def _encode_batch(batch: list[_Job], codec: _CodecHolder, rep: _Reporter, mirror: bool, *,
                  options: "EncodeOptions", overwrite: bool) -> None:
    from dataclasses import asdict

    from .imageio import write_atomic

    ready = []  # (job, loaded image, seconds spent loading)
    for job in batch:
        problem = _precheck_output(job, overwrite)
        if problem is not None:
            _job_failed(rep, job, problem)
            continue
        t0 = time.perf_counter()
        try:
            loaded = _load_job(job, rep)
        except (SqganError, _JobError) as e:
            _job_failed(rep, job, _message(e))
            continue
        ready.append((job, loaded, time.perf_counter() - t0))
    if not ready:
        return

    images = [loaded for _, loaded, _ in ready]
    c = codec.get()  # a failure here (missing weights, ...) is fatal, not per file
    kwargs = asdict(options)
    results = _run_batch(lambda items: _encode_warned(c, items, kwargs, rep), images)
    for (job, loaded, t_load), (decision, seconds) in zip(ready, results):
        if isinstance(decision, BaseException):
            _job_failed(rep, job, _message(decision))
            continue
        result = decision.data
        if decision.unfamiliar:
            rep.warn(_with_path(job.src, "unlike what the model was trained on: the encoder leaned on "
                                         f"the coarse image ({decision.mode})"))
        try:
            _prepare_folder(job, mirror)
            if job.dst == STDIO:
                _write_stdout(result)
            else:
                write_atomic(job.dst, result, overwrite=overwrite,
                             input_path=None if job.src == STDIO else job.src)
        except (SqganError, _JobError) as e:
            _job_failed(rep, job, _message(e))
            continue
        pixels = loaded.width * loaded.height
        rep.record({"input": job.src, "output": job.dst, "ok": True,
                    "width": loaded.width, "height": loaded.height, "bytes": len(result),
                    "bpp": round(8 * len(result) / pixels, 6),
                    "seconds": round(t_load + seconds, 4),
                    "mode": decision.mode, "unfamiliar": decision.unfamiliar,
                    "confidence": None if decision.confidence is None else round(decision.confidence, 4)})
        rep.advance()


def _encode_warned(codec: "Codec", items: list, kwargs: dict, rep: _Reporter) -> list:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = codec.decide_many(items, **kwargs)
    for w in caught:
        rep.warn(str(w.message))
    return out


def _run_batch(call: Callable[[list], list], items: list) -> list[tuple[Any, float]]:
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


def _job_failed(rep: _Reporter, job: _Job, message: str) -> None:
    rep.error(job.src, message, job.dst)
    _fail_json(rep, job, message)
    rep.advance()


# ----------------------------------------------------------------------------- decode


@main.command()
@_inputs_argument
@_output_option
@_device_option
@click.option("--layers", type=click.Choice(["all", "base"]), default="all", show_default=True,
              help="base: decode from the semantic layer only, ignoring image tokens.")
@click.option("--ssm-out", type=click.Path(dir_okay=True, path_type=str), metavar="PATH",
              help="Also write the decoded semantic map (8-bit PNG of class ids): a file for "
                   "one input, else a folder mirroring OUTPUT.")
@_recursive_option
@_overwrite_option
@_quiet_option
@_json_option
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Streams sent through the network together.")
def decode(inputs: tuple[str, ...], output: str, device: str, layers: str, ssm_out: str | None,
           recursive: bool, overwrite: bool, quiet: bool, as_json: bool, batch_size: int) -> None:
    """Decompress .sqg files to images.

    INPUT is a .sqg file, a folder of them, or - (stdin). x.sqg becomes x.png in
    folder mode; a single output file's suffix picks its format (PNG if unknown)."""
    _check_stdout_use(output, as_json)
    plan = _plan_jobs(inputs, output, recursive=recursive,
                      accept=lambda f: f.lower().endswith(SQG_SUFFIX),
                      out_suffix=DECODED_SUFFIX, what=".sqg files")
    rep = _start(plan, "decoding", quiet, as_json)
    codec = _CodecHolder(device)
    try:
        for batch in _batches(plan.jobs, batch_size):
            _decode_batch(batch, codec, rep, plan.mirror, layers=layers, overwrite=overwrite,
                          ssm_out=ssm_out, output=output)
    finally:
        rep.close()
    _finish(rep, plan, "decoded")


def _write_ssm(semantic_map, job: _Job, mirror: bool, ssm_out: str, output: str, overwrite: bool) -> None:
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


def _truncation_note(stream) -> str:
    from . import bitstream

    if bitstream.CHUNK_IMAGE in stream.chunks:
        return _TRUNCATED_REFINE
    if not any(k in stream.chunks for k in bitstream.SEMANTIC_CHUNKS):
        return _TRUNCATED_COARSE
    return _TRUNCATED_BASE


def _check_stream(data: bytes):
    """Parse and verify a stream like the codec does (a stream cut after its coarse-image
    or semantic layer is still decodable); raise BitstreamError when nothing usable is left."""
    from . import bitstream

    stream = bitstream.unpack(data, allow_truncated=True)
    if not any(k in stream.chunks for k in bitstream.LAYER_CHUNKS):
        raise bitstream.TruncatedError("stream is truncated before its semantic-map layer")
    return stream


def _decode_batch(batch: list[_Job], codec: _CodecHolder, rep: _Reporter, mirror: bool, *,
                  layers: str, overwrite: bool, ssm_out: str | None = None, output: str = "") -> None:
    from .imageio import encode_image, save_image_atomic

    ready = []  # (job, data, header, seconds spent reading)
    for job in batch:
        problem = _precheck_output(job, overwrite)
        if problem is not None:
            _job_failed(rep, job, problem)
            continue
        t0 = time.perf_counter()
        try:
            data = _read_input(job.src)
            stream = _check_stream(data)  # cheap, torch-free: fail early
        except (SqganError, _JobError) as e:
            _job_failed(rep, job, _message(e))
            continue
        if stream.truncated and layers == "all":
            rep.warn(_with_path(job.src, _truncation_note(stream)))
        header = stream.header
        ready.append((job, data, header, time.perf_counter() - t0))
    if not ready:
        return

    datas = [data for _, data, _, _ in ready]
    c = codec.get()  # a failure here (missing weights, ...) is fatal, not per file
    if ssm_out is None:
        results = _run_batch(lambda items: [(im, None) for im in c.decode_many(items, layers=layers)], datas)
    else:
        results = _run_batch(lambda items: [c.decode_with_map(d, layers=layers) for d in items], datas)
    for (job, data, header, t_read), (result, seconds) in zip(ready, results):
        if isinstance(result, BaseException):
            _job_failed(rep, job, _message(result))
            continue
        result, semantic_map = result
        try:
            _prepare_folder(job, mirror)
            if ssm_out is not None:
                _write_ssm(semantic_map, job, mirror, ssm_out, output, overwrite)
            if job.dst == STDIO:
                _write_stdout(encode_image(result, "PNG"))
            else:
                save_image_atomic(result, job.dst, overwrite=overwrite,
                                  input_path=None if job.src == STDIO else job.src)
        except (SqganError, _JobError) as e:
            _job_failed(rep, job, _message(e))
            continue
        width, height = result.size
        rep.record({"input": job.src, "output": job.dst, "ok": True,
                    "width": width, "height": height, "bytes": len(data),
                    "bpp": round(8 * len(data) / (width * height), 6),
                    "seconds": round(t_read + seconds, 4)})
        rep.advance()


# ----------------------------------------------------------------------------- info


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True, path_type=str))
@_json_option
def info(files: tuple[str, ...], as_json: bool) -> None:
    """Show the header of .sqg files (reads no model; fast)."""
    from . import bitstream

    failed = 0
    for path in files:
        try:
            data = _read_input(path)
            header = bitstream.read_header(data)
        except (SqganError, _JobError) as e:
            failed += 1
            click.echo(f"{PROG}: error: {_with_path(path, _message(e))}", err=True)
            if as_json:
                click.echo(json.dumps({"file": path, "ok": False, "error": _message(e)}))
            continue
        problem = note = None
        truncated = False
        try:
            stream = _check_stream(data)
            truncated = stream.truncated
            layers = ((["coarse"] if bitstream.CHUNK_COARSE in stream.chunks else [])
                      + (["base"] if any(k in stream.chunks for k in bitstream.SEMANTIC_CHUNKS) else [])
                      + (["image"] if bitstream.CHUNK_IMAGE in stream.chunks else [])
                      + (["refine"] if bitstream.CHUNK_REFINE in stream.chunks else []))
            if truncated:
                note = _truncation_note(stream)
        except SqganError as e:
            layers, problem, truncated = [], _message(e), True
        d = header.to_dict()
        bpp = 8 * len(data) / (header.width * header.height)
        if as_json:
            click.echo(json.dumps({"file": path, "ok": problem is None, "bytes": len(data),
                                   "bpp": round(bpp, 6), "layers": layers,
                                   "truncated": truncated,
                                   **({"error": problem} if problem else {}), **d}))
        else:
            shown = "<stdin>" if path == STDIO else path
            click.echo(
                f"{shown}: {d['width']}x{d['height']} {d['colour_mode']}, {len(data):,} bytes, "
                f"{bpp:.4f} bpp, format {d['version']}, model {d['model']} "
                f"(weights {d['weights_hash']})")
            click.echo(
                f"  layers: {'+'.join(layers) or '?'}; keep: semantic {d['keep_ssm']}, "
                f"image {d['keep_image']}; segmenter {d['segmenter']}; "
                f"classes {d['class_set']}; coder {d['coder']}"
                + ("; alpha dropped" if d["alpha_dropped"] else ""))
        if note:
            click.echo(f"{PROG}: warning: {_with_path(path, note)}", err=True)
        if problem:
            failed += 1
            click.echo(f"{PROG}: error: {_with_path(path, problem)}", err=True)
    if failed:
        sys.exit(1)


# ----------------------------------------------------------------------------- segment
# `sqgan segment`: semantic maps only (runs a segmenter, never the codec's networks).

OVERLAY_ALPHA = 0.5


def _make_segmenter(spec: str, device: str, class_map: str | None):
    """The one place the CLI creates a segmenter (tests may substitute this function)."""
    from .segmenters import get_segmenter

    return get_segmenter(spec, device=device, class_map=class_map)


class _SegmenterHolder:
    """Creates the segmenter on first use, so runs with nothing to do never load it."""

    def __init__(self, spec: str, device: str, class_map: str | None) -> None:
        self.spec, self.device, self.class_map = spec, device, class_map
        self._seg: Any = None

    def get(self):
        if self._seg is None:
            self._seg = _make_segmenter(self.spec, self.device, self.class_map)
        return self._seg


@main.command()
@_inputs_argument
@_output_option
@click.option("--segmenter", "spec", default="bundled", show_default=True, metavar="SPEC",
              help="bundled, onnx:MODEL.onnx, or labels:PATH (a label PNG, or a folder "
                   "of <stem>.png).")
@click.option("--class-map", metavar="FILE",
              help="JSON class map for an onnx: segmenter, or a built-in name "
                   "(cityscapes19); default: MODEL.json beside the model.")
@click.option("--overlay", is_flag=True,
              help="Write the image blended with the class colours instead of class ids.")
@_device_option
@_recursive_option
@_overwrite_option
@_quiet_option
@_json_option
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Images sent through the network together.")
def segment(inputs: tuple[str, ...], output: str, spec: str, class_map: str | None,
            overlay: bool, device: str, recursive: bool, overwrite: bool, quiet: bool,
            as_json: bool, batch_size: int) -> None:
    """Write the semantic map the codec would use for images.

    Each map is an 8-bit greyscale PNG of class ids 0-10 (Sky, Building, Pole, Road,
    Pavement, Tree, SignSymbol, Fence, Car, Pedestrian, Bicyclist), or with --overlay
    a picture of the classes' colours over the image (format by suffix). INPUT is an
    image file, a folder of images, or - (stdin); IN/a/x.jpg is written to
    OUTPUT/a/x.png when INPUT is a folder (subfolders with --recursive)."""
    from .imageio import is_image_path

    if class_map is not None and not spec.strip().lower().startswith("onnx:"):
        raise click.UsageError("--class-map is only used with --segmenter onnx:PATH")
    _check_stdout_use(output, as_json)
    plan = _plan_jobs(inputs, output, recursive=recursive, accept=is_image_path,
                      out_suffix=DECODED_SUFFIX, what="images")
    if not overlay and not plan.mirror:
        suffix = Path(output).suffix.lower() if output != STDIO else ""
        if suffix not in ("", ".png"):
            raise click.UsageError(f"class-id maps are written as PNG; name the output .png, "
                                   f"not {suffix} (or use --overlay for a picture)")
    rep = _start(plan, "segmenting", quiet, as_json)
    holder = _SegmenterHolder(spec, device, class_map)
    try:
        for batch in _batches(plan.jobs, batch_size):
            _segment_batch(batch, holder, rep, plan.mirror, overlay=overlay, overwrite=overwrite)
    finally:
        rep.close()
    _finish(rep, plan, "segmented")


def _overlay_image(rgb, ids):
    """The image blended with the classes' colours (classes.CLASS_COLOURS)."""
    import numpy as np
    from PIL import Image

    from .classes import CLASS_COLOURS

    colours = np.asarray(CLASS_COLOURS, dtype=np.float32)[ids]
    blend = rgb.astype(np.float32) * (1 - OVERLAY_ALPHA) + colours * OVERLAY_ALPHA
    return Image.fromarray(np.clip(np.rint(blend), 0, 255).astype(np.uint8))


def _segment_batch(batch: list[_Job], holder: _SegmenterHolder, rep: _Reporter, mirror: bool,
                   *, overlay: bool, overwrite: bool) -> None:
    import numpy as np
    from PIL import Image

    from .classes import CLASS_NAMES
    from .imageio import encode_image, save_image_atomic, write_atomic

    ready = []  # (job, loaded image, seconds spent loading)
    for job in batch:
        problem = _precheck_output(job, overwrite)
        if problem is not None:
            _job_failed(rep, job, problem)
            continue
        t0 = time.perf_counter()
        try:
            loaded = _load_job(job, rep)
        except (SqganError, _JobError) as e:
            _job_failed(rep, job, _message(e))
            continue
        ready.append((job, loaded, time.perf_counter() - t0))
    if not ready:
        return

    images = [loaded for _, loaded, _ in ready]
    seg = holder.get()  # a failure here (missing weights, bad model file, ...) is fatal
    results = _run_batch(
        lambda items: seg.segment_many([li.rgb for li in items], names=[li.name for li in items]),
        images)
    for (job, loaded, t_load), (ids, seconds) in zip(ready, results):
        if isinstance(ids, BaseException):
            _job_failed(rep, job, _message(ids))
            continue
        try:
            _prepare_folder(job, mirror)
            input_path = None if job.src == STDIO else job.src
            if overlay:
                picture = _overlay_image(loaded.rgb, ids)
                if job.dst == STDIO:
                    _write_stdout(encode_image(picture, "PNG"))
                else:
                    save_image_atomic(picture, job.dst, overwrite=overwrite, input_path=input_path)
            else:
                data = encode_image(Image.fromarray(np.ascontiguousarray(ids, np.uint8)), "PNG")
                if job.dst == STDIO:
                    _write_stdout(data)
                else:
                    write_atomic(job.dst, data, overwrite=overwrite, input_path=input_path)
        except (SqganError, _JobError) as e:
            _job_failed(rep, job, _message(e))
            continue
        counts = np.bincount(ids.ravel(), minlength=len(CLASS_NAMES))
        rep.record({"input": job.src, "output": job.dst, "ok": True,
                    "width": loaded.width, "height": loaded.height,
                    "segmenter": getattr(seg, "name", str(seg)),
                    "classes": {CLASS_NAMES[c]: round(float(n) / ids.size, 4)
                                for c, n in enumerate(counts) if n},
                    "seconds": round(t_load + seconds, 4)})
        rep.advance()


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def evaluate(args: tuple[str, ...]) -> None:
    """Rate/quality benchmark against classical codecs (needs the [eval] extra).

    Run `sqgan evaluate --help` for its options."""
    try:
        from .evaluate.run import main as run_main
    except ImportError as e:
        raise click.ClickException(f"sqgan evaluate needs the eval extra "
                                   f"(pip install 'sqgan_codec[eval]'): {e}") from None
    sys.exit(run_main(list(args), prog="sqgan evaluate"))


if __name__ == "__main__":  # pragma: no cover
    main()
