"""Command line: `python train.py --config_path config/<file>.yaml`.

Trains and evaluates (``mode: train``), evaluates released weights
(``mode: test``) or runs the authors' random search (``mode: hyper_search``).
The config is validated once, up front; a problem the user can fix stops
the run with one sentence and exit code 2 before any long work starts.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

import torch
import yaml

from utils.checkpoint import resolve_resume_path
from utils.config import load_config
from utils.distributed import Distributed
from utils.errors import UserInputError
from utils.provenance import environment_record, write_environment
from utils.precision import AS_THE_AUTHORS, resolve_is_apex
from utils.run_dir import attach_log_file, detach_log_file, make_run_dir, setup_console_logging
from utils.threads import apply_threads, choose_threads, log_threads

logger = logging.getLogger("train")

# Relative to this file, so that `python /path/to/train.py` finds it from any folder.
DEFAULT_CONFIG = "config/config_demo_train.yaml"
REPO_ROOT = Path(__file__).resolve().parent
EXIT_DIVERGED = 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Intra-batch connections for deep metric learning (ICML 2021).")
    parser.add_argument("--config_path", default=str(REPO_ROOT / DEFAULT_CONFIG),
                        help=f"YAML config (default: the demo, {DEFAULT_CONFIG} beside train.py).")
    parser.add_argument("--mode", help="Overrides mode: train, test, pseudo_test or hyper_search.")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="Sets one config key, the value read as YAML (repeatable; applied after the other "
                             "flags), e.g. --set train_params.lr=0.001.")
    parser.add_argument("--dataset_path", help="Overrides dataset.dataset_path.")
    parser.add_argument("--bb_path", help="Backbone weights; overrides models.encoder_params.pretrained_path.")
    parser.add_argument("--gnn_path", help="MPN weights; overrides models.gnn_params.pretrained_path.")
    parser.add_argument("--net_type", help="Overrides models.encoder_params.net_type.")
    parser.add_argument("--is_apex", type=is_apex_value, help="authors, 0 or 1; overrides train_params.is_apex.")
    parser.add_argument("--output_dir", help="Folder for run folders (default: <output_paht>/runs).")
    parser.add_argument("--resume", help="Continue a run: its folder or its last.pth.")
    parser.add_argument("--seed", type=int, help="Overrides train_params.seed.")
    parser.add_argument("--threads", type=int, help="Overrides train_params.threads (CPU threads of torch).")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
    return parser.parse_args(argv)


def is_apex_value(text):
    """``--is_apex``: 'authors', 0 or 1, as the config key takes them."""
    if text in ("0", "1"):
        return int(text)
    if text == AS_THE_AUTHORS:
        return text
    raise argparse.ArgumentTypeError(f"invalid value {text!r}; use authors, 0 or 1")


def config_overrides(args):
    """Each flag replaces exactly its own key (the authors' --bb_path also set the MPN path);
    then every ``--set KEY.PATH=VALUE`` in the order given."""
    flags = {
        "mode": args.mode,
        "dataset.dataset_path": args.dataset_path,
        "models.encoder_params.pretrained_path": args.bb_path,
        "models.gnn_params.pretrained_path": args.gnn_path,
        "models.encoder_params.net_type": args.net_type,
        "train_params.is_apex": args.is_apex,
        "train_params.seed": args.seed,
        "train_params.threads": args.threads,
    }
    overrides = {key: value for key, value in flags.items() if value is not None}
    for setting in args.settings:
        key, value = parse_setting(setting)
        overrides[key] = value
    return overrides


def parse_setting(setting):
    """``'train_params.lr=0.001'`` -> ``('train_params.lr', 0.001)``: the value is read as YAML."""
    key, separator, text = setting.partition("=")
    if not separator or not key.strip():
        raise UserInputError(f"--set {setting} is not KEY.PATH=VALUE; write it like --set train_params.lr=0.001.")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError:
        raise UserInputError(f"--set {setting}: the value {text!r} is not valid YAML; quote it or fix "
                             "its syntax.") from None


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


def choose_cpu_threads(config):
    """The CPU threads of this process, set before any model is built (utils/threads.py)."""
    choice = choose_threads(config["train_params"]["threads"], config["dataset"]["nb_workers"],
                            processes_on_machine=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    apply_threads(choice)
    return choice


def command_line(argv):
    """The command as typed (``python`` + script + arguments), also for an in-process ``main(argv)``."""
    return ["python", *sys.argv] if argv is None else ["python", "train.py", *argv]


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
    from evaluation.clustering import nmi_backend
    from experiment import build_setup, run_test, run_train, write_resolved_config
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
        threads = choose_cpu_threads(config)
        device, device_requested = distributed.device_and_request() if distributed else resolve_device(args.device)
        config, precision_note = resolve_is_apex(config, device)
        mode = config["mode"]
        if mode == "hyper_search":
            check_search_space(config, args.config_path)
        setup = None if mode == "hyper_search" else build_setup(config, mode, device, device_requested, distributed)
        run_dir = create_run_dir(args, config, resume_path, distributed)
        if is_main:
            log_file = attach_log_file(run_dir)
            if resume_path is None:
                write_resolved_config(config, run_dir)
            write_environment(run_dir, environment_record(
                command_line(argv), REPO_ROOT, device, threads.threads, nmi_backend(),
                distributed.world_size if distributed else 1))
        logger.info("Run folder %s, device %s, mode %s%s", run_dir, device, mode,
                    f", torchrun: {distributed.world_size} process(es), {distributed.backend()}"
                    if distributed else "")
        log_threads(threads)
        if precision_note:
            logger.info("%s", precision_note)
        if mode == "test":
            run_test(setup, run_dir)
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
