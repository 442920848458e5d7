"""The HTML report: the CLI writes it, and headless Chromium renders every plot and image in it."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dataworth.cli import app
from dataworth.demo import corrupted_digits

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Marks each <img> with whether the browser decoded it, so --dump-dom can tell us.
PROBE = (
    "<script>window.addEventListener('load', () => document.querySelectorAll('img').forEach("
    "i => i.setAttribute('data-rendered', i.complete && i.naturalWidth > 0 ? 'yes' : 'no')));</script>"
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    data = corrupted_digits(seed=0)
    np.savez(d / "train.npz", X=data["X"], y=data["y"], images=data["images"])
    np.savez(d / "ref.npz", X=data["X_ref"], y=data["y_ref"])
    np.save(d / "groups.npy", data["groups"])
    runner = CliRunner()
    valued = runner.invoke(app, ["value", str(d / "train.npz"), "--reference", str(d / "ref.npz"), "--out", str(d / "v.parquet")])
    assert valued.exit_code == 0, valued.stderr
    made = runner.invoke(app, ["report", str(d / "v.parquet"), "--train", str(d / "train.npz"), "--mask", str(d / "groups.npy"),
                               "--reference", str(d / "ref.npz"), "--out", str(d / "report.html")])
    assert made.exit_code == 0, made.stderr
    return d / "report.html", data


def test_report_holds_every_section_and_the_lowest_rows(report):
    path, data = report
    html = path.read_text()
    for section in ("histogram", "roc", "removal", "issues", "lowest"):
        assert f"id='{section}'" in html
    assert "method <b>kairos</b>" in html
    table_rows = re.findall(r"<tr><td>(\d+)</td>", html[html.index("lowest-valued rows"):])
    assert len(table_rows) == 20
    assert all(data["groups"][int(i)] != "clean" for i in table_rows)  # the lowest 20 are all corrupted rows


def test_report_rejects_a_mask_of_the_wrong_length(report, tmp_path):
    path, _ = report
    np.save(tmp_path / "short.npy", np.zeros(5, dtype=bool))
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(path.parent / "v.parquet"), "--train", str(path.parent / "train.npz"),
                                      "--mask", str(tmp_path / "short.npy"), "--out", str(out)])
    assert result.exit_code == 2 and "MASK has 5 rows but the values file has 1437 values" in result.stderr
    assert not out.exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None and os.environ.get("CI") != "true", reason="Debian's chromium is not installed (.ci/run installs it)")
def test_chromium_renders_plots_and_digit_images(report, tmp_path):
    path, _ = report
    browser = _chromium()
    assert browser, "CI must have chromium: .ci/run installs it"
    probed = tmp_path / "probed.html"
    probed.write_text(path.read_text().replace("</body>", PROBE + "</body>"))
    flags = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120).stdout
    rendered = dict(re.findall(r"<img id=\"(\w+)\"[^>]*data-rendered=\"(\w+)\"", dom))
    assert rendered == {"histogram": "yes", "roc": "yes", "removal": "yes", "lowest": "yes"}, rendered
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    subprocess.run([*flags, "--window-size=1100,3200", f"--screenshot={shot}", path.as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 50_000  # a page of plots, not a blank page


def test_a_report_without_mask_has_no_group_column_and_shows_the_real_column_names(tmp_path, planted):
    import pandas as pd

    X, y, Z, y_ref = planted
    pd.DataFrame(X, columns=["height", "weight", "age", "income"]).assign(label=y).to_csv(tmp_path / "t.csv", index=False)
    runner = CliRunner()
    assert runner.invoke(app, ["value", str(tmp_path / "t.csv"), "--reference", str(tmp_path / "t.csv"),
                               "--out", str(tmp_path / "v.csv")]).exit_code == 0
    made = runner.invoke(app, ["report", str(tmp_path / "v.csv"), "--train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "r.html")])
    assert made.exit_code == 0, made.stderr
    html = (tmp_path / "r.html").read_text()
    assert "<th>height</th><th>weight</th><th>age</th><th>income</th>" in html
    assert "<th>group</th>" not in html and "all rows" not in html


def test_every_plot_gives_a_group_the_same_colour_and_coinciding_removal_curves_stay_visible():
    import matplotlib.colors as mcolors

    from dataworth.report import plots

    groups = np.array(["clean"] * 30 + ["label flip"] * 10 + ["backdoor"] * 5)
    values = np.random.default_rng(0).normal(size=len(groups))
    colours = plots.group_colours(groups)
    assert list(colours) == ["clean", "backdoor", "label flip"] and len(set(colours.values())) == 3
    histogram = plots.histogram_figure(values, groups)
    first_bars = [container.patches[0] for container in histogram.axes[0].containers]  # hist labels the first bar
    bars = {patch.get_label().split(" (")[0]: mcolors.to_hex(patch.get_facecolor()) for patch in first_bars}
    roc = plots.roc_figure({g: (groups[(groups == "clean") | (groups == g)] == g, values[(groups == "clean") | (groups == g)])
                            for g in ("backdoor", "label flip")}, colours)
    for line in roc.axes[0].lines[:2]:
        name = line.get_label().split(" (")[0]
        assert mcolors.to_hex(line.get_color()) == colours[name]
    assert bars == colours
    same = np.array([0.9, 0.85, 0.8])
    removal = plots.removal_figure({"remove lowest first": ((0, 0.1, 0.2), same), "remove highest first": ((0, 0.1, 0.2), same)})
    first, second = removal.axes[0].lines
    assert (first.get_linestyle(), first.get_marker()) != (second.get_linestyle(), second.get_marker())
    assert first.get_color() != second.get_color()


def test_a_report_refuses_values_of_other_rows_and_keeps_fixed_columns_visible(tmp_path, planted):
    import pandas as pd

    X, y, Z, y_ref = planted
    frame = pd.DataFrame(X, columns=["value", "label", "b", "c"]).assign(target=y, uid=[f"r{i}" for i in range(len(X))])
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.sample(frac=1, random_state=0).to_csv(tmp_path / "shuffled.csv", index=False)
    runner = CliRunner()
    args = ["--label-column", "target", "--id-column", "uid"]
    assert runner.invoke(app, ["value", str(tmp_path / "t.csv"), "--reference", str(tmp_path / "t.csv"), "--out",
                               str(tmp_path / "v.csv"), *args]).exit_code == 0
    wrong = runner.invoke(app, ["report", str(tmp_path / "v.csv"), "--train", str(tmp_path / "shuffled.csv"), "--out",
                                str(tmp_path / "r.html"), *args])
    assert wrong.exit_code == 2 and "the values file's rows are not TRAIN's: row 0 is 'r0' in the values" in wrong.stderr
    made = runner.invoke(app, ["report", str(tmp_path / "v.csv"), "--train", str(tmp_path / "t.csv"), "--out",
                               str(tmp_path / "r.html"), *args])
    assert made.exit_code == 0, made.stderr
    html = (tmp_path / "r.html").read_text()
    assert "<th>value</th><th>label</th><th>value (feature)</th><th>label (feature)</th>" in html
    np.save(tmp_path / "m.npy", np.zeros(3, bool))
    short = runner.invoke(app, ["report", str(tmp_path / "v.csv"), "--train", str(tmp_path / "t.csv"), "--mask",
                                str(tmp_path / "m.npy"), "--out", str(tmp_path / "s.html"), *args])
    assert short.exit_code == 2 and "MASK has 3 rows but the values file has 40 values" in short.stderr


def test_report_lists_issue_types_with_the_known_groups(tmp_path):
    import numpy as np
    import pandas as pd

    from dataworth import ValuationResult
    from dataworth.report.html import write_report

    issues = pd.DataFrame({"issue": ["", "label", "near-duplicate", "label"], "issue_q": [np.nan, 0.01, 0.02, 0.03],
                           "duplicate_of": [-1, -1, 0, -1]})
    result = ValuationResult(np.array([1.0, 0.01, 0.02, 0.03]), "kairos", issues=issues, names=np.array(["a", "b", "c", "d"]))
    html = write_report(tmp_path / "r.html", result, groups=np.array(["clean", "label flip", "duplicates", "clean"])).read_text()
    section = html[html.index("id='issues'"):html.index("lowest-valued rows")]
    assert "<td>label</td><td>2</td><td>clean 1, label flip 1</td>" in section
    assert "<td>2 (c)</td><td>near-duplicate</td><td>0.02</td><td>0 (a)</td>" in section
