"""Test modes: evaluate given weights once (``test``), and with the MPN refining each test graph (``pseudo_test``)."""
import logging

from engine.components import build_refinement_options
from engine.hooks import draw_test_pictures
from evaluation import format_metrics
from run_folder.layout import CONFIG_NAME, LOG_NAME, TEST_METRICS_NAME, write_json
from utils.precision import initialize_apex
from utils.signals import RunInterrupted

logger = logging.getLogger(__name__)

# pseudo_test: the pictures of the refined embeddings, beside those of the backbone's in pictures/.
REFINED_PICTURES = "mpn_refined"


def evaluate_once(run_dir, evaluate):
    """``evaluate()`` of a test run; a stop request during it says what the run folder holds."""
    try:
        return evaluate()
    except RunInterrupted:
        raise RunInterrupted.at("during the test evaluation", f"{run_dir} holds only {CONFIG_NAME} and {LOG_NAME}, "
                                                              f"run the test again for {TEST_METRICS_NAME}") from None


def run_test(setup, run_dir):
    """Evaluate the backbone (weights of ``models.encoder_params.pretrained_path``) once."""
    logger.info("Precision: %s", setup.precision.name)
    backbone, _ = initialize_apex(setup.precision, setup.backbone)
    metrics = evaluate_once(run_dir, lambda: setup.evaluators["test"].evaluate(
        backbone, **setup.data.eval_loaders["test"]))
    logger.info("Test: %s", format_metrics(metrics))
    if setup.distributed is None or setup.distributed.is_main:
        record = dict(metrics)
        if "NMI" in metrics:  # which k-means produced it: NMI differs between back ends
            record["nmi_backend"] = setup.evaluators["test"].kmeans_backend
        write_json(run_dir / TEST_METRICS_NAME, record)
        draw_test_pictures(setup.config, run_dir, setup.evaluators["test"].last, setup.data.eval_loaders["test"])
    return metrics


def run_pseudo_test(setup, run_dir):
    """Evaluate the backbone, then the embeddings the MPN refines on each test item's graph of
    k-reciprocal neighbours (weights of ``models.gnn_params.pretrained_path``); metrics.json
    holds both sets and the seconds of each stage; pictures/ shows both, as a test run's does."""
    if setup.config["models"]["gnn_params"]["pretrained_path"] == "no":
        logger.warning("pseudo_test without MPN weights (models.gnn_params.pretrained_path: no): "
                       "the refinement uses a randomly initialised MPN")
    logger.info("Precision: %s", setup.precision.name)
    (backbone, mpn), _ = initialize_apex(setup.precision, [setup.backbone, setup.mpn])
    result = evaluate_once(run_dir, lambda: setup.evaluators["test"].evaluate_refined(
        backbone, mpn, build_refinement_options(setup.config), **setup.data.eval_loaders["test"]))
    seconds = result["seconds"]
    logger.info("Test, backbone only: %s (embedding %.1f s, metrics %.1f s)", format_metrics(result["backbone"]),
                seconds["embedding"], seconds["backbone_metrics"])
    logger.info("Test, MPN-refined: %s (graphs %.1f s, refinement %.1f s, metrics %.1f s)",
                format_metrics(result["mpn_refined"]), seconds["graphs"], seconds["refinement"],
                seconds["refined_metrics"])
    if setup.distributed is None or setup.distributed.is_main:
        write_json(run_dir / TEST_METRICS_NAME, result)
        evaluator, loaders = setup.evaluators["test"], setup.data.eval_loaders["test"]
        draw_test_pictures(setup.config, run_dir, evaluator.last, loaders, heading="pseudo_test run, backbone")
        draw_test_pictures(setup.config, run_dir, evaluator.last_refined, loaders, REFINED_PICTURES,
                           "pseudo_test run, MPN-refined")
    return result
