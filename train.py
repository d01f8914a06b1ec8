"""Command line: `python train.py --config_path config/<file>.yaml`.

Trains and evaluates (``mode: train``), evaluates released weights
(``mode: test``; ``--run RUN --mode test|pseudo_test`` a finished run's own)
or runs the authors' random search (``mode: hyper_search``).
The config is validated once, up front; a problem the user can fix stops
the run with one sentence and exit code 2 before any long work starts.
"""
import argparse
import logging
import os
import sys
import time
from pathlib import Path

import yaml

from run_folder.checkpoint import resolve_resume_path, resume_command
from schema import load_config
from schema.loading import DuplicateKey, ExpandsTooFar, safe_load_unique_keys
from utils.devices import resolve_device
from utils.distributed import Distributed, lost_a_peer
from utils.errors import UserInputError
from utils.precision import AS_THE_AUTHORS, resolve_is_apex
from run_folder.layout import CONFIG_NAME, LOG_NAME, SUMMARY_NAME, write_resolved_config, write_summary
from run_folder.lock import RunFolderLock
from run_folder.provenance import environment_record, write_environment
from run_folder.resume import ALLOW_FLAG, describe, inexact_resume_note, plan_resume
from run_folder.run_dir import attach_log_file, detach_log_file, make_run_dir
from utils.boundary import command
from utils.console import setup_console_logging
from utils.threads import apply_threads, choose_threads, log_threads

logger = logging.getLogger("train")

# Relative to this file, so that `python /path/to/train.py` finds it from any folder.
DEFAULT_CONFIG = "config/config_demo_train.yaml"
REPO_ROOT = Path(__file__).resolve().parent
EXIT_DIVERGED = 1
EVALUATION_MODES = ("test", "pseudo_test")
EXIT_PEER_LOST = 1
OTHER_RANKS_EXIT_DELAY_S = 2.0


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
    parser.add_argument("--run", help="With --mode test or pseudo_test: evaluate the best weights of this finished "
                                      "training run folder (or 'latest', the newest in runs/) with its own config.")
    parser.add_argument(ALLOW_FLAG, action="store_true",
                        help="With --resume: accept changes that alter the numbers from where the run continues "
                             "(CPU threads, device, library versions, evaluation batching); the run records that "
                             "it was not resumed exactly.")
    parser.add_argument("--seed", type=int, help="Overrides train_params.seed.")
    parser.add_argument("--label", help="Overrides label: a name for the run that tools.results shows.")
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
        "label": args.label,
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
        return key.strip(), safe_load_unique_keys(text)
    except (yaml.YAMLError, DuplicateKey, ExpandsTooFar):
        raise UserInputError(f"--set {key.strip()}=...: the value {text[:80]!r} is not valid YAML of a value (or "
                             "sets a key twice, or nests or expands without end); quote it or fix its syntax.") \
            from None


def run_name(config):
    encoder = config["models"]["encoder_params"]
    return f"{config['dataset']['dataset_short']}_{encoder['net_type']}_{config['mode']}"


def load_run_config(args):
    """The config of a new run, or of the run that ``--resume`` continues, with the flags applied.

    Returns ``(config, resume)``; ``resume`` is None for a new run, else a
    ``run_folder.resume.Resume`` (the checkpoint, the changes, whether the
    run is already finished).
    """
    if args.run:
        return load_config(*evaluation_of_run(args)), None
    if not args.resume:
        return load_config(args.config_path, config_overrides(args)), None
    resume_path = resolve_resume_path(args.resume)
    run_dir = resume_path.parent
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise UserInputError(f"--resume {args.resume}: the run folder {run_dir} has no {CONFIG_NAME}, which "
                             "records the run to continue (--config_path is not used with --resume); put "
                             f"the run's {CONFIG_NAME} back, or start a new run.")
    config = load_config(config_path, config_overrides(args))
    if config["mode"] != "train":
        raise UserInputError(f"--resume {args.resume}: that run has mode '{config['mode']}', and only training "
                             "runs can be resumed; start it again instead.")
    return config, plan_resume(resume_path, config)


