"""The checkpoint file of resumable jobs: round trips, torn writes, corrupt files."""

import numpy as np
import pytest

from dataworth.checkpoint import Checkpoint
from dataworth.checks import FileFormatError


def test_finished_items_are_found_again_after_reopening(tmp_path):
    path = tmp_path / "job.partial.jsonl"
    first = Checkpoint(path)
    assert first.resumed == 0 and not path.exists()
    first.add({"method": "kairos", "seed": np.int64(0)}, {"auroc": np.float64(0.9), "n": 3})
    first.add({"method": "lava", "seed": 0}, {"auroc": 0.8})
    again = Checkpoint(path)
    assert again.resumed == 2
    assert again.get({"seed": 0, "method": "kairos"}) == {"auroc": 0.9, "n": 3}  # key order does not matter
    assert again.get({"method": "kairos", "seed": 1}) is None
    again.remove()
    assert not path.exists()


def test_a_line_cut_off_mid_write_is_dropped_and_later_lines_stay_readable(tmp_path):
    path = tmp_path / "job.partial.jsonl"
    Checkpoint(path).add("a", 1)
    with open(path, "a") as handle:
        handle.write('{"key": "b", "val')  # the process died here
    resumed = Checkpoint(path)
    assert resumed.resumed == 1 and resumed.get("b") is None
    resumed.add("b", 2)
    assert Checkpoint(path).get("b") == 2 and Checkpoint(path).resumed == 2


def test_a_file_that_is_not_a_checkpoint_is_refused_with_its_line(tmp_path):
    path = tmp_path / "job.partial.jsonl"
    path.write_text('{"key": "a", "value": 1}\nnot json\n')
    with pytest.raises(FileFormatError, match=r"job.partial.jsonl line 2 is not a checkpoint entry; delete the file"):
        Checkpoint(path)


@pytest.mark.parametrize("content", ['{"a":1}\n{"a":2}', '{"a": 1}', "notes without a newline", '{"key": "a", "value": 1}\nhello'])
def test_a_file_that_is_not_a_checkpoint_is_left_as_it_is(tmp_path, content):
    """Checked before the torn-line repair: a user's file given as a checkpoint used to lose its last line."""
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(FileFormatError, match=r"data.jsonl (line 1 is not a checkpoint entry|does not end as a checkpoint does)"):
        Checkpoint(path)
    assert path.read_text() == content


def test_discard_keeps_the_items_of_other_jobs(tmp_path):
    path = tmp_path / "job.jsonl"
    checkpoint = Checkpoint(path)
    for game, mask in (("g1", "00"), ("g2", "01"), ("g1", "10")):
        checkpoint.add([game, mask], 0.5)
    checkpoint.discard(lambda key: key[0] == "g1")
    reopened = Checkpoint(path)
    assert reopened.resumed == 1 and reopened.get(["g2", "01"]) == 0.5
    reopened.discard(lambda key: key[0] == "g2")
    assert not path.exists()
