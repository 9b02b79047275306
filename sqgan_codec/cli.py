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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import click

from .errors import SqganError

from .jobs import (DECODED_SUFFIX, PROG, SQG_SUFFIX, STDIO, CodecHolder, Job, JobError, Plan,
                   Reporter, batches, check_stream, decode_batch, encode_batch, job_failed,
                   load_ready, message_of, plan_jobs, prepare_folder, read_input, run_batch,
                   start_report, to_write, truncation_note, with_path, write_stdout)

if TYPE_CHECKING:  # pragma: no cover
    from .codec import Codec


# ----------------------------------------------------------------------------- codec


def _make_codec(device: str, model: str | None = None, segmenter: str = "bundled") -> "Codec":
    """The one place the CLI creates a codec (tests substitute this function): ``model`` None is
    the registry's default."""
    from .codec import Codec

    return Codec(model, device=device, segmenter=segmenter)


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


# ----------------------------------------------------------------------------- CLI-only helpers

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


def _finish(rep: Reporter, plan: Plan, verb: str) -> None:
    rep.close()
    total = len(plan.jobs) + len(plan.failures)
    if not rep.quiet and total > 1:
        ok = total - rep.failed
        tail = f", {rep.skipped} skipped (already there)" if rep.skipped else ""
        tail += f", {rep.failed} failed" if rep.failed else ""
        click.echo(f"{PROG}: {verb} {ok} of {total} file(s){tail}", err=True)
    if rep.failed:
        sys.exit(1)


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
_skip_option = click.option(
    "--skip-existing", is_flag=True,
    help="Leave outputs that already exist as they are (reported as skipped): re-run an "
         "interrupted folder job to finish it.")


_max_pixels_option = click.option(
    "--max-pixels", type=click.IntRange(min=1), metavar="N",
    help="Refuse images (to encode, or named by a stream) of more than N pixels; default "
         "12,000,000 (decoding takes about 5.5 GB per 10 MP).")


def _engine_options(f):
    f = click.option("--workers", type=click.IntRange(min=1), metavar="N",
                     help="--engine ray: codec workers (default: one per CPU, or per GPU with "
                          "--device cuda, of the cluster).")(f)
    f = click.option("--ray-address", metavar="ADDR",
                     help="--engine ray: the cluster to join (HOST:PORT, ray://..., auto); "
                          "default: start a local one.")(f)
    f = click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="local: this process; ray: Ray Data workers, one codec each (pip install "
                          "'sqgan-codec[ray]'; files must be at the same paths on every node).")(f)
    return f


def _run_jobs(verb: str, plan: Plan, rep: Reporter, *, device: str, batch_size: int, engine: str,
              ray_address: str | None, workers: int | None, max_pixels: int | None,
              model: str | None = None, segmenter: str = "bundled", **kwargs) -> None:
    """The planned jobs, in batches, on the chosen engine (the same batch functions on both).
    ``model``/``segmenter``: the encoder's; a decode takes each stream's model from its header."""
    try:
        if engine == "ray":
            from .ray_engine import run_jobs

            run_jobs(verb, plan, rep, batch_size=batch_size, device=device, address=ray_address,
                     workers=workers, max_pixels=max_pixels, model=model, segmenter=segmenter, **kwargs)
            return
        codec = CodecHolder(lambda name: _make_codec(device, name or model, segmenter), max_pixels)
        batch_fn = encode_batch if verb == "encode" else decode_batch
        for batch in batches(plan.jobs, batch_size):
            batch_fn(batch, codec, rep, plan.mirror, **kwargs)
    finally:
        rep.close()


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
              help="Re-weight which regions keep tokens, e.g. Pedestrian=4,SignSymbol=4,Sky=0 (all=W weighs the classes not named).")
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
@click.option("--model", metavar="NAME",
              help="The codec model (a registry name, see `sqgan info --models`); default: the "
                   "registry's. A model trained on other classes brings its own segmenter.")
@click.option("--segmenter", "segmenter_spec", default="bundled", show_default=True, metavar="SPEC",
              help="Where the semantic map comes from: bundled (the model's segmenter), "
                   "onnx:MODEL.onnx, or labels:PATH (a label PNG of the model's class ids, or a "
                   "folder of <stem>.png).")
@click.option("--packet-bytes", type=click.IntRange(48, 65507), metavar="N",
              help="Write a packet stream for links that lose data: self-contained packets of at most "
                   "N bytes (e.g. 64-1500), any subset decodable. Token layers only (--tune semantic).")