def evaluation_of_run(args):
    """``(config path, overrides)`` of ``--run RUN --mode test|pseudo_test``: the run's config.yaml, its
    best backbone and MPN files (named by its summary.json), then the other flags."""
    from inference.run_model import best_weights_files, resolve_run_folder
    if args.mode not in EVALUATION_MODES or args.resume:
        raise UserInputError(f"--run {args.run} evaluates a finished training run; add --mode pseudo_test "
                             "(backbone and MPN-refined) or --mode test (backbone), without --resume.")
    if args.config_path != str(REPO_ROOT / DEFAULT_CONFIG) or args.bb_path or args.gnn_path:
        raise UserInputError(f"--run {args.run} takes the config and the weights from the run folder; drop "
                             "--config_path, --bb_path and --gnn_path, or drop --run.")
    run_dir = resolve_run_folder(args.run)
    backbone, mpn = best_weights_files(run_dir)
    logger.info("--run %s: its config.yaml, best backbone %s and MPN %s", run_dir, backbone.name, mpn.name)
    overrides = {"models.encoder_params.pretrained_path": str(backbone),
                 "models.gnn_params.pretrained_path": str(mpn), **config_overrides(args)}
    return run_dir / CONFIG_NAME, overrides


def record_run_start(run_dir, config, resume, environment):
    """config.yaml (new run, or a resume that changed keys), the log of the changes, environment*.json."""
    if resume is None or resume.changes or not resume.exact:
        note = inexact_resume_note(resume.all_records()) if resume is not None else ""
        write_resolved_config(config, run_dir, note)
    if resume is not None and resume.changes:
        logger.info("Resuming with %s, recorded in %s", describe(resume.changes), run_dir / CONFIG_NAME)
    write_environment(run_dir, environment)


