"""``train.py`` under torchrun whose rank 1 dies (``os._exit``) at the start of step 1 of epoch 2 (tests/test_distributed.py)."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

import train  # noqa: E402
from engine.hooks import Hook  # noqa: E402
from tests.conftest import add_training_hooks  # noqa: E402

DYING_EXIT_CODE = 17


class DieAtStep(Hook):
    def before_step(self, trainer, epoch, step, steps_per_epoch):
        if os.environ.get("RANK") == "1" and (epoch, step) == (2, 1):
            os._exit(DYING_EXIT_CODE)


if __name__ == "__main__":
    add_training_hooks(pytest.MonkeyPatch(), DieAtStep())
    sys.exit(train.main(sys.argv[1:]))
