"""The ``dataworth`` command line: parses arguments, calls the library, prints with rich.

Every user-facing failure is one line on stderr (``error: ...``) and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dataworth.checkpoint import Checkpoint
from dataworth.checks import DataworthError, InputError, check_choice, check_int, check_positive
from dataworth.data import TABLE_SUFFIXES, atomic_write, check_output_path, load_dataset
from dataworth.report.files import report_from_files
from dataworth.report.plots import method_bars
from dataworth.result import ValuationResult
from dataworth.valuation import METHODS
from dataworth.valuation.kairos import Kairos

app = typer.Typer(
    help="What is each piece of your training data worth?",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
)
console = Console(soft_wrap=True)
TERMS = ("combined", "feature", "label")

LabelColumn = Annotated[str, typer.Option("--label-column", help="Label column of .csv/.parquet inputs.")]
Term = Annotated[str, typer.Option("--term", help="Which value goes in the 'value' column: combined, feature or label.")]
Params = Annotated[
    list[str] | None,
    typer.Option("--param", help="KEY=VALUE, any parameter of the method's estimator (repeatable), e.g. solver=exact for lava."),
]
#: Estimator parameters the CLI sets itself, and the option to use instead.
RESERVED_PARAMS = {"bandwidth": "--bandwidth", "label_kernel": "--label-kernel", "device": "--device", "progress": "(always on)"}


def _reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn DataworthError/OSError into one stderr line and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (DataworthError, OSError) as exc:
            message = str(exc) if isinstance(exc, DataworthError) else f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
            print(f"error: {message}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@_reports_errors
def value(
    train: Annotated[str, typer.Argument(help="Training data: .npz (X, y), .npy (features), .csv or .parquet.")],
    reference: Annotated[str, typer.Option("--reference", help="Clean reference set, same formats.")],
    out: Annotated[str, typer.Option("--out", help="Output table: .csv or .parquet.")],
    method: Annotated[str, typer.Option("--method", help="Valuation method.")] = "kairos",
    label_column: LabelColumn = "label",
    bandwidth: Annotated[str, typer.Option("--bandwidth", help="'median' or a number > 0.")] = "median",
    label_kernel: Annotated[str, typer.Option("--label-kernel", help="none or indicator.")] = "none",
    term: Term = "combined",
    state_out: Annotated[str | None, typer.Option("--state-out", help="Save the state for 'dataworth update' (.npz).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    param: Params = None,
) -> None:
    """Value every row of TRAIN against a clean reference set (KAIROS options apply to kairos only)."""
    check_choice(method, "--method", tuple(METHODS))
    params = _parse_params(param or [], method)
    check_choice(term, "--term", TERMS)
    kairos_only = {"--bandwidth": bandwidth != "median", "--label-kernel": label_kernel != "none",
                   "--term": term != "combined", "--state-out": state_out is not None}
    if method != Kairos.method and any(kairos_only.values()):
        given = ", ".join(flag for flag, used in kairos_only.items() if used)
        raise InputError(f"{given} apply to --method kairos only")
    out_path = check_output_path(out, "--out", TABLE_SUFFIXES)
    state_path = None if state_out is None else check_output_path(state_out, "--state-out", (".npz",))
    train_data = load_dataset(train, label_column=label_column, name="TRAIN")
    ref_data = load_dataset(reference, label_column=label_column, name="REF")
    if method != Kairos.method:
        estimator = METHODS[method](**params)
        estimator.set_params(**{k: v for k, v in {"device": device, "progress": True}.items() if k in estimator.get_params()})
        result = estimator.fit(train_data, reference=ref_data).result_
        result.save(out_path)
        console.print(f"wrote {len(result)} values to {out_path} ({method}); lowest rows: {', '.join(map(str, result.lowest(5)))}")
        return
    _check_term_has_labels(term, train_data.y is not None)
    estimator = Kairos(bandwidth=_parse_bandwidth(bandwidth), label_kernel=label_kernel, device=device, progress=True, **params)
    estimator.fit(train_data, reference=ref_data)
    _write(estimator, term, out_path, state_path)


@app.command()
@_reports_errors
def update(
    state: Annotated[str, typer.Option("--state", help="State written by 'value --state-out' (.npz).")],
    add: Annotated[str, typer.Option("--add", help="New rows, in any input format.")],
    out: Annotated[str, typer.Option("--out", help="Output table for all rows: .csv or .parquet.")],
    state_out: Annotated[str | None, typer.Option("--state-out", help="Save the updated state (.npz).")] = None,
    label_column: LabelColumn = "label",
    term: Term = "combined",
) -> None:
    """Add rows to a saved KAIROS state and write the values of all rows (online update)."""
    check_choice(term, "--term", TERMS)
    out_path = check_output_path(out, "--out", TABLE_SUFFIXES)
    state_path = None if state_out is None else check_output_path(state_out, "--state-out", (".npz",))
    estimator = Kairos.load_state(state)
    new_data = load_dataset(add, label_column=label_column, name="NEW")
    _check_term_has_labels(term, estimator.label_residuals_ is not None)
    estimator.add(new_data)
    _write(estimator, term, out_path, state_path)


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
    values: Annotated[str, typer.Argument(help="Values written by 'dataworth value' (.csv or .parquet).")],
    train: Annotated[str, typer.Option("--train", help="The training data the values belong to.")],
    out: Annotated[str, typer.Option("--out", help="The report (.html).")],
    mask: Annotated[str | None, typer.Option("--mask", help=".npy: per-row corrupted flags (bool) or group names.")] = None,
    reference: Annotated[str | None, typer.Option("--reference", help="Clean held-out data: adds point-removal curves.")] = None,
    label_column: LabelColumn = "label",
) -> None:
    """Write an HTML report: value distribution, ROC and removal curves, the lowest-valued rows.

    Rows are shown as images when TRAIN is an .npz with an 'images' array (n × h × w), as text when it
    has a 'texts' array, and as feature rows otherwise.
    """
    out_path = report_from_files(values, train, out, mask=mask, reference=reference, label_column=label_column)
    console.print(f"wrote {out_path}")


bench = typer.Typer(help="Benchmarks: how well and how fast methods find corrupted rows.", no_args_is_help=True)
app.add_typer(bench, name="bench")


@bench.command("detect")
@_reports_errors
def bench_detect(
    dataset: Annotated[str, typer.Option("--dataset", help="digits, breast_cancer, wine, mnist-effnet or bbc-minilm.")] = "digits",
    corruption: Annotated[str, typer.Option("--corruption", help="KIND:FRACTION, e.g. label-flip:0.1.")] = "label-flip:0.1",
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated method names.")] = "kairos,knn-shapley,data-oob",
    seeds: Annotated[int, typer.Option("--seeds", help="Repetitions with different splits and corruptions.")] = 3,
    max_train: Annotated[int | None, typer.Option("--max-train", help="Cap on training rows.")] = None,
    out: Annotated[str, typer.Option("--out", help="Directory for results.json and plots.")] = "results",
) -> None:
    """Plant a corruption, value the data with each method, and score how well low values find it.

    Each finished valuation is kept in OUT/results.partial.jsonl until the results are written, so
    an interrupted run, started again with the same options, resumes where it stopped.
    """
    from dataworth.evaluation.datasets import load_evaluation_set
    from dataworth.evaluation.detection import parse_corruption, run_detection, summarize

    parse_corruption(corruption)
    check_int(seeds, "--seeds")
    names = [m.strip() for m in methods.split(",") if m.strip()]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(out_dir / "results.partial.jsonl")
    if checkpoint.resumed:
        console.print(f"resuming: {checkpoint.resumed} finished valuation(s) in {checkpoint.path} (delete it to start over)")
    results = run_detection(
        load_evaluation_set(dataset), corruption, names, seeds=seeds, max_train=max_train, checkpoint=checkpoint
    )
    summary = summarize(results)
    with atomic_write(out_dir / "results.json") as tmp:
        results.to_json(tmp, orient="records", indent=1)
    with atomic_write(out_dir / "detection.png") as tmp:
        tmp.write_bytes(method_bars(summary, title=f"{dataset}, {corruption}"))
    checkpoint.remove()
    table = Table(title=f"{dataset}, {corruption}: finding corrupted rows from low values ({seeds} seeds)")
    for column in ("method", "AUROC", "F1 (2-means)", "detection rate", "seconds"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for _, row in summary.iterrows():
        cells = [f"{row[(m, 'mean')]:.3f} ± {row[(m, 'std')]:.3f}" for m in ("auroc", "f1", "detection_rate")]
        table.add_row(row[("method", "")], *cells, f"{row[('seconds', 'mean')]:.2f}")
    console.print(table)
    console.print(f"wrote {out_dir / 'results.json'} and {out_dir / 'detection.png'}")


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
        if key not in known:
            raise InputError(f"--param {key}: {method} has no parameter {key!r}; it has {', '.join(sorted(set(known) - set(RESERVED_PARAMS)))}")
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


def _check_term_has_labels(term: str, labelled: bool) -> None:
    if term != "feature" and not labelled:
        raise InputError(f"--term {term} needs labels but the data has none (.npy holds features only); use --term feature")


def _write(estimator: Kairos, term: str, out: Path, state_out: Path | None) -> None:
    fitted = estimator.result_
    chosen = {"combined": fitted.values, "feature": estimator.feature_values_}
    if estimator.label_residuals_ is not None:
        chosen["label"] = -estimator.label_residuals_
    result = ValuationResult(
        chosen[term], fitted.method, params={**fitted.params, "term": term}, timings=fitted.timings, components=fitted.components
    )
    result.save(out)
    if state_out is not None:
        estimator.save_state(state_out)
    seconds = fitted.timings.get("total", fitted.timings.get("add", 0.0))
    console.print(
        f"wrote {len(result)} values to {out} (kairos, bandwidth {estimator.bandwidth_:.4g}, {seconds:.2f} s); "
        f"lowest rows: {', '.join(map(str, result.lowest(5)))}"
    )


if __name__ == "__main__":  # pragma: no cover
    app()
