"""Issue 31: which resume changes keep the numbers, and how a resume that changes them is recorded."""
import json

from run_folder.resume import (KEYS_CHANGING_NUMBERS, KEYS_KEEPING_NUMBERS, environment_differences,
                               inexact_resume_note, last_environment, resume_summary)
from schema import iter_options


def test_every_key_a_resume_may_change_exists_and_is_in_one_list_only():
    keys = {key for key, _ in iter_options()}
    assert set(KEYS_KEEPING_NUMBERS) <= keys and set(KEYS_CHANGING_NUMBERS) <= keys
    assert not set(KEYS_KEEPING_NUMBERS) & set(KEYS_CHANGING_NUMBERS)
    assert "train_params.seed" not in KEYS_KEEPING_NUMBERS + KEYS_CHANGING_NUMBERS


def test_the_last_environment_record_is_that_of_the_latest_resume(tmp_path):
    assert last_environment(tmp_path) is None
    for name, threads in (("environment.json", 2), ("environment_resume2.json", 4),
                          ("environment_resume10.json", 1)):
        (tmp_path / name).write_text(json.dumps({"cpu_threads": threads}))
    assert last_environment(tmp_path) == {"cpu_threads": 1}


def test_environment_fields_that_change_numbers_are_compared_and_others_are_not():
    recorded = {"cpu_threads": 2, "torch": "2.1", "device": "cpu", "git_commit": "a", "command_line": "x"}
    current = {"cpu_threads": 1, "torch": "2.1", "device": "cpu", "git_commit": "b", "command_line": "y"}
    assert environment_differences(recorded, current) == [("cpu_threads", 2, 1)]
    assert environment_differences(None, current) == []


def test_summary_and_config_note_name_the_first_inexact_resume():
    exact = {"epoch": 2, "step": 1, "exact": True, "changes": "train_params.num_epochs 2 -> 3"}
    inexact = {"epoch": 3, "step": 13, "exact": False, "changes": "cpu_threads 2 -> 1"}
    assert resume_summary([]) == {}
    assert resume_summary([exact]) == {"resumed_exactly": True}
    assert resume_summary([exact, inexact, {**inexact, "epoch": 5}]) == {
        "resumed_exactly": False, "differs_from": {"epoch": 3, "step": 13, "changes": "cpu_threads 2 -> 1"}}
    assert inexact_resume_note([exact]) == ""
    assert inexact_resume_note([exact, inexact]) == (
        "# Resumed with --allow_different_numbers at epoch 3, step 13: cpu_threads 2 -> 1; from there the "
        "numbers differ from an uninterrupted run.\n")
