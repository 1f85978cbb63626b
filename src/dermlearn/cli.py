"""``dermlearn`` command line: thin commands over the Python API.

Every user error (a :class:`~dermlearn.errors.DermlearnError`) is printed as one clear message
and exits with status 2 (1 when ``data inspect`` found problems); no traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dermlearn import __version__
from dermlearn.atomic import check_output_file
from dermlearn.errors import DermlearnError
from dermlearn.evaluation.summary import format_metrics


# -- data ---------------------------------------------------------------------------
def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from dermlearn.data import load

    manifest = load(args.data, taxonomy=args.taxonomy, strict=False,
                    check_images=args.check_images, progress=not args.json)
    summary = manifest.summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(_format_summary(summary))
    return 1 if any(p.severity == "error" for p in manifest.problems) else 0


def _format_summary(summary: dict) -> str:
    lines = [f"{summary['source']}  (format: {summary['format']}, taxonomy: {summary['taxonomy']})",
             f"  images: {summary['n_images']}   lesions: {summary['n_lesions']}   "
             f"patients: {summary['n_patients']}", "", f"  {'class':<24}{'images':>8}{'lesions':>9}"]
    for label, counts in summary["per_class"].items():
        lines.append(f"  {label:<24}{counts['images']:>8}{counts['lesions']:>9}")
    lines += ["", "  metadata completeness: " + ", ".join(
        f"{k} {v:.0%}" for k, v in summary["metadata_completeness"].items())]
    problems = summary["problems"]
    errors = [p for p in problems if p["severity"] == "error"]
    lines += ["", f"  problems: {len(errors)} error(s), {len(problems) - len(errors)} warning(s)"]
    for p in problems:
        where = p["row"] or p["file"] or ""
        lines.append(f"    [{p['kind']}{'' if p['severity'] == 'error' else ', warning'}] "
                     f"{where}: {p['message']}")
    return "\n".join(lines)


def _cmd_data_split(args: argparse.Namespace) -> int:
    from dermlearn.data import load
    from dermlearn.splits import make_splits, save_splits, split_summary

    check_output_file(args.out)
    manifest = load(args.data, taxonomy=args.taxonomy)
    splits = make_splits(manifest, args.folds, test_fraction=args.test_fraction,
                         group=args.group, seed=args.seed)
    out = save_splits(splits, args.out)
    print(split_summary(splits).to_string())
    print(f"\nwrote {out} ({len(splits)} images; no {args.group} in two parts)")
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from dermlearn.data.download import describe, download_dataset

    print(describe(args.dataset))
    dest = download_dataset(args.dataset, args.dest, mirror=args.mirror, progress=True)
    print(f"\n{args.dataset} is in {dest}; try: dermlearn data inspect {dest}")
    return 0


# -- taxonomy ---------------------------------------------------------------------------
def _cmd_taxonomy_show(args: argparse.Namespace) -> int:
    from dermlearn.taxonomy import load_taxonomy, partition

    taxonomy = load_taxonomy(args.taxonomy)
    counts = None
    if args.data:
        from dermlearn.data import load

        counts = load(args.data, taxonomy=taxonomy).class_counts()
    print(taxonomy.render(counts=counts))
    print("\nlevels: " + ", ".join(f"{name} ({len(groups)})"
                                   for name, groups in taxonomy.levels.items()))
    if counts is not None:
        classes = partition(taxonomy, counts, args.max_class_size)
        print(f"\ntraining classes (partitioning, max class size {args.max_class_size}): "
              + ", ".join(classes))
    return 0


# -- train / predict ------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from dermlearn.training import get_recipe, load_recipe
    from dermlearn.training.recipe_flags import recipe_overrides

    overrides = recipe_overrides(args)  # the recipe flags given (generated from the Recipe)
    if args.resume:  # the run's own settings, from its run.json: nothing else may be asked
        from dermlearn.training.runs import refuse_resume_options

        named = {"DATA": args.data, "--out": args.out, "--config": args.config,
                 "--set": args.set, "--splits": args.splits, "--feature-cache": args.feature_cache,
                 "--recipe": args.recipe != "default", "--device": args.device != "auto",
                 "--taxonomy": args.taxonomy}
        refuse_resume_options(f"--resume {args.resume}",
                              [f"--{k.replace('_', '-')}" for k in overrides]
                              + [flag for flag, value in named.items() if value])
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise DermlearnError(f"--set expects FIELD=VALUE, got {item!r}")
        overrides[key.strip()] = _parse_value(value)
    if args.resume:
        from dermlearn.training.run import train

        metrics = train(out=args.resume, resume=True, progress=not args.quiet)
        out = args.resume
    else:
        if args.data is None or args.out is None:
            raise DermlearnError("train needs DATA and --out RUN (or --resume RUN)")
        if args.config and args.recipe != "default":
            raise DermlearnError("give the base recipe either as --recipe or as 'recipe: NAME' "
                                 f"in {args.config}, not both")
        # Checked here, before the training stack is imported: a wrong value names its field.
        recipe = load_recipe(args.config, **overrides) if args.config else \
            get_recipe(args.recipe, **overrides)
        from dermlearn.training.run import train

        metrics = train(args.data, args.out, recipe=recipe, splits=args.splits,
                        device=args.device, progress=not args.quiet,
                        feature_cache=args.feature_cache, taxonomy=args.taxonomy)
        out = args.out
    if not metrics:  # a worker process of a data-parallel run: rank 0 reports
        return 0
    print(format_metrics(metrics))
    history = (f"   history: {_join(out, 'history.csv')}"
               if (Path(out) / "history.csv").exists() else "")
    print(f"\nmodel: {_join(out, 'model')}   metrics: {_join(out, 'metrics.json')}{history}")
    return 0


def _columns(table, level: str | None) -> str:
    """'C classes' or 'G groups of LEVEL' for a prediction table (``image`` + one column each)."""
    return f"{len(table.columns) - 1} {'groups of ' + level if level else 'classes'}"


def _cmd_predict_distributed(args: argparse.Namespace) -> int:
    from dermlearn.inference import UnreadableImagesError
    from dermlearn.inference.distributed import predict_distributed

    if getattr(args, "backend", "torch") not in ("torch", "auto"):
        raise DermlearnError("--devices/--num-nodes > 1 runs the torch backend (Lightning DDP); "
                             "drop --backend onnx or use one process")
    try:
        result = predict_distributed(args.model, args.inputs, args.out, devices=args.devices,
                                     num_nodes=args.num_nodes, strategy=args.strategy,
                                     level=args.level, tta=args.tta, batch_size=args.batch_size,
                                     num_workers=args.num_workers, progress=not args.quiet)
    except UnreadableImagesError as exc:  # the readable images' rows were written
        print(f"wrote {args.out}: {len(exc.table)} images x {_columns(exc.table, args.level)}")
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
        return _cmd_predict_distributed(args)
    from dermlearn.atomic import atomic_write
    from dermlearn.inference import UnreadableImagesError, predict

    unreadable = None
    try:
        table = predict(args.model, args.inputs, level=args.level, tta=args.tta,
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


# -- serving and export -----------------------------------------------------------------------
def _cmd_serve(args: argparse.Namespace) -> int:
    from dermlearn.serving.server import serve

    return serve(args.model, host=args.host, port=args.port, backend=args.backend,
                 workers=args.workers, threads=args.threads, keep_uploads=args.keep_uploads,
                 max_upload_mb=args.max_upload_mb, max_megapixels=args.max_megapixels,
                 max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                 log_level=args.log_level)


def _cmd_export(args: argparse.Namespace) -> int:
    from dermlearn.inference.onnx_export import export_onnx, read_onnx_metadata

    out = export_onnx(args.model, args.out, opset=args.opset)
    meta = read_onnx_metadata(out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB, ONNX opset {args.opset}, dynamic "
          f"batch): model {meta['model_id']} {meta['model_version']}, "
          f"{len(json.loads(meta['classes']))} classes, {meta['ensemble_members']} member(s), "
          f"input {meta['input_size']}, temperature {float(meta['temperature']):.3g}")
    return 0


# -- evaluation and explanation ---------------------------------------------------------------
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dermlearn.evaluation.evaluate import evaluate_model, evaluate_predictions_csv

    if (args.model is None) == (args.predictions is None):
        raise DermlearnError("evaluate needs a MODEL or --predictions CSV (one of them)")
    if args.model is not None and args.taxonomy is not None:
        raise DermlearnError("--taxonomy is for --predictions: a model reads the data with the "
                             "taxonomy it was trained with")
    if args.predictions:
        metrics = evaluate_predictions_csv(args.predictions, args.data, out=args.out,
                                           taxonomy=args.taxonomy, readers=args.readers,
                                           n_boot=args.bootstrap, seed=args.seed)
    else:
        metrics = evaluate_model(args.model, args.data, args.out, part=args.part, tta=args.tta,
                                 readers=args.readers, n_boot=args.bootstrap, seed=args.seed,
                                 explain=None if args.explain == "none" else args.explain,
                                 embed=not args.no_embed, progress=not args.quiet)
    if args.model is not None:
        print(f"scored {metrics['source']['evaluated on']}")
    print(format_metrics(metrics))
    print(f"ECE {metrics['ece']:.3f}")
    report = Path(args.out) / "report.html"
    print(f"\nmetrics: {_join(args.out, 'metrics.json')}"
          + (f"   report: {report}" if report.exists() else ""))
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from dermlearn.explain import explain_to_dir
    from dermlearn.inference import Predictor, resolve_inputs
    from dermlearn.inference.unseen import unseen_images

    predictor = Predictor.load(args.model)
    inputs = resolve_inputs(args.images)
    scope = unseen_images(predictor, inputs.ids, args.part, source=" ".join(args.images))
    print(f"explaining {scope.description}")
    written = explain_to_dir(predictor, [inputs.paths[i] for i in scope.rows], args.out,
                             method=args.method)
    print(f"wrote {len(written)} {args.method} overlays to {_join(args.out)}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from dermlearn.data import load
    from dermlearn.explain import embed_unseen
    from dermlearn.inference import Predictor

    predictor = Predictor.load(args.model)
    written, described = embed_unseen(predictor, load(args.data, taxonomy=predictor.taxonomy),
                                      args.out, part=args.part, seed=args.seed,
                                      progress=not args.quiet)
    print(f"embedded {described}")
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def _join(folder: str, name: str = "") -> str:
    """``folder/name`` as the user would write it (no doubled slash)."""
    return str(Path(folder) / name) if name else str(Path(folder)) + "/"


def _parse_value(text: str):
    """A ``--set`` value read as YAML: a number, true/false, null, a [list] or text."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DermlearnError(f"--set value {text!r} is not valid YAML ({exc.problem})") from None