def choose_cpu_threads(config):
    """The CPU threads of this process, set before any model is built (utils/threads.py)."""
    choice = choose_threads(config["train_params"]["threads"], config["dataset"]["nb_workers"],
                            processes_on_machine=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    apply_threads(choice)
    return choice


def command_line(argv):
    """The command as typed (``python`` + script + arguments), also for an in-process ``main(argv)``."""
    return ["python", *sys.argv] if argv is None else ["python", "train.py", *argv]


def create_run_dir(args, config, resume, distributed, run_lock):
    """A resumed run keeps its folder (its lock already held); under torchrun rank 0 creates it, locks it
    before anything is written there, and tells the others."""
    if resume is not None:
        return resume.run_dir
    run_dir = None
    if distributed is None or distributed.is_main:
        output_root = Path(args.output_dir) if args.output_dir else Path(config["output_paht"]) / "runs"
        run_dir = make_run_dir(output_root, run_name(config))
        run_lock.hold(run_dir)
    if distributed is not None:
        run_dir = Path(distributed.broadcast_object(str(run_dir)))
    return run_dir


def report_failure(error, run_dir, is_main):
    """The sentence once (rank 0 under torchrun), last in train.log; a run folder's summary says it failed.

    The other ranks exit silently, a moment later: torchrun stops the
    remaining processes as soon as one exits, and rank 0 must get to print.
    """
    if not is_main:
        time.sleep(OTHER_RANKS_EXIT_DELAY_S)
        return
    logger.error("%s", error)
    mark_failed(run_dir, str(error))


def mark_failed(run_dir, why):
    """The run folder's summary.json says that the run failed, and why (unless the run had finished)."""
    if run_dir is not None and not (Path(run_dir) / SUMMARY_NAME).exists():
        try:
            write_summary(run_dir, {"status": "failed", "error": why})
        except UserInputError:
            pass  # the disk that failed the run may not take this file either; the log has the sentence


@command("train.py")
def main(argv=None):
    setup_console_logging()
    args = parse_args(argv)
    # Imported late so that `--help` and config errors answer without loading the models.
    from evaluation.clustering import resolve_kmeans_backend
    from engine.build import build_setup, run_train
    from engine.test_modes import run_pseudo_test, run_test
    from engine.hyper_search import check_search_space, run_hyper_search
    from engine.trainer import TrainingDiverged
    from utils.signals import RunInterrupted, StopRequest

    log_file = distributed = run_dir = None
    is_main = True
    stop_request = StopRequest()
    run_lock = RunFolderLock()
    try:
        distributed = Distributed.from_environment(args.device)
        is_main = distributed is None or distributed.is_main
        if not is_main:
            logging.getLogger().setLevel(logging.WARNING)
        config, resume = load_run_config(args)
        if is_main and resume is not None:
            run_lock.hold(resume.run_dir)  # before building: a run another process writes is refused at once
        if resume is not None and resume.finished:
            logger.info("%s", resume.finished_message())
            return 0
        threads = choose_cpu_threads(config)
        device, device_requested = distributed.device_and_request() if distributed else resolve_device(args.device)
        config, precision_note = resolve_is_apex(config, device)
        mode = config["mode"]
        environment = environment_record(
            command_line(argv), REPO_ROOT, device, threads.threads,
            resolve_kmeans_backend(config["eval_params"]["kmeans"], config["dataset"]["dataset_short"]),
            distributed.world_size if distributed else 1)
        if resume is not None:
            resume.check_environment(environment, args.allow_different_numbers)
        if mode == "hyper_search":
            check_search_space(config, args.config_path)
        setup = None if mode == "hyper_search" else build_setup(config, mode, device, device_requested, distributed,
                                                                stop_request)
        run_dir = create_run_dir(args, config, resume, distributed, run_lock)
        if is_main:
            log_file = attach_log_file(run_dir)
            record_run_start(run_dir, config, resume, environment)
        logger.info("Run folder %s, device %s, mode %s%s", run_dir, device, mode,
                    f", torchrun: {distributed.world_size} process(es), {distributed.backend()}"
                    if distributed else "")
        log_threads(threads)
        if precision_note:
            logger.info("%s", precision_note)
        stop_request.install()
        try:
            if mode == "test":
                run_test(setup, run_dir)
            elif mode == "pseudo_test":
                run_pseudo_test(setup, run_dir)
            elif mode == "hyper_search":
                run_hyper_search(config, run_dir, device, device_requested, stop_request)
            else:
                run_train(setup, run_dir, resume, stop_request)
        finally:
            stop_request.uninstall()
    except UserInputError as error:
        report_failure(error, run_dir, is_main)
        return UserInputError.exit_code
    except RunInterrupted as error:
        logger.warning("%s", error)
        return stop_request.exit_code
    except KeyboardInterrupt:
        kept = f"what {run_dir} held before is kept" if run_dir else "nothing was written"
        logger.warning("Stopped at once by SIGINT; %s.", kept)
        return stop_request.exit_code
    except TrainingDiverged as error:
        report_failure(error, run_dir, is_main)
        return EXIT_DIVERGED
    except Exception as error:  # noqa: BLE001 - a lost peer is reported here, a bug by utils.boundary
        if distributed is not None and isinstance(error, RuntimeError) and lost_a_peer(error):
            kept = f"{run_dir} keeps its last completed epoch; {resume_command(run_dir)}" if run_dir else \
                "nothing was written"
            logger.error("Another process of this torchrun run stopped (%s), so rank %d stops too; %s.",
                         " ".join(str(error).split())[:120], distributed.rank, kept)
            return EXIT_PEER_LOST
        if is_main:
            mark_failed(run_dir, f"stopped on an unexpected {type(error).__name__}, a bug of this project; "
                                 f"its traceback is in {LOG_NAME}")
        raise
    finally:
        if log_file is not None:
            detach_log_file(log_file)
        run_lock.release()
        if distributed is not None:
            distributed.shutdown()
    logger.info("Results are in %s", run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
