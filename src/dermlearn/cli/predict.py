"""``dermlearn predict`` (one process or data-parallel), ``serve`` and ``export``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dermlearn.atomic import check_output_file
from dermlearn.cli.common import _positive_int, _threads, add_reading_options, inputs_from_args
from dermlearn.errors import DermlearnError
from dermlearn.parallel import STRATEGIES

#: ``--backend`` (predict and serve: one default, auto).
BACKENDS = ["auto", "torch", "onnx"]
BACKEND_HELP = ("inference engine: torch = PyTorch; onnx = ONNX Runtime on the model's ONNX export "
                "(made and cached on the fly); auto = ONNX Runtime when installed, else PyTorch "
                "(benchmarks/bench.py: ~2-3x faster on CPU)")


def _positive_float(text: str) -> float:
    """An argparse ``type`` for a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _columns(table, level: str | None) -> str:
    """'C classes' or 'G groups of LEVEL' for a prediction table (``image`` + one column each)."""
    return f"{len(table.columns) - 1} {'groups of ' + level if level else 'classes'}"


def _cmd_predict_distributed(args: argparse.Namespace, out: Path) -> int:
    from dermlearn.inference import UnreadableImagesError
    from dermlearn.inference.distributed import predict_distributed

    if getattr(args, "backend", "torch") not in ("torch", "auto"):
        raise DermlearnError("--devices/--num-nodes > 1 runs the torch backend (Lightning DDP); "
                             "drop --backend onnx or use one process")
    try:
        result = predict_distributed(args.model, inputs_from_args(args, args.inputs), out,
                                     devices=args.devices,
                                     num_nodes=args.num_nodes, strategy=args.strategy,
                                     level=args.level, tta=args.tta, batch_size=args.batch_size,
                                     num_workers=args.num_workers, progress=not args.quiet)
    except UnreadableImagesError as exc:  # the readable images' rows were written
        print(f"wrote {out}: {len(exc.table)} images x {_columns(exc.table, args.level)}")
        print(f"dermlearn: error: {exc}", file=sys.stderr)
        return 1
    if result is None:  # a worker process: rank 0 reports
        return 0
    print(f"wrote {result.out}: {result.n_images} images ({result.n_scored} scored now, "
          f"{result.n_reused} from {result.parts}) x {_columns(result.table, args.level)}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    out = check_output_file(args.out)
    if args.devices * args.num_nodes > 1:
        return _cmd_predict_distributed(args, out)
    from dermlearn.atomic import atomic_write
    from dermlearn.inference import UnreadableImagesError, predict

    unreadable = None
    try:
        table = predict(args.model, inputs_from_args(args, args.inputs), level=args.level,
                        tta=args.tta,
                        batch_size=args.batch_size, progress=not args.quiet,
                        backend=args.backend, threads=args.threads)
    except UnreadableImagesError as exc:  # the readable images' rows are still written
        table, unreadable = exc.table, exc
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f"))
    print(f"wrote {out}: {len(table)} images x {_columns(table, args.level)}")
    if unreadable is not None:
        print(f"dermlearn: error: {unreadable}", file=sys.stderr)
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from dermlearn.serving.server import serve

    return serve(args.model, host=args.host, port=args.port, backend=args.backend,
                 workers=args.workers, threads=args.threads, keep_uploads=args.keep_uploads,
                 max_upload_mb=args.max_upload_mb, max_megapixels=args.max_megapixels,
                 max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                 log_level=args.log_level, token_file=args.token_file, insecure=args.insecure,
                 ood=not args.no_ood, request_timeout_s=args.request_timeout_s,
                 keep_alive_s=args.keep_alive_s, max_concurrency=args.max_concurrency,
                 max_queue=args.max_queue, max_connections=args.max_connections,
                 max_parts=args.max_parts, max_header_kb=args.max_header_kb,
                 min_image_side=args.min_image_side)


def _cmd_export(args: argparse.Namespace) -> int:
    from dermlearn.inference.onnx_export import export_onnx, read_onnx_metadata
    from dermlearn.serving.server import terminate_cleanly

    _remove_stale_temporaries(Path(args.out))
    with terminate_cleanly():  # `kill` mid-export: the temporary file is removed on the way out
        out = export_onnx(args.model, args.out, opset=args.opset)
    meta = read_onnx_metadata(out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB, ONNX opset {args.opset}, dynamic "
          f"batch): model {meta['model_id']} {meta['model_version']}, "
          f"{len(json.loads(meta['classes']))} classes, {meta['ensemble_members']} member(s), "
          f"input {meta['input_size']}, temperature {float(meta['temperature']):.3g}")
    return 0


#: A leftover temporary file of an export older than this was left by a killed process (s).
STALE_TEMPORARY_S = 3600


def _remove_stale_temporaries(out: Path) -> None:
    """Remove ``.OUT.<hex>.tmp`` files that an export killed beyond cleaning up (``kill -9``)
    left beside ``out`` over :data:`STALE_TEMPORARY_S` ago (younger ones may be a running
    export's)."""
    import time

    if not out.parent.is_dir():
        return
    stale = [p for p in out.parent.glob(f".{out.name}.*.tmp")
             if p.is_file() and time.time() - p.stat().st_mtime > STALE_TEMPORARY_S]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        print(f"removed {len(stale)} temporary file(s) left by an interrupted export of {out}")


def add_predict_commands(commands: argparse._SubParsersAction) -> None:
    """The ``predict``, ``serve`` and ``export`` commands."""
    pred = commands.add_parser("predict", help="score images with a trained model (ISIC CSV)")
    pred.add_argument("model", help="model directory (RUN/model or RUN)")
    pred.add_argument("inputs", nargs="+", help="image files, a folder of images, or a dataset")
    pred.add_argument("--out", default="predictions.csv",
                      help="output CSV: image, then one probability column per class")
    pred.add_argument("--level", help="taxonomy level via PA (e.g. malignant_vs_benign, esteva3)")
    pred.add_argument("--tta", type=int, default=1, help="test-time views to average (1-8)")
    pred.add_argument("--batch-size", type=_positive_int, default=32,
                      help="images per model call")
    pred.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_parallel_flags(pred, "shards the images over the processes, writes OUT.parts/rank-K.csv "
                        "and merges them into OUT; run again to resume", default=1)
    pred.add_argument("--num-workers", type=int, default=2,
                      help="decoding workers per process (with --devices > 1)")
    pred.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    pred.add_argument("--threads", type=_threads, default=None,
                      help="intra-op threads of the backend (default: all cores)")
    add_reading_options(pred, lenient=False)  # unreadable images are named, never fatal
    pred.set_defaults(func=_cmd_predict)

    srv = commands.add_parser("serve", help="web service + page for one model (FastAPI)")
    srv.add_argument("model", help="model directory (RUN/model or RUN)")
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (put a reverse proxy with TLS in front for "
                     "anything but the loopback address)")
    srv.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    srv.add_argument("--backend", choices=BACKENDS, default="auto",
                     help=BACKEND_HELP + "; explanations always use PyTorch")
    srv.add_argument("--workers", type=_positive_int, default=1,
                     help="uvicorn worker processes, each with its own copy of the model")
    srv.add_argument("--threads", type=_threads, default=None,
                     help="intra-op threads per worker (default: cores / workers)")
    srv.add_argument("--keep-uploads", metavar="DIR", default=None,
                     help="save every uploaded photo into DIR (default: uploads are never "
                     "written to disk)")
    srv.add_argument("--max-upload-mb", type=float, default=20.0,
                     help="largest accepted upload in MB (413 above)")
    srv.add_argument("--max-megapixels", type=float, default=64.0,
                     help="largest accepted image in megapixels, checked before decoding "
                     "(413 above)")
    srv.add_argument("--max-batch", type=_positive_int, default=16,
                     help="micro-batching: most images per model call")
    srv.add_argument("--max-wait-ms", type=float, default=5.0,
                     help="micro-batching: longest wait in ms for more images while other "
                     "requests are being decoded")
    srv.add_argument("--log-level", default="info",
                     choices=["critical", "error", "warning", "info", "debug"],
                     help="log level of the server and the service")
    access = srv.add_argument_group("access", "who may use the service (docs/serving.md, "
                                    "Deploying)")
    access.add_argument("--token-file", metavar="FILE", default=None,
                        help="file whose first line is the bearer token that /v1/* and "
                        "/metrics require ('Authorization: Bearer TOKEN'; at least 16 "
                        "characters); without it the DERMLEARN_TOKEN environment variable, "
                        "else no token")
    access.add_argument("--insecure", action="store_true",
                        help="allow a --host other than loopback without a token (only behind "
                        "a proxy or network policy that controls access)")
    access.add_argument("--no-ood", action="store_true",
                        help="serve with the out-of-distribution screen off; without it, a "
                        "model whose screen is missing, corrupt or stale is refused. The model "
                        "card and every response then say the screen is off")
    limits = srv.add_argument_group("limits", "what one client may cost the service; beyond "
                                    "each, a JSON error")
    limits.add_argument("--request-timeout-s", type=_positive_float, default=30.0,
                        help="seconds a client has to send a request's head and body, from its "
                        "first byte (408 after)")
    limits.add_argument("--keep-alive-s", type=_positive_float, default=5.0,
                        help="seconds an idle connection (a new one included) is kept open")
    limits.add_argument("--max-concurrency", type=_positive_int, default=64,
                        help="requests handled at once, health probes not counted (503 with "
                        "Retry-After above)")
    limits.add_argument("--max-queue", type=_positive_int, default=32,
                        help="predictions decoding or waiting for the model (503 with "
                        "Retry-After above)")
    limits.add_argument("--max-connections", type=_positive_int, default=256,
                        help="open connections, idle ones included (503 with Retry-After "
                        "above)")
    limits.add_argument("--max-parts", type=_positive_int, default=16,
                        help="parts in one multipart upload (413 above; parsing stops there)")
    limits.add_argument("--max-header-kb", type=_positive_int, default=16,
                        help="size of a request's head in KiB (431 above)")
    limits.add_argument("--min-image-side", type=_positive_int, default=32,
                        help="shortest accepted image side in pixels (422 unusable_image "
                        "below)")
    srv.set_defaults(func=_cmd_serve)

    exp = commands.add_parser("export", help="export a model to ONNX (one file, with metadata)")
    exp.add_argument("model", help="model directory (RUN/model or RUN)")
    exp.add_argument("--format", choices=["onnx"], default="onnx",
                     help="file format (ONNX only)")
    exp.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    exp.add_argument("--opset", type=int, default=17, help="ONNX opset")
    exp.set_defaults(func=_cmd_export)


def _add_parallel_flags(parser: argparse.ArgumentParser, what: str,
                        default: int | None = None) -> None:
    """--devices / --num-nodes / --strategy: Lightning DDP (docs/scaling.md)."""
    parser.add_argument("--devices", type=int, default=default,
                        help=f"data-parallel processes (CPU) or GPUs per node; {what}")
    parser.add_argument("--num-nodes", type=int, default=default,
                        help="machines (launch with torchrun or srun, see docs/scaling.md)")
    parser.add_argument("--strategy", choices=list(STRATEGIES),
                        default="auto" if default else None,
                        help="Lightning launcher (auto: ddp from the command line)")
