"""Command line: `python train.py --config_path config/<file>.yaml`.

Trains and evaluates (``mode: train``), evaluates released weights
(``mode: test``) or runs the authors' random search (``mode: hyper_search``).
The config is validated once, up front; a problem the user can fix stops
the run with one sentence and exit code 2 before any long work starts.
"""
import argparse
import logging
import sys
from pathlib import Path

import torch

from utils.checkpoint import resolve_resume_path
from utils.config import load_config
from utils.distributed import Distributed
from utils.errors import UserInputError
from utils.run_dir import attach_log_file, detach_log_file, make_run_dir, setup_console_logging

logger = logging.getLogger("train")

DEFAULT_CONFIG = "config/config_demo_train.yaml"
EXIT_DIVERGED = 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Intra-batch connections for deep metric learning (ICML 2021).")
    parser.add_argument("--config_path", default=DEFAULT_CONFIG, help="YAML config (default: the demo).")
    parser.add_argument("--dataset_path", help="Overrides dataset.dataset_path.")
    parser.add_argument("--bb_path", help="Backbone weights; overrides models.encoder_params.pretrained_path.")
    parser.add_argument("--gnn_path", help="MPN weights; overrides models.gnn_params.pretrained_path.")
    parser.add_argument("--net_type", help="Overrides models.encoder_params.net_type.")
    parser.add_argument("--is_apex", type=int, choices=(0, 1), help="Overrides train_params.is_apex.")
    parser.add_argument("--output_dir", help="Folder for run folders (default: <output_paht>/runs).")
    parser.add_argument("--resume", help="Continue a run: its folder or its last.pth.")
    parser.add_argument("--seed", type=int, help="Overrides train_params.seed.")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
    return parser.parse_args(argv)


def config_overrides(args):
    """Each flag replaces exactly its own key (the authors' --bb_path also set the MPN path)."""
    flags = {
        "dataset.dataset_path": args.dataset_path,
        "models.encoder_params.pretrained_path": args.bb_path,
        "models.gnn_params.pretrained_path": args.gnn_path,
        "models.encoder_params.net_type": args.net_type,
        "train_params.is_apex": args.is_apex,
        "train_params.seed": args.seed,
    }
    return {key: value for key, value in flags.items() if value is not None}


def resolve_device(name):
    """``(device, requested)``; asking for CUDA without a GPU is a user error."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), False
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"--device {name} is not a device name; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name} asks for a GPU but torch sees no CUDA device; use --device cpu.")
    return device, True


def run_name(config):
    encoder = config["models"]["encoder_params"]
    return f"{config['dataset']['dataset_short']}_{encoder['net_type']}_{config['mode']}"


def load_run_config(args):
    """The config of a new run, or of the run that ``--resume`` continues, with the flags applied."""
    resume_path = resolve_resume_path(args.resume) if args.resume else None
    config_path = resume_path.parent / "config.yaml" if resume_path else args.config_path
    config = load_config(config_path, config_overrides(args))
    if resume_path is not None and config["mode"] != "train":
        raise UserInputError(f"--resume {args.resume}: that run has mode '{config['mode']}', and only training "
                             "runs can be resumed; start it again instead.")
    return config, resume_path


def create_run_dir(args, config, resume_path, distributed):
    """A resumed run keeps its folder; under torchrun rank 0 creates it and tells the others."""
    if resume_path is not None:
        return resume_path.parent
    run_dir = None
    if distributed is None or distributed.is_main:
        output_root = Path(args.output_dir) if args.output_dir else Path(config["output_paht"]) / "runs"
        run_dir = make_run_dir(output_root, run_name(config))
    if distributed is not None:
        run_dir = Path(distributed.broadcast_object(str(run_dir)))
    return run_dir


def main(argv=None):
    setup_console_logging()
    args = parse_args(argv)
    # Imported late so that `--help` and config errors answer without loading the models.
    from experiment import build_setup, run_pseudo_test, run_test, run_train, write_resolved_config
    from hyper_search import check_search_space, run_hyper_search
    from trainer import TrainingDiverged, TrainingInterrupted
    from utils.signals import StopRequest

    log_file = distributed = None
    stop_request = StopRequest()
    try:
        distributed = Distributed.from_environment(args.device)
        is_main = distributed is None or distributed.is_main
        if not is_main:
            logging.getLogger().setLevel(logging.WARNING)
        config, resume_path = load_run_config(args)
        device, device_requested = distributed.device_and_request() if distributed else resolve_device(args.device)
        mode = config["mode"]
        if mode == "hyper_search":
            check_search_space(config, args.config_path)
        setup = None if mode == "hyper_search" else build_setup(config, mode, device, device_requested, distributed)
        run_dir = create_run_dir(args, config, resume_path, distributed)
        if is_main:
            log_file = attach_log_file(run_dir)
            if resume_path is None:
                write_resolved_config(config, run_dir)
        logger.info("Run folder %s, device %s, mode %s%s", run_dir, device, mode,
                    f", torchrun: {distributed.world_size} process(es), {distributed.backend()}"
                    if distributed else "")
        if mode == "test":
            run_test(setup, run_dir)
        elif mode == "pseudo_test":
            run_pseudo_test(setup, run_dir)
        elif mode == "hyper_search":
            run_hyper_search(config, run_dir, device, device_requested)
        else:
            stop_request.install()
            try:
                run_train(setup, run_dir, resume_path, stop_request)
            finally:
                stop_request.uninstall()
    except UserInputError as error:
        logger.error("%s", error)
        return UserInputError.exit_code
    except TrainingInterrupted as error:
        logger.warning("%s", error)
        return stop_request.exit_code
    except TrainingDiverged as error:
        logger.error("%s", error)
        return EXIT_DIVERGED
    finally:
        if log_file is not None:
            detach_log_file(log_file)
        if distributed is not None:
            distributed.shutdown()
    logger.info("Results are in %s", run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
