"""The ``dataworth`` command line: parses arguments, calls the library, prints with rich.

Every user-facing failure is one line on stderr (``error: ...``) and exit code 2; every warning one
line (``warning: ...``). No command writes over one of its inputs, and the outputs of one command
appear together or not at all. Methods are not special-cased here: options that set an estimator
parameter (``--bandwidth``, ``--param``) apply to any method that has it, ``--term`` to any method
that offers terms, ``--state-out`` / ``update`` to any method with online updates.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

import dataworth
from dataworth.checkpoint import Checkpoint
from dataworth.checks import DataworthError, DataworthWarning, InputError, check_choice, check_fraction, check_int, check_positive
from dataworth.data import TABLE_SUFFIXES, check_not_inputs, check_output_path, load_datasets, write_together
from dataworth.methods import METHODS
from dataworth.report.files import attribution_report_from_files, report_from_files
from dataworth.report.plots import method_bars
from dataworth.result import sidecar_path
from dataworth.valuation import ONLINE_METHODS, Valuator, load_state
from dataworth.valuation.issue_types import ISSUE_TYPES

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import NoArgsIsHelpError, UsageError

console = Console(soft_wrap=True)
#: Estimator parameters the CLI sets itself, and the option to use instead.
RESERVED_PARAMS = {"bandwidth": "--bandwidth", "label_kernel": "--label-kernel", "device": "--device", "progress": "(always on)"}
#: A deprecation torch's forward-mode autodiff (torch.func.jvp) raises about its own internals; not the user's concern.
TORCH_NOISE = "`torch.jit.script` is deprecated"
#: Estimator parameters that may take a Python object (a model, a stopping rule): set in Python, not as
#: text, unless the method's default for them is text (cleanlab's model="logistic" | "knn").
OBJECT_PARAMS = ("estimator", "model", "models", "checkpoints", "learning_rates", "stopping", "solver", "solver_options")


def _text_params(method: str) -> list[str]:
    """The parameters of ``method`` that ``--param KEY=VALUE`` can set."""
    defaults = METHODS[method]().get_params()
    return sorted(k for k, v in defaults.items() if k not in RESERVED_PARAMS and (k not in OBJECT_PARAMS or isinstance(v, str)))


def _method_help() -> str:
    """One line per method: its --param keys and terms (shown under ``dataworth value --help``)."""
    lines = []
    for name, cls in METHODS.items():
        keys = _text_params(name)
        terms = f"; --term {', '.join(('combined', *cls.terms))}" if cls.terms else ""
        online = "; --state-out" if name in ONLINE_METHODS else ""
        lines.append(f"{name}: --param {', '.join(keys)}{terms}{online}")
    return "Methods and their options:\n\n" + "\n\n".join(lines)


def _version(show: bool) -> None:
    if show:
        print(f"dataworth {dataworth.__version__}")
        raise typer.Exit()


app = typer.Typer(
    help="What is each piece of your training data worth?",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """What is each piece of your training data worth?"""


LabelColumn = Annotated[str | None, typer.Option("--label-column", help="Label column of .csv/.parquet inputs ('label' by default).")]
FeatureColumns = Annotated[str | None, typer.Option("--feature-columns", help="Comma-separated feature columns of .csv/.parquet inputs to use.")]
DropColumns = Annotated[str | None, typer.Option("--drop-columns", help="Comma-separated columns of .csv/.parquet inputs to ignore.")]
IdColumn = Annotated[str | None, typer.Option("--id-column", help="A column of .csv/.parquet inputs that names the rows (written as 'name').")]
Term = Annotated[str, typer.Option("--term", help="Which value goes in the 'value' column: combined, or a term of the method (kairos: feature, label).")]
Issues = Annotated[
    bool,
    typer.Option("--issues/--no-issues", help="Add the columns issue, issue_q, duplicate_of: why each flagged row is bad (kairos)."),
]
IssueThreshold = Annotated[
    float, typer.Option("--issue-threshold", help="Flag rows whose q-value is at most this (the flagged rows' false discovery rate is at most about twice it).")
]
Params = Annotated[
    list[str] | None,
    typer.Option("--param", help="KEY=VALUE, any parameter of the method's estimator (repeatable), e.g. solver=exact for lava."),
]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """DataworthError/OSError become one ``error:`` line on stderr and exit code 2; each warning one ``warning:`` line."""

    def show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        print(f"warning: {_one_line(str(message))}", file=sys.stderr)

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each distinct warning once
            warnings.filterwarnings("ignore", message=TORCH_NOISE)
            warnings.showwarning = show_warning
            try:
                return command(*args, **kwargs)
            except (DataworthError, OSError) as exc:
                message = str(exc) if isinstance(exc, DataworthError) else f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
                print(f"error: {_one_line(message)}", file=sys.stderr)
                raise typer.Exit(2) from None

    return wrapper


@app.command(epilog=_method_help())
@_reports_errors
def value(
    train: Annotated[str, typer.Argument(help="Training data: .npz (X, y), .npy (features), .csv or .parquet.")],
    reference: Annotated[str, typer.Option("--reference", help="Clean reference set, same formats.")],
    out: Annotated[str, typer.Option("--out", help="Output table: .csv or .parquet.")],
    method: Annotated[str, typer.Option("--method", help=f"Valuation method: {', '.join(METHODS)}.")] = "kairos",
    label_column: LabelColumn = None,
    feature_columns: FeatureColumns = None,
    drop_columns: DropColumns = None,
    id_column: IdColumn = None,
    bandwidth: Annotated[str | None, typer.Option("--bandwidth", help="'median' or a number > 0 (methods with a kernel).")] = None,
    label_kernel: Annotated[str | None, typer.Option("--label-kernel", help="none or indicator (kairos).")] = None,
    term: Term = "combined",
    state_out: Annotated[str | None, typer.Option("--state-out", help="Save the state for 'dataworth update' (.npz).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (methods that run on a device).")] = None,
    param: Params = None,
    issues: Issues = True,
    issue_threshold: IssueThreshold = 0.1,
) -> None:
    """Value every row of TRAIN against a clean reference set."""
    check_choice(method, "--method", tuple(METHODS))
    check_fraction(issue_threshold, "--issue-threshold", open_interval=True)
    cls = METHODS[method]
    params = _parse_params(param or [], method)
    shortcuts = {"--bandwidth": ("bandwidth", None if bandwidth is None else _parse_bandwidth(bandwidth)),
                 "--label-kernel": ("label_kernel", label_kernel), "--device": ("device", device)}
    for flag, (key, given) in shortcuts.items():
        if given is not None:
            if key not in cls().get_params():
                raise InputError(f"{flag} does not apply to --method {method} (it has no {key} parameter)")
            params[key] = given
    _check_term(term, method)
    if state_out is not None and method not in ONLINE_METHODS:
        raise InputError(f"--state-out: {method} has no online updates (methods with them: {', '.join(ONLINE_METHODS)})")
    out_path, state_path = _output_paths(out, state_out, inputs={"TRAIN": train, "--reference": reference})
    columns = _column_options(label_column, feature_columns, drop_columns, id_column)
    loaded = load_datasets({"TRAIN": train, "REF": reference}, **columns)
    train_data, ref_data = loaded["TRAIN"], loaded["REF"]
    if "progress" in cls().get_params():
        params["progress"] = True
    estimator = cls(**params).fit(train_data, reference=ref_data)
    _write(estimator, term, out_path, state_path, issues, issue_threshold)


@app.command()
@_reports_errors
def update(
    state: Annotated[str, typer.Option("--state", help="State written by 'value --state-out' (.npz).")],
    add: Annotated[str, typer.Option("--add", help="New rows, in any input format.")],
    out: Annotated[str, typer.Option("--out", help="Output table for all rows: .csv or .parquet.")],
    state_out: Annotated[str | None, typer.Option("--state-out", help="Save the updated state (.npz).")] = None,
    label_column: Annotated[str | None, typer.Option("--label-column", help="Label column of a .csv/.parquet NEW file (default: the one of 'value').")] = None,
    feature_columns: FeatureColumns = None,
    drop_columns: DropColumns = None,
    id_column: Annotated[str | None, typer.Option("--id-column", help="The id column of a .csv/.parquet NEW file (default: the one of 'value').")] = None,
    term: Term = "combined",
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: the state's).")] = None,
    issues: Issues = True,
    issue_threshold: IssueThreshold = 0.1,
) -> None:
    """Add rows to a saved state (online update) and write the values of all rows."""
    check_fraction(issue_threshold, "--issue-threshold", open_interval=True)
    out_path, state_path = _output_paths(out, state_out, inputs={"--state": state, "--add": add})
    estimator = load_state(state, device=device)
    _check_term(term, estimator.method)
    if Path(add).suffix.lower() in TABLE_SUFFIXES:  # the columns 'value' used, unless given
        label_column = label_column if label_column is not None else getattr(estimator, "label_column_", None)
        id_column = id_column if id_column is not None else getattr(estimator, "id_column_", None)
    columns = _column_options(label_column, feature_columns, drop_columns, id_column)
    new_data = load_datasets({"NEW": add}, **columns)["NEW"]
    if id_column is not None and new_data.names is None:
        raise InputError(f"NEW has no id column {id_column!r}; give it one, or name another with --id-column")
    estimator.add(new_data)
    _write(estimator, term, out_path, state_path, issues, issue_threshold)


@app.command("influence")
@_reports_errors
def influence_command(
    train: Annotated[str, typer.Argument(help="Training data: .npz (X, y), .csv or .parquet.")],
    out: Annotated[str, typer.Option("--out", help="Output table (index, value): .csv or .parquet.")],
    test: Annotated[str | None, typer.Option("--test", help="Test rows whose mean loss the values explain (same formats).")] = None,
    model: Annotated[str, typer.Option("--model", help="logistic (built in), or mlp: the built-in MLP, or your model with --weights and --arch.")] = "logistic",
    l2: Annotated[float, typer.Option("--l2", help="L2 weight λ: of Σℓ_i + (λ/2)‖θ‖² for logistic; the weight decay (mean loss) for mlp.")] = 1.0,
    method: Annotated[str, typer.Option("--method", help="if (influence function) or rif (rescaled influence).")] = "if",
    self_influence: Annotated[bool, typer.Option("--self", help="Write −self-influence per row instead (no --test needed).")] = False,
    solver: Annotated[str | None, typer.Option("--solver", help="explicit, cg, lissa, arnoldi, kfac, ekfac or astra (default: explicit for logistic, ekfac for mlp).")] = None,
    damping: Annotated[float, typer.Option("--damping", help="δ ≥ 0 added to the curvature.")] = 0.0,
    weights: Annotated[str | None, typer.Option("--weights", help="Trained weights of your model (.safetensors; --model mlp).")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="package.module:factory building your model (with --weights).")] = None,
    loss: Annotated[str, typer.Option("--loss", help="Loss of your model: cross_entropy, mse or binary_cross_entropy.")] = "cross_entropy",
    label_column: LabelColumn = None,
    feature_columns: FeatureColumns = None,
    drop_columns: DropColumns = None,
    id_column: IdColumn = None,
) -> None:
    """Predict, for every training row, how removing it and refitting would change the mean test loss.

    value > 0: the row helps (its removal would raise the test loss). With --self: −gᵢᵀ(H + δI)⁻¹gᵢ.
    """
    from dataworth.influence.models import load_model
    from dataworth.methods import ATTRIBUTION_METHODS

    check_choice(model, "--model", ("logistic", "mlp"))
    methods = {"if": "influence", "rif": "rif"}
    check_choice(method, "--method", tuple(methods))
    if (weights is None) != (arch is None) or (weights is not None and model != "mlp"):
        raise InputError("--weights and --arch go together, with --model mlp (your model); leave both out for a built-in model")
    if test is None and not self_influence:
        raise InputError("--test is needed (the rows whose loss the values explain), or --self for self-influence")
    out_path, _ = _output_paths(out, None, inputs={"TRAIN": train, "--test": test, "--weights": weights})
    chosen = solver or ("explicit" if model == "logistic" else "ekfac")
    estimator_model: Any = load_model(arch, weights) if arch is not None else model
    params = {"model": estimator_model, "l2": l2, "solver": chosen, "damping": damping, "loss": loss}
    columns = _column_options(label_column, feature_columns, drop_columns, id_column)
    loaded = load_datasets({"TRAIN": train, **({"--test": test} if test is not None else {})}, **columns)
    estimator = ATTRIBUTION_METHODS[methods[method]](**params).fit(loaded["TRAIN"])
    result = estimator.self_influence() if self_influence else estimator.attribute(loaded["--test"]).reduce("mean")
    result.save(out_path)
    console.print(f"wrote {out_path} ({len(result)} rows)")


@app.command()
@_reports_errors
def demo(
    out_dir: Annotated[str, typer.Option("--out-dir", help="Where to write report.html.")] = "dataworth-demo",
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Find planted label flips, feature noise and a backdoor in scikit-learn's digits."""
    from dataworth.demo import run_demo

    outcome = run_demo(out_dir, seed=seed, progress=True)
    table = Table(title="KAIROS on digits: finding corrupted rows from low values")
    for column in ("corruption", "rows", "AUROC"):
        table.add_column(column, justify="left" if column == "corruption" else "right")
    for name, auroc in outcome.auroc.items():
        table.add_row(name, str(outcome.counts[name]), f"{auroc:.3f}")
    console.print(table)
    console.print(f"valued {len(outcome.result)} rows in {outcome.seconds:.2f} s; report: {outcome.report}")