@click.option("--protect-base", type=click.IntRange(1, 8), default=1, show_default=True, metavar="K",
              help="With --packet-bytes: send the semantic map's tokens K times (and the header "
                   "max(2, K) times).")
@click.option("--importance", type=click.Choice(["samm", "gradient"]), default="samm", show_default=True,
              help="How image tokens are ranked for keeping: SAMM's learned scores, or the gradient of "
                   "the bundled segmenter's loss (task-driven; about 2 s more per 480x360 image on a CPU).")
@_device_option
@_recursive_option
@_overwrite_option
@_quiet_option
@_json_option
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Images sent through the network together.")
@_skip_option
@_max_pixels_option
@_engine_options
def encode(inputs: tuple[str, ...], output: str, bpp: float | None, keep: float | None,
           max_bytes: int | None, priority: str | None, roi: tuple[str, ...], ssm: str, refine: str,
           split: str, tune: str, model: str | None, segmenter_spec: str, packet_bytes: int | None,
           protect_base: int, importance: str, device: str, recursive: bool,
           overwrite: bool, quiet: bool, as_json: bool, batch_size: int, skip_existing: bool,
           max_pixels: int | None, engine: str, ray_address: str | None, workers: int | None) -> None:
    """Compress images to .sqg files.

    INPUT is an image file, a folder of images, or - (stdin). IN/a/x.png is written
    to OUTPUT/a/x.sqg when INPUT is a folder (subfolders with --recursive)."""
    from .imageio import is_image_path

    from .options import EncodeOptions, parse_priority

    if keep is not None and (bpp is not None or max_bytes is not None):
        raise click.UsageError("--keep and --bpp/--max-bytes are mutually exclusive")
    if packet_bytes is not None:
        source = click.get_current_context().get_parameter_source
        if (tune != "semantic" and source("tune") != click.core.ParameterSource.DEFAULT) or ssm == "lossless":
            raise click.UsageError("--packet-bytes sends the token layers only: it takes --tune semantic "
                                   "and --ssm vq (a coarse image or an exact map is one piece that a lost "
                                   "packet would take whole)")
        tune = "semantic"
    elif protect_base != 1:
        raise click.UsageError("--protect-base needs --packet-bytes")
    if importance == "gradient" and segmenter_spec != "bundled":
        raise click.UsageError("--importance gradient differentiates the bundled segmenter: it takes "
                               "--segmenter bundled")
    try:
        vocabulary = _vocabulary_of(model)
        options = EncodeOptions(bpp=bpp, keep=keep, max_bytes=max_bytes,
                                priority=parse_priority(priority, vocabulary) if priority else None,
                                roi=tuple(_parse_box(b) for b in roi), ssm=ssm, split=split,
                                refine=refine, tune=tune, packet_bytes=packet_bytes, protect_base=protect_base,
                                importance=importance)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    _check_stdout_use(output, as_json)
    plan = plan_jobs(inputs, output, recursive=recursive, accept=is_image_path,
                      out_suffix=SQG_SUFFIX, what="images")
    rep = start_report(plan, "encoding", quiet, as_json)
    _run_jobs("encode", plan, rep, device=device, batch_size=batch_size, engine=engine,
              ray_address=ray_address, workers=workers, max_pixels=max_pixels, model=model,
              segmenter=segmenter_spec, options=options,
              overwrite=overwrite,
              skip_existing=skip_existing)
    _finish(rep, plan, "encoded")


def _vocabulary_of(model: str | None):
    """The class vocabulary of a registry model (None: the default), read from the registry
    alone (no weights loaded): what --priority names are checked against."""
    from . import registry

    entry = registry.get(model or registry.default_name("sqgan"))
    if entry.kind != "sqgan":
        raise ValueError(f"{entry.name!r} is a {entry.kind} model, not a codec")
    return registry.vocabulary_of(entry)


def _parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--roi takes X,Y,W,H in pixels, got {text!r}") from None
    return x, y, w, h


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
@click.option("--partial", is_flag=True,
              help="Decode the complete layers of a truncated (or damaged) stream, with a warning; "
                   "without it such a stream fails.")