#: ``--part``: which images a model may be scored on (dermlearn.inference.unseen).
PARTS = ("auto", "val", "test", "all")
PART_HELP = ("images to score: auto (default) = every image the model never trained on (a "
             "fold ensemble's run images by the member that held them out; the run's test "
             "part left for 'test'); val = the run's validation images; test = its test part; "
             "all = every image, refused if any trained the model")

#: ``--taxonomy``'s help: how a dataset's labels are read.
TAXONOMY_HELP = "diagnosis tree: built-in name, YAML/JSON file, or 'flat' (default: dermatology)"


# -- demo -----------------------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    from dermlearn.demo import run_demo

    run_demo(args.out, data=args.data, seed=args.seed, max_class_size=args.max_class_size)
    return 0


def _int_at_least(minimum: int, what: str):
    """An argparse ``type`` for integers >= ``minimum`` (``what`` says so in the error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_threads = _int_at_least(0, "a number of threads >= 1 (or 0: all cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dermlearn", description="Skin-lesion classification by transfer learning: data, "
        "taxonomy, lesion-safe splits, training, evaluation, explanation and serving.")
    parser.add_argument("--version", action="version", version=f"dermlearn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="inspect, split and download datasets")
    data_cmds = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    data_help = ("dataset path (format auto-detected) or FORMAT:PATH, FORMAT one of "
                 "ham10000, isic, ph2, folder, csv")

    inspect = data_cmds.add_parser("inspect", help="counts per class, metadata, every problem")
    inspect.add_argument("data", help=data_help)
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument("--check-images", action="store_true",
                         help="also decode every image to find unreadable ones")
    inspect.add_argument("--taxonomy", default="dermatology", help=TAXONOMY_HELP)
    inspect.set_defaults(func=_cmd_data_inspect)

    split = data_cmds.add_parser("split", help="stratified, lesion-grouped folds")
    split.add_argument("data", help=data_help)
    split.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    split.add_argument("--test-fraction", type=float, default=0.0,
                       help="share held out as fold 'test' (default 0)")
    split.add_argument("--group", choices=["lesion", "patient"], default="lesion")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--out", default="splits.csv", help="output CSV (default splits.csv)")
    split.add_argument("--taxonomy", default="dermatology", help=TAXONOMY_HELP)
    split.set_defaults(func=_cmd_data_split)

    download = data_cmds.add_parser("download", help="fetch a public dataset (resumable)")
    download.add_argument("dataset", choices=["ham10000", "isic2019", "ph2"])
    download.add_argument("dest", help="destination folder")
    download.add_argument("--mirror", default=None,
                          help="base URL of a mirror holding the same file names "
                               "(also DERMLEARN_DOWNLOAD_MIRROR)")
    download.set_defaults(func=_cmd_data_download)

    taxonomy = commands.add_parser("taxonomy", help="show a diagnosis tree and its partitioning")
    tax_cmds = taxonomy.add_subparsers(dest="taxonomy_command", required=True, metavar="SUBCOMMAND")
    show = tax_cmds.add_parser("show", help="print the tree, its levels and training classes")
    show.add_argument("--taxonomy", default="dermatology")
    show.add_argument("--data", default=None, help="count images per node from this dataset")
    show.add_argument("--max-class-size", type=int, default=1000,
                      help="partitioning threshold (Esteva: 1000)")
    show.set_defaults(func=_cmd_taxonomy_show)

    train = commands.add_parser("train", help="fine-tune a pretrained CNN (transfer learning)")
    train.add_argument("data", nargs="?", help=data_help)
    train.add_argument("--out", help="run directory to create")
    train.add_argument("--recipe", default="default",
                       help="default | esteva2017 | benedetti2020 (see docs)")
    train.add_argument("--config", help="YAML/JSON file of recipe fields (recipe: NAME as base)")
    train.add_argument("--set", action="append", metavar="FIELD=VALUE",
                       help="override any recipe field, e.g. --set label_smoothing=0")
    train.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    train.add_argument("--splits", help="use this split CSV (checked for lesion leakage)")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where to train (auto: cuda when available; default auto)")
    train.add_argument("--feature-cache", help="feature cache folder (features mode)")
    train.add_argument("--taxonomy", help=TAXONOMY_HELP + "; saved with the run and the model")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    from dermlearn.training.recipe_flags import add_recipe_flags

    add_recipe_flags(train.add_argument_group(
        "recipe fields", "override the base recipe's value (defaults shown: the default "
        "recipe's); every other field: --set FIELD=VALUE"))
    train.set_defaults(func=_cmd_train)

    pred = commands.add_parser("predict", help="score images with a trained model (ISIC CSV)")
    pred.add_argument("model", help="model directory (RUN/model or RUN)")
    pred.add_argument("inputs", nargs="+", help="image files, a folder of images, or a dataset")
    pred.add_argument("--out", default="predictions.csv")
    pred.add_argument("--level", help="taxonomy level via PA (e.g. malignant_vs_benign, esteva3)")
    pred.add_argument("--tta", type=int, default=1, help="test-time views to average (1-8)")
    pred.add_argument("--batch-size", type=_positive_int, default=32)
    pred.add_argument("--quiet", action="store_true")
    _add_parallel_flags(pred, "shards the images over the processes, writes OUT.parts/rank-K.csv "
                        "and merges them into OUT; run again to resume", default=1)
    pred.add_argument("--num-workers", type=int, default=2,
                      help="decoding workers per process (with --devices > 1; default 2)")
    pred.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                      help="inference engine: PyTorch, or ONNX Runtime on the model's ONNX "
                      "export (made and cached on the fly); auto (default): ONNX Runtime when "
                      "installed, else PyTorch (benchmarks/bench.py: ~2-3x faster on CPU)")
    pred.add_argument("--threads", type=_threads, default=None,
                      help="intra-op threads of the backend (default: all cores)")
    pred.set_defaults(func=_cmd_predict)

    srv = commands.add_parser("serve", help="web service + page for one model (FastAPI)")
    srv.add_argument("model", help="model directory (RUN/model or RUN)")
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; put a reverse proxy with "
                     "TLS in front for anything else)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                     help="inference engine (default torch); explanations always use torch")
    srv.add_argument("--workers", type=_positive_int, default=1,
                     help="uvicorn worker processes, each with its own copy of the model")
    srv.add_argument("--threads", type=_threads, default=None,
                     help="intra-op threads per worker (default: cores / workers)")
    srv.add_argument("--keep-uploads", metavar="DIR", default=None,
                     help="save every uploaded photo into DIR (default: uploads are never "
                     "written to disk)")
    srv.add_argument("--max-upload-mb", type=float, default=20.0,
                     help="largest accepted upload in MB (default 20; 413 above)")
    srv.add_argument("--max-megapixels", type=float, default=64.0,
                     help="largest accepted image in megapixels, checked before decoding "
                     "(default 64; 413 above)")
    srv.add_argument("--max-batch", type=_positive_int, default=16,
                     help="micro-batching: most images per model call (default 16)")
    srv.add_argument("--max-wait-ms", type=float, default=5.0,
                     help="micro-batching: longest wait for more images while other requests "
                     "are being decoded (default 5 ms)")
    srv.add_argument("--log-level", default="info",
                     choices=["critical", "error", "warning", "info", "debug"])
    srv.set_defaults(func=_cmd_serve)

    exp = commands.add_parser("export", help="export a model to ONNX (one file, with metadata)")
    exp.add_argument("model", help="model directory (RUN/model or RUN)")
    exp.add_argument("--format", choices=["onnx"], default="onnx")
    exp.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    exp.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    exp.set_defaults(func=_cmd_export)

    ev = commands.add_parser("evaluate", help="metrics, figures and report.html for a model "
                             "(or a predictions CSV) on a dataset")
    ev.add_argument("model", nargs="?", help="model directory (RUN/model or RUN)")
    ev.add_argument("data", help=data_help)
    ev.add_argument("--out", required=True, help="output folder (metrics.json, report.html)")
    ev.add_argument("--predictions", help="score this ISIC-format CSV instead of a model")
    ev.add_argument("--taxonomy", help="with --predictions: " + TAXONOMY_HELP)
    ev.add_argument("--readers", help="CSV of reader operating points: name, sensitivity, "
                    "specificity[, task]")
    ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs")
    ev.add_argument("--part", choices=PARTS, default="auto", help=PART_HELP)
    ev.add_argument("--tta", type=int, default=1, help="test-time views to average (1-8)")
    ev.add_argument("--explain", choices=["saliency", "gradcam", "none"], default="saliency")
    ev.add_argument("--no-embed", action="store_true", help="skip the t-SNE embedding")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=_cmd_evaluate)

    ex = commands.add_parser("explain", help="saliency / Grad-CAM overlays for images")
    ex.add_argument("model", help="model directory (RUN/model or RUN)")
    ex.add_argument("images", nargs="+", help="image files or a folder of images")
    ex.add_argument("--out", required=True, help="output folder for the overlays")
    ex.add_argument("--method", choices=["saliency", "gradcam"], default="saliency",
                    help="saliency: input gradients (Esteva); gradcam: class activation of the "
                    "last convolutional stage (default saliency)")
    ex.add_argument("--part", choices=PARTS, default="auto", help=PART_HELP)
    ex.set_defaults(func=_cmd_explain)

    em = commands.add_parser("embed", help="t-SNE of penultimate features (PNG + CSV)")
    em.add_argument("model", help="model directory (RUN/model or RUN)")
    em.add_argument("data", help=data_help)
    em.add_argument("--out", required=True,
                    help="output folder (tsne.csv, tsne_by_class.png, tsne_by_correctness.png)")
    em.add_argument("--part", choices=PARTS, default="auto", help=PART_HELP)
    em.add_argument("--seed", type=int, default=0, help="t-SNE random state (default 0)")
    em.add_argument("--quiet", action="store_true", help="no progress bars")
    em.set_defaults(func=_cmd_embed)

    demo = commands.add_parser("demo", help="run the main job end to end")
    demo.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    demo.add_argument("--data", default=None,
                      help="real dataset to use instead of the generated synthetic one")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--max-class-size", type=_positive_int, default=None,
                      help="train on Esteva's partitioning of the taxonomy (default: one class "
                           "per diagnosis)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def _add_parallel_flags(parser: argparse.ArgumentParser, what: str,
                        default: int | None = None) -> None:
    """--devices / --num-nodes / --strategy: Lightning DDP (docs/scaling.md)."""
    parser.add_argument("--devices", type=int, default=default,
                        help=f"data-parallel processes (CPU) or GPUs per node; {what}")
    parser.add_argument("--num-nodes", type=int, default=default,
                        help="machines (launch with torchrun or srun, see docs/scaling.md)")
    parser.add_argument("--strategy", choices=["auto", "ddp", "ddp_spawn"],
                        default="auto" if default else None,
                        help="Lightning launcher (auto: ddp from the command line)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DermlearnError as exc:
        print(f"dermlearn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dermlearn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