@app.command()
@_reports_errors
def report(
    values: Annotated[str, typer.Argument(help="Values written by 'dataworth value' (.csv or .parquet), or attributions (.npz).")],
    train: Annotated[str, typer.Option("--train", help="The training data the values belong to.")],
    out: Annotated[str, typer.Option("--out", help="The report (.html).")],
    mask: Annotated[str | None, typer.Option("--mask", help=".npy: per-row corrupted flags (bool or 0/1) or group names.")] = None,
    reference: Annotated[str | None, typer.Option("--reference", help="Clean held-out data: adds point-removal curves.")] = None,
    targets: Annotated[str | None, typer.Option("--targets", help="With attributions: the target rows they attribute.")] = None,
    target_row: Annotated[int, typer.Option("--target-row", help="With attributions: the target row to explain.")] = 0,
    label_column: LabelColumn = None,
    feature_columns: FeatureColumns = None,
    drop_columns: DropColumns = None,
    id_column: IdColumn = None,
) -> None:
    """Write an HTML report: value distribution, ROC and removal curves, the lowest-valued rows; or, for an
    attribution file (.npz, with --targets), the most helpful and most harmful training rows of one target row.

    Rows are shown as images when TRAIN is an .npz with an 'images' array (n × h × w), as text when it
    has a 'texts' array, and as feature rows otherwise.
    """
    if Path(values).suffix.lower() == ".npz":
        if targets is None:
            raise InputError("an attribution file (.npz) needs --targets: the target rows it attributes")
        check_int(target_row, "--target-row", minimum=0)
        check_not_inputs({"--out": out}, {"ATTRIBUTIONS": values, "--train": train, "--targets": targets})
        out_path = attribution_report_from_files(values, train, targets, out, target_row=target_row)
        console.print(f"wrote {out_path}")
        return
    inputs = {"VALUES": values, "--train": train, "--mask": mask, "--reference": reference}
    check_not_inputs({"--out": out}, {**inputs, "the values' sidecar": sidecar_path(Path(values))})
    columns = _column_options(label_column, feature_columns, drop_columns, id_column)
    out_path = report_from_files(values, train, out, mask=mask, reference=reference, **columns)
    console.print(f"wrote {out_path}")