@_skip_option
@_max_pixels_option
@_engine_options
def decode(inputs: tuple[str, ...], output: str, device: str, layers: str, ssm_out: str | None,
           recursive: bool, overwrite: bool, quiet: bool, as_json: bool, batch_size: int,
           partial: bool, skip_existing: bool, max_pixels: int | None, engine: str,
           ray_address: str | None, workers: int | None) -> None:
    """Decompress .sqg files to images.

    INPUT is a .sqg file, a folder of them, or - (stdin). x.sqg becomes x.png in
    folder mode; a single output file's suffix picks its format (PNG if unknown)."""
    _check_stdout_use(output, as_json)
    plan = plan_jobs(inputs, output, recursive=recursive,
                      accept=lambda f: f.lower().endswith(SQG_SUFFIX),
                      out_suffix=DECODED_SUFFIX, what=".sqg files")
    rep = start_report(plan, "decoding", quiet, as_json)
    _run_jobs("decode", plan, rep, device=device, batch_size=batch_size, engine=engine,
              ray_address=ray_address, workers=workers, max_pixels=max_pixels, layers=layers,
              overwrite=overwrite,
              ssm_out=ssm_out, output=output, skip_existing=skip_existing, allow_partial=partial)
    _finish(rep, plan, "decoded")


# ----------------------------------------------------------------------------- info


