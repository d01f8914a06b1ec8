"""Issue 22: the CPU thread count is chosen on purpose and said in the log."""
import logging

import pytest
import torch

from utils import threads
from utils.errors import UserInputError
from utils.threads import apply_threads, choose_threads, log_threads


@pytest.fixture
def cores(monkeypatch):
    """``cores(n)``: pretend this process may run on n cores."""
    def set_cores(count):
        monkeypatch.setattr(threads, "available_cores", lambda: count)
    return set_cores


def test_the_config_key_wins_over_the_environment():
    choice = choose_threads(3, num_workers=0, environ={"OMP_NUM_THREADS": "1"})
    assert choice.threads == 3 and "--threads" in choice.reason


def test_omp_num_threads_is_honoured_when_nothing_is_requested():
    assert choose_threads(None, num_workers=4, environ={"OMP_NUM_THREADS": "2"}).threads == 2


@pytest.mark.parametrize("count, workers, processes, expected", [
    (2, 0, 1, 2),    # the demo on 2 idle cores
    (2, 4, 1, 1),    # the paper configs' 4 workers on a 2-core laptop: never 0
    (8, 2, 1, 6),    # one core per data-loader worker
    (64, 4, 1, 8),   # at most MAX_AUTO_THREADS
    (16, 1, 4, 3),   # torchrun with 4 processes shares the cores
])
def test_automatic_choice_leaves_a_core_to_each_loader_worker(cores, count, workers, processes, expected):
    cores(count)
    assert choose_threads(None, workers, processes, environ={}).threads == expected


def test_a_bad_omp_num_threads_is_one_sentence():
    with pytest.raises(UserInputError, match="OMP_NUM_THREADS is 'many'"):
        choose_threads(None, 0, environ={"OMP_NUM_THREADS": "many"})


def test_the_choice_is_applied_to_torch_and_logged_in_one_line(cores, caplog):
    cores(4)
    before = torch.get_num_threads()
    try:
        choice = choose_threads(None, 1, environ={})
        apply_threads(choice)
        assert torch.get_num_threads() == 3
        with caplog.at_level(logging.INFO, logger="utils.threads"):
            log_threads(choice)
    finally:
        torch.set_num_threads(before)
    (line,) = [record.getMessage() for record in caplog.records]
    assert line.startswith("CPU threads: 3 (4 core(s) minus 1 data-loader worker(s)")


def test_more_threads_than_cores_is_a_warning_naming_the_slowdown(cores, caplog):
    cores(2)
    with caplog.at_level(logging.INFO, logger="utils.threads"):
        log_threads(choose_threads(2, num_workers=2, environ={}))
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "every step slows down" in warnings[0]


class ThreadsInWorker(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return torch.tensor(torch.get_num_threads()), 0, index, "none"


def test_data_loader_workers_use_one_thread_each():
    """The accounting above counts one core per worker; torch's worker loop guarantees it."""
    from dataset.loaders import build_eval_loader
    dataset = ThreadsInWorker()
    dataset.skip_broken_images = False
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (images, *_rest), = list(build_eval_loader(dataset, batch_size=2, num_workers=1))
    finally:
        torch.set_num_threads(before)
    assert images.tolist() == [1, 1]