bench = typer.Typer(help="Benchmarks: how well and how fast methods find corrupted rows.", no_args_is_help=True)
app.add_typer(bench, name="bench")


@bench.command("detect")
@_reports_errors
def bench_detect(
    dataset: Annotated[str, typer.Option("--dataset", help="digits, breast_cancer, wine, iris, mnist-effnet, fashion-effnet, bbc-minilm, or a labelled file.")] = "digits",
    corruption: Annotated[str, typer.Option("--corruption", help="KIND:FRACTION, e.g. label-flip:0.1 (kinds: label-flip, confusion-flip, pair-flip, annotator, feature-noise, backdoor, duplicates, ood).")] = "label-flip:0.1",
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated method names; METHOD:TERM ranks by one term (e.g. influence:self).")] = "kairos,knn-shapley,data-oob",
    seeds: Annotated[int, typer.Option("--seeds", help="Repetitions with different splits and corruptions.")] = 3,
    max_train: Annotated[int | None, typer.Option("--max-train", help="Cap on training rows.")] = None,
    out: Annotated[str, typer.Option("--out", help="Directory for results.json and plots.")] = "results",
) -> None:
    """Plant a corruption, value the data with each method, and score how well low values find it.

    Each finished valuation is kept in OUT/results.partial.jsonl until the results are written, so
    an interrupted run, started again with the same options, resumes where it stopped.
    """
    from dataworth.evaluation.datasets import load_evaluation_set
    from dataworth.evaluation.detection import check_methods, parse_corruption, run_detection, summarize

    parse_corruption(corruption)
    check_int(seeds, "--seeds")
    if max_train is not None:
        check_int(max_train, "--max-train", minimum=2)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    check_methods([name.partition(":")[0] for name in names])
    if len(set(names)) != len(names):
        raise InputError(f"a method is named twice in {methods}")
    variants = {name: name for name in names if ":" in name}  # METHOD:TERM ranks rows by that term
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out must be a directory; {out_dir} is a file")
    outputs = {"results.json": out_dir / "results.json", "detection.png": out_dir / "detection.png"}
    check_not_inputs(outputs, {"--dataset": dataset if Path(dataset).suffix else None})
    data = load_evaluation_set(dataset)
    with _directory_kept_only_if_used(out_dir):
        checkpoint = Checkpoint(out_dir / "results.partial.jsonl")
        if checkpoint.resumed:
            console.print(f"resuming: {checkpoint.resumed} finished valuation(s) in {checkpoint.path} (delete it to start over)")
        results = run_detection(data, corruption, names, seeds=seeds, max_train=max_train, variants=variants, checkpoint=checkpoint)
        summary = summarize(results)
        write_together({
            outputs["results.json"]: lambda tmp: results.to_json(tmp, orient="records", indent=1),
            outputs["detection.png"]: lambda tmp: tmp.write_bytes(method_bars(summary, title=f"{dataset}, {corruption}")),
        })
        checkpoint.remove()
    table = Table(title=f"{dataset}, {corruption}: finding corrupted rows from low values ({seeds} seeds)")
    for column in ("method", "AUROC", "F1 (2-means)", "detection rate", "seconds"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for _, row in summary.iterrows():
        cells = [f"{row[(m, 'mean')]:.3f} ± {row[(m, 'std')]:.3f}" for m in ("auroc", "f1", "detection_rate")]
        table.add_row(row[("method", "")], *cells, f"{row[('seconds', 'mean')]:.2f}")
    console.print(table)
    console.print(f"wrote {outputs['results.json']} and {outputs['detection.png']}")


@bench.command("attribute")
@_reports_errors
def bench_attribute(
    dataset: Annotated[str, typer.Option("--dataset", help="digits, breast_cancer, wine, iris, mnist-effnet, fashion-effnet, bbc-minilm, or a labelled file.")] = "digits",
    model: Annotated[str, typer.Option("--model", help="The model retrained for the ground truth and attributed: logistic or mlp.")] = "logistic",
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated: if-SOLVER (if-ekfac, if-cg, ...), rif, tracin, trak, airrep, and any valuation method.")] = "if-ekfac,rif,tracin,trak,airrep,kairos,knn-shapley",
    noise: Annotated[str, typer.Option("--noise", help="Label noise planted in the training rows, KIND:FRACTION (label-flip, confusion-flip, pair-flip, annotator).")] = "label-flip:0.1",
    subsets: Annotated[int, typer.Option("--subsets", help="Random subsets retrained for LDS.")] = 100,
    training_subsets: Annotated[int | None, typer.Option("--training-subsets", help="Further subsets for learned methods (airrep); default: --subsets when one is named.")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Fraction of the training rows in each subset.")] = 0.5,
    seeds: Annotated[int, typer.Option("--seeds", help="Training seeds averaged in the ground truth (one for a convex model), and method seeds.")] = 3,
    loo_rows: Annotated[int, typer.Option("--loo-rows", help="Training rows removed one at a time for LOO ground truth.")] = 50,
    max_train: Annotated[int | None, typer.Option("--max-train", help="Cap on training rows.")] = None,
    max_targets: Annotated[int | None, typer.Option("--max-targets", help="Cap on target rows (held-out rows).")] = None,
    l2: Annotated[float | None, typer.Option("--l2", help="Regularization of the model (default: 1.0 sum-form for logistic, 1e-3 weight decay for mlp).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Processes retraining in parallel.")] = 1,
    target_row: Annotated[int, typer.Option("--target-row", help="The target shown in the report with its most helpful and harmful training rows.")] = 0,
    out: Annotated[str, typer.Option("--out", help="Directory for results.json, summary.json, plots, report.html and the attributions.")] = "attribution",
) -> None:
    """Score attribution and valuation methods against retraining: LDS, LOO correlation, detection AUROC, time, memory.

    Every finished retraining and method run is kept in OUT/attribution.partial.jsonl until the results are
    written, so an interrupted run, started again with the same options, resumes where it stopped.
    """
    from dataworth.evaluation.attribution_bench import build_benchmark, parse_methods, run_methods, summarize
    from dataworth.report.attribution import benchmark_files

    specs = parse_methods(methods)
    check_choice(model, "--model", ("logistic", "mlp"))
    for value, name in ((subsets, "--subsets"), (seeds, "--seeds"), (loo_rows, "--loo-rows"), (jobs, "--jobs")):
        check_int(value, name)
    learned = any(spec.family == "learned" for spec in specs)
    training_subsets = (subsets if learned else 0) if training_subsets is None else check_int(training_subsets, "--training-subsets", minimum=0)
    if learned and not training_subsets:
        raise InputError("airrep learns from retrained subsets: give --training-subsets > 0")
    check_int(target_row, "--target-row", minimum=0)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out must be a directory; {out_dir} is a file")
    check_not_inputs({"--out": out_dir / "results.json"}, {"--dataset": dataset if Path(dataset).suffix else None})
    with _directory_kept_only_if_used(out_dir):
        checkpoint = Checkpoint(out_dir / "attribution.partial.jsonl")
        if checkpoint.resumed:
            console.print(f"resuming: {checkpoint.resumed} finished item(s) in {checkpoint.path} (delete it to start over)")
        bench = build_benchmark(dataset, model=model, noise=noise, l2=l2, subsets=subsets, training_subsets=training_subsets,
                                alpha=alpha, seeds=seeds, loo_rows=loo_rows, max_train=max_train, max_targets=max_targets,
                                n_jobs=jobs, checkpoint=checkpoint, progress=True)
        if target_row >= bench.problem.n_targets:
            raise InputError(f"--target-row must be below the {bench.problem.n_targets} targets")
        results, attributions = run_methods(bench, specs, seeds=seeds, checkpoint=checkpoint)
        files = benchmark_files(out_dir, bench, results, attributions, target=target_row)
        (out_dir / "attributions").mkdir(exist_ok=True)
        written = write_together(files)
        checkpoint.remove()
    table = Table(title=f"{bench.name}: attribution against retraining ({len(bench.evaluation.subsets)} LDS subsets, "
                        f"{len(bench.loo.rows)} LOO rows, {seeds} seeds)")
    for column in ("method", "LDS", "LOO Pearson", "LOO Spearman", "AUROC", "seconds", "peak GiB"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for _, row in summarize(results).iterrows():
        cells = [_mean_std(row, m) for m in ("lds", "loo_pearson", "loo_spearman", "auroc")]
        table.add_row(row[("method", "")], *cells, f"{row[('seconds', 'mean')]:.2f}", f"{row[('peak_rss_gib', 'mean')]:.2f}")
    console.print(table)
    console.print(f"wrote {len(written)} files in {out_dir}; report: {out_dir / 'report.html'}")


@app.command("curate")
@_reports_errors
def curate_command(
    dataset: Annotated[str, typer.Option("--dataset", help="digits, bbc-minilm, or another labelled dataset of `bench detect`.")] = "digits",
    noise: Annotated[str, typer.Option("--noise", help="Label noise planted in the training rows, KIND:FRACTION.")] = "label-flip:0.4",
    method: Annotated[str, typer.Option("--method", help="Comma-separated: lai, ghost, last-layer, lai-adam, small-loss (uncurated training always runs beside them).")] = "lai",
    model: Annotated[str, typer.Option("--model", help="mlp (on the features) or transformer (on the words of a text dataset).")] = "mlp",
    policy: Annotated[str, typer.Option("--policy", help="drop-negative, keep-top or reweight.")] = "drop-negative",
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds (noise, split and initialization) per method.")] = 1,
    steps: Annotated[int, typer.Option("--steps", help="Training steps of every run.")] = 600,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help="Steps before any row is dropped.")] = 100,
    refresh_every: Annotated[int, typer.Option("--refresh-every", help="Steps between refreshes of the validation cache.")] = 20,
    out: Annotated[str, typer.Option("--out", help="Directory for results.json, curves.csv, decisions.parquet, curation.png and report.html.")] = "curation",
) -> None:
    """Train on noisy labels with and without online curation and report accuracy, drops and their precision.

    The outputs appear together when every run has finished (a digits MLP run takes seconds).
    """
    from dataworth.curation.curator import METHODS
    from dataworth.curation.experiment import load_curation_data, run_curation
    from dataworth.curation.policies import POLICIES
    from dataworth.report.curation import curation_files

    methods = ["none", *[m.strip() for m in method.split(",") if m.strip() and m.strip() != "none"]]
    for name in methods:
        check_choice(name, "--method", METHODS)
    check_choice(policy, "--policy", POLICIES)
    check_int(seeds, "--seeds")
    check_int(steps, "--steps")
    check_int(warmup_steps, "--warmup-steps", minimum=0)
    check_int(refresh_every, "--refresh-every")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out must be a directory; {out_dir} is a file")
    with _directory_kept_only_if_used(out_dir):
        runs = []
        for seed in range(seeds):
            data = load_curation_data(dataset, noise, model=model, seed=seed)
            for name in methods:
                runs.append(run_curation(data, name, model=model, seed=seed, steps=steps, warmup_steps=warmup_steps,
                                         refresh_every=refresh_every, policy=policy))
                console.print(f"seed {seed} {name}: final accuracy {runs[-1].summary['final_accuracy']:.3f}, "
                              f"dropped {runs[-1].summary['dropped']:.2f}, precision {runs[-1].summary['precision']:.2f}")
        notes = [f"{steps} AdamW steps of {model} per run, batches of 64; validation cache of 100 clean held-out rows refreshed "
                 f"every {refresh_every} steps; nothing dropped in the first {warmup_steps} steps; policy {policy}.",
                 "precision: corrupted rows among the dropped ones; recall: dropped rows among the corrupted ones (past the warm-up)."]
        written = write_together(curation_files(out_dir, runs, title=f"dataworth curation: {data.name}", classes=data.classes, notes=notes))
    console.print(f"wrote {len(written)} files in {out_dir}; report: {out_dir / 'report.html'}")


def _mean_std(row: Any, metric: str) -> str:
    """``mean ± std`` of a summary row's metric (the mean alone when there is one seed)."""
    mean, std = row[(metric, "mean")], row[(metric, "std")]
    return f"{mean:.3f}" if std != std else f"{mean:.3f} ± {std:.3f}"


@contextlib.contextmanager
def _directory_kept_only_if_used(path: Path) -> Iterator[None]:
    """Create ``path`` (and its parents) for the body; if the body fails and left it empty, remove what was created."""
    created = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for directory in created:  # deepest first
            with contextlib.suppress(OSError):
                directory.rmdir()  # only succeeds when empty
        raise


def _output_paths(out: str, state_out: str | None, *, inputs: dict[str, str | None]) -> tuple[Path, Path | None]:
    """Validate ``--out`` / ``--state-out`` before any work: known suffixes, existing directories, and
    no output (or a CSV's sidecar) naming an input file."""
    out_path = check_output_path(out, "--out", TABLE_SUFFIXES)
    state_path = None if state_out is None else check_output_path(state_out, "--state-out", (".npz",))
    sidecar = sidecar_path(out_path) if out_path.suffix.lower() == ".csv" else None
    check_not_inputs({"--out": out_path, "the sidecar of --out": sidecar, "--state-out": state_path}, inputs)
    return out_path, state_path


def _column_options(
    label_column: str | None, feature_columns: str | None, drop_columns: str | None, id_column: str | None
) -> dict[str, Any]:
    def names(text: str | None) -> list[str] | None:
        return None if text is None else [c.strip() for c in text.split(",") if c.strip()]

    return {"label_column": label_column, "feature_columns": names(feature_columns), "drop_columns": names(drop_columns),
            "id_column": id_column}


def _check_term(term: str, method: str) -> None:
    offered = ("combined", *METHODS[method].terms)
    if term not in offered:
        raise InputError(f"--term must be one of {', '.join(offered)} for {method}; got {term!r}")


def _parse_params(pairs: list[str], method: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings to estimator parameters; values become bool, None, int or float when they read as one."""
    known = METHODS[method]().get_params()
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = (part.strip() for part in pair.partition("="))
        if not sep or not key:
            raise InputError(f"--param takes KEY=VALUE; got {pair!r}")
        if key in RESERVED_PARAMS and key in known:
            raise InputError(f"--param {key}: set it with {RESERVED_PARAMS[key]}")
        if key in known and key not in _text_params(method) and key not in RESERVED_PARAMS:
            raise InputError(f"--param {key} takes a Python object; set it from Python, e.g. dataworth.METHODS[{method!r}]({key}=...)")
        if key not in known:
            raise InputError(f"--param {key}: {method} has no parameter {key!r}; it has {', '.join(_text_params(method))}")
        if key in params:
            raise InputError(f"--param {key} is given twice")
        params[key] = _parse_value(text)
    return params


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _parse_bandwidth(text: str) -> str | float:
    if text == "median":
        return text
    try:
        number = float(text)
    except ValueError:
        raise InputError(f"--bandwidth must be 'median' or a number > 0; got {text!r}") from None
    return check_positive(number, "--bandwidth")


def _write(estimator: Valuator, term: str, out: Path, state_out: Path | None, issues: bool, threshold: float) -> None:
    """Write the values (the chosen term in ``value``) and, when asked, the state: together or not at all.
    With ``issues``, a method that says why rows are bad (``describe_issues``) adds its issue columns."""
    if issues and hasattr(estimator, "describe_issues"):
        try:
            estimator.describe_issues(threshold)
        except InputError as exc:  # e.g. a single reference row: the values are still written
            warnings.warn(f"no issue columns: {exc}", DataworthWarning, stacklevel=2)
    fitted = estimator.result_
    result = replace(fitted, values=estimator.term_values(term), params={**fitted.params, "term": term})
    files = result.files(out)
    if state_out is not None:
        files |= estimator.state_files(state_out)
    write_together(files)
    seconds = fitted.timings.get("total", fitted.timings.get("add", 0.0))
    lowest = result.lowest(5) if result.names is None else result.names[result.lowest(5)]
    console.print(f"wrote {len(result)} values to {out} ({estimator.method}, {seconds:.2f} s); lowest rows: {', '.join(map(str, lowest))}")
    if result.issues is not None:
        counts = result.issues["issue"].value_counts()
        found = ", ".join(f"{counts[kind]} {kind}" for kind in ISSUE_TYPES if kind in counts) or "none"
        console.print(f"issues at q ≤ {threshold:g}: {found} (columns issue, issue_q, duplicate_of)")


def main() -> None:
    """The console script: :data:`app`, with usage errors (a missing option, a number that is not one)
    as one ``error:`` line and exit code 2 too, instead of click's framed message."""
    command = typer.main.get_command(app)
    try:
        code = command.main(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `dataworth` or `dataworth bench` alone: the help
        print(exc.ctx.get_help() if exc.ctx else "", file=sys.stderr)
        code = 2
    except UsageError as exc:
        print(f"error: {_one_line(exc.format_message())} (see --help)", file=sys.stderr)
        code = 2
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        code = 1
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