@main.command()
@click.argument("files", nargs=-1, type=click.Path(allow_dash=True, path_type=str))
@click.option("--models", is_flag=True, help="List the installed models instead (the registry).")
@_json_option
def info(files: tuple[str, ...], models: bool, as_json: bool) -> None:
    """Show the header of .sqg files and packet streams (reads no model; fast)."""
    from . import bitstream, coarse, packets

    if models == bool(files):
        raise click.UsageError("give .sqg files, or --models to list the installed models")
    if models:
        _list_models(as_json)
        return
    failed = 0
    for path in files:
        plan = thumbnail = semantic_map = None
        try:
            data = read_input(path)
            if packets.is_packet_stream(data):
                header, plan = packets.read_header(data)
            else:
                header = bitstream.read_header(data)
        except (SqganError, JobError) as e:
            failed += 1
            click.echo(f"{PROG}: error: {with_path(path, message_of(e))}", err=True)
            if as_json:
                click.echo(json.dumps({"file": path, "ok": False, "error": message_of(e)}))
            continue
        problem = note = None
        truncated = False
        try:
            stream = check_stream(data)
            truncated = stream.truncated
            layers = ((["coarse"] if bitstream.CHUNK_COARSE in stream.chunks else [])
                      + (["base"] if any(k in stream.chunks for k in bitstream.SEMANTIC_CHUNKS) else [])
                      + (["image"] if bitstream.CHUNK_IMAGE in stream.chunks else [])
                      + (["refine"] if bitstream.CHUNK_REFINE in stream.chunks else []))
            if truncated:
                note = truncation_note(stream)
            semantic_map = next(({"coding": coding, "bytes": len(stream.chunks[kind]),
                                  **({"scale": stream.chunks[kind][0]} if kind == bitstream.CHUNK_SEMANTIC_SCALED
                                     and stream.chunks[kind] else {})}
                                 for kind, coding in ((bitstream.CHUNK_SEMANTIC, "tokens"),
                                                      (bitstream.CHUNK_SEMANTIC_LOSSLESS, "exact"),
                                                      (bitstream.CHUNK_SEMANTIC_SCALED, "exact-reduced"))
                                 if kind in stream.chunks and plan is None), None)  # packets: spread over them
            detail = stream.chunks.get(bitstream.CHUNK_MAP_DETAIL)
            if semantic_map is not None and detail:  # chunk F: finer over some of the map's cells
                semantic_map["detail"] = {"scale": detail[0], "bytes": len(detail)}
            if bitstream.CHUNK_COARSE in stream.chunks:
                chunk = coarse.parse(stream.chunks[bitstream.CHUNK_COARSE], header.width, header.height)
                tw, th = coarse.small_size(header.width, header.height, chunk.scale)
                thumbnail = {"format": coarse.FORMATS[chunk.format], "scale": chunk.scale, "width": tw,
                             "height": th, "render": coarse.RENDERS[chunk.render], "bytes": len(chunk.frame)}
                if chunk.render == coarse.RENDER_LEARNED:  # the coarse decoder it names, by its tag
                    from . import registry

                    thumbnail["decoder"] = next((e.name for e in registry.entries().values() if e.kind == "coarse"
                                                 and bytes.fromhex(e.sha256)[: len(chunk.tag)] == chunk.tag),
                                                f"{chunk.tag.hex()} (not installed)")
                if bitstream.CHUNK_PATCHES in stream.chunks:
                    thumbnail["patches"] = [
                        {"x": q.x, "y": q.y, "width": q.width, "height": q.height, "scale": q.scale,
                         "bytes": len(q.frame)}
                        for q in coarse.parse_patches(stream.chunks[bitstream.CHUNK_PATCHES],
                                                      header.width, header.height)]
        except SqganError as e:
            layers, problem, truncated = [], message_of(e), True
        d = header.to_dict()
        bpp = 8 * len(data) / (header.width * header.height)
        packet_info = None if plan is None else {
            "packet_format": plan["version"],
            "records": len(packets.split_records(data)[0]), "token_packets": plan["packets"],
            "map_copies": plan["map_copies"], "fragments": plan["fragments"]}
        if as_json:
            click.echo(json.dumps({"file": path, "ok": problem is None, "bytes": len(data),
                                   "bpp": round(bpp, 6), "layers": layers,
                                   "truncated": truncated, **({"packets": packet_info} if plan else {}),
                                   **({"coarse": thumbnail} if thumbnail else {}),
                                   **({"semantic_map": semantic_map} if semantic_map else {}),
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
            if thumbnail is not None:
                click.echo(f"  coarse image: {thumbnail['format'].upper()} {thumbnail['width']}x{thumbnail['height']} "
                           f"(1/{thumbnail['scale']}), {thumbnail['bytes']:,} bytes, rendered "
                           + (f"by the coarse decoder {thumbnail['decoder']}" if thumbnail["render"] == "learned"
                              else "upsampled"))
                for q in thumbnail.get("patches", []):
                    click.echo(f"  patch: {q['width']}x{q['height']} at {q['x']},{q['y']} (1/{q['scale']}), "
                               f"{q['bytes']:,} bytes")
            if semantic_map is not None:
                click.echo(f"  semantic map: " + {"tokens": "G_s tokens", "exact": "exact",
                                                  "exact-reduced": f"exact at 1/{semantic_map.get('scale')}"}
                           [semantic_map["coding"]] + f", {semantic_map['bytes']:,} bytes"
                           + (f"; finer cells at 1/{semantic_map['detail']['scale']}, "
                              f"{semantic_map['detail']['bytes']:,} bytes" if "detail" in semantic_map else ""))
            if packet_info is not None:
                click.echo(f"  packet stream (packet format {packet_info['packet_format']}): "
                           f"{packet_info['records']} packets here, "
                           f"{packet_info['token_packets']} token packets sent, map sent "
                           f"{packet_info['map_copies'] + 1}x (decode reports what was lost)")
        if note:
            click.echo(f"{PROG}: warning: {with_path(path, note)}", err=True)
        if problem:
            failed += 1
            click.echo(f"{PROG}: error: {with_path(path, problem)}", err=True)
    if failed:
        sys.exit(1)


def _list_models(as_json: bool) -> None:
    """The registry's models: name, kind, id, classes, description (no weights read)."""
    from . import registry

    defaults = set(registry.defaults().values())
    for entry in registry.entries().values():
        vocab = entry.config.get("vocabulary", "camvid11")
        record = {"name": entry.name, "kind": entry.kind, "id": entry.id, "vocabulary": vocab,
                  "default": entry.name in defaults, "weights_hash": entry.hash_prefix.hex(),
                  "description": entry.description}
        if as_json:
            click.echo(json.dumps(record))
        else:
            click.echo(f"{entry.name}: {entry.kind}{' (default)' if record['default'] else ''}, id {entry.id}, "
                       f"classes {vocab}, weights {record['weights_hash']}: {entry.description}")


# ----------------------------------------------------------------------------- channel


@main.command()
@click.argument("source", type=click.Path(allow_dash=True, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(allow_dash=True, path_type=str),
              help="What arrives (- = stdout).")
@click.option("--loss", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Packet loss rate.")
@click.option("--burst", type=click.FloatRange(min=1), default=1.0, show_default=True, metavar="L",
              help="Mean burst length in packets (Gilbert-Elliott); 1 = independent losses.")
@click.option("--ber", type=click.FloatRange(0, 0.5), default=0.0, show_default=True,
              help="Bit error rate inside delivered packets (binary symmetric channel).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same losses.")
@click.option("--packet-bytes", type=click.IntRange(1, 65507), metavar="N",
              help="Cut a file that is not a packet stream (any codec's) into N-byte packets.")
@_overwrite_option
@_json_option
def channel(source: str, output: str, loss: float, burst: float, ber: float, seed: int,
            packet_bytes: int | None, overwrite: bool, as_json: bool) -> None:
    """Send a file through a lossy packet channel (a simulator, reproducible by --seed).

    A packet stream (sqgan encode --packet-bytes) travels packet by packet; damaged packets
    arrive damaged and the decoder's CRC drops them. Any other file is cut into --packet-bytes
    pieces; lost and damaged pieces are left out of what arrives."""
    from .channel import transmit
    from .imageio import write_atomic

    _check_stdout_use(output, as_json)
    try:
        data = read_input(source)
        arrived, report = transmit(data, loss=loss, burst=burst, ber=ber, seed=seed, packet_bytes=packet_bytes)
        if output == STDIO:
            write_stdout(arrived)
        else:
            write_atomic(output, arrived, overwrite=overwrite, input_path=None if source == STDIO else source)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    except (SqganError, JobError) as e:
        click.echo(f"{PROG}: error: {with_path(source, message_of(e))}", err=True)
        sys.exit(1)
    row = {"input": source, "output": output, "bytes_in": len(data), "bytes_out": len(arrived), **report.to_dict()}
    if as_json:
        click.echo(json.dumps(row))
    elif output != STDIO:
        click.echo(f"{PROG}: {report.packets} packets, {report.lost} lost, {report.damaged} damaged"
                   + (f" ({report.dropped_damaged} dropped)" if report.dropped_damaged else "")
                   + f"; {len(arrived):,} of {len(data):,} bytes arrived", err=True)


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
    plan = plan_jobs(inputs, output, recursive=recursive, accept=is_image_path,
                      out_suffix=DECODED_SUFFIX, what="images")
    if not overlay and not plan.mirror:
        suffix = Path(output).suffix.lower() if output != STDIO else ""
        if suffix not in ("", ".png"):
            raise click.UsageError(f"class-id maps are written as PNG; name the output .png, "
                                   f"not {suffix} (or use --overlay for a picture)")
    rep = start_report(plan, "segmenting", quiet, as_json)
    holder = _SegmenterHolder(spec, device, class_map)
    try:
        for batch in batches(plan.jobs, batch_size):
            _segment_batch(batch, holder, rep, plan.mirror, overlay=overlay, overwrite=overwrite)
    finally:
        rep.close()
    _finish(rep, plan, "segmented")


def _overlay_image(rgb, ids, colours):
    """The image blended with the classes' colours (the segmenter's vocabulary's)."""
    import numpy as np
    from PIL import Image

    colours = np.asarray(colours, dtype=np.float32)[ids]
    blend = rgb.astype(np.float32) * (1 - OVERLAY_ALPHA) + colours * OVERLAY_ALPHA
    return Image.fromarray(np.clip(np.rint(blend), 0, 255).astype(np.uint8))


def _segment_batch(batch: list[Job], holder: _SegmenterHolder, rep: Reporter, mirror: bool,
                   *, overlay: bool, overwrite: bool) -> None:
    import numpy as np
    from PIL import Image

    from .imageio import encode_image, save_image_atomic, write_atomic

    ready = load_ready(to_write(batch, rep, overwrite, False, None), rep)
    if not ready:
        return

    images = [loaded for _, loaded, _ in ready]
    seg = holder.get()  # a failure here (missing weights, bad model file, ...) is fatal
    from .classes import VOCABULARY

    vocabulary = getattr(seg, "vocabulary", VOCABULARY)  # a segmenter of another vocabulary says so
    results = run_batch(
        lambda items: seg.segment_many([li.rgb for li in items], names=[li.name for li in items]),
        images)
    for (job, loaded, t_load), (ids, seconds) in zip(ready, results):
        if isinstance(ids, BaseException):
            job_failed(rep, job, message_of(ids))
            continue
        try:
            prepare_folder(job, mirror)
            input_path = None if job.src == STDIO else job.src
            if overlay:
                picture = _overlay_image(loaded.rgb, ids, vocabulary.colours)
                if job.dst == STDIO:
                    write_stdout(encode_image(picture, "PNG"))
                else:
                    save_image_atomic(picture, job.dst, overwrite=overwrite, input_path=input_path)
            else:
                data = encode_image(Image.fromarray(np.ascontiguousarray(ids, np.uint8)), "PNG")
                if job.dst == STDIO:
                    write_stdout(data)
                else:
                    write_atomic(job.dst, data, overwrite=overwrite, input_path=input_path)
        except (SqganError, JobError) as e:
            job_failed(rep, job, message_of(e))
            continue
        counts = np.bincount(ids.ravel(), minlength=vocabulary.num_classes)
        rep.record({"input": job.src, "output": job.dst, "ok": True,
                    "width": loaded.width, "height": loaded.height,
                    "segmenter": getattr(seg, "name", str(seg)),
                    "classes": {vocabulary.names[c]: round(float(n) / ids.size, 4)
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
