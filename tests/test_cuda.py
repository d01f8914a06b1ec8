"""CUDA paths: float16 autocast with a gradient scaler, checkpoints with CUDA RNG
state, NCCL under torchrun, exact Recall@K on the GPU. Skipped without a GPU (CI
has none); ``benchmarks/gpu_check.sh`` runs them on a GPU machine.
"""
import json
import math

import pytest
import torch

import train
from evaluation.ranking import same_label_hits
from evaluation.recall import inshop_recall_at_k, recall_at_k
from evaluation.scores import NegativeCosine, SquaredEuclidean
from tests.conftest import (evaluate_best_weights_in_test_mode, interrupted_after_first_epoch,
                            run_torchrun)
from run_folder.checkpoint import load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]


def only_folder(path):
    (folder,) = list(path.iterdir())
    return folder


def test_mixed_precision_training_on_the_gpu_and_its_weights_in_test_mode(tmp_path, write_tiny_config):
    config = write_tiny_config(num_epochs=2, lr_drop_epochs=[2])
    assert train.main(["--config_path", str(config), "--device", "cuda", "--is_apex", "1",
                       "--output_dir", str(tmp_path / "runs")]) == 0
    folder = only_folder(tmp_path / "runs")
    log = (folder / "train.log").read_text()
    assert "device cuda" in log
    assert "Precision: autocast-float16" in log or "Precision: apex" in log
    summary = json.loads((folder / "summary.json").read_text())
    best_recall = summary["best_metrics"]["test_R@1"]
    assert math.isfinite(best_recall)
    # Test mode re-extracts the embeddings on the GPU under the same autocast;
    # GPU kernels may differ in the last bit, so allow one of the 48 queries.
    metrics = evaluate_best_weights_in_test_mode(folder, tmp_path / "test")
    assert metrics["R@1"] == pytest.approx(best_recall, abs=1 / 48 + 1e-9)


def test_a_gpu_run_stopped_after_an_epoch_resumes_on_the_gpu(tmp_path, write_tiny_config, monkeypatch):
    with interrupted_after_first_epoch(monkeypatch):
        assert train.main(["--config_path", str(write_tiny_config()), "--device", "cuda", "--is_apex", "1",
                           "--output_dir", str(tmp_path / "runs")]) == 130
    folder = only_folder(tmp_path / "runs")
    checkpoint = load_checkpoint(folder / "last.pth")
    assert checkpoint["epoch"] == 1 and "cuda" in checkpoint["rng"]
    assert train.main(["--resume", str(folder), "--device", "cuda"]) == 0
    assert load_checkpoint(folder / "last.pth")["epoch"] == 3


def test_one_process_torchrun_on_the_gpu_uses_nccl_ddp_and_sync_bn(tmp_path, write_tiny_config):
    config = write_tiny_config(num_epochs=1, lr_drop_epochs=[2], sync_bn=1)
    result = run_torchrun(["--config_path", str(config), "--output_dir", str(tmp_path / "runs"),
                           "--is_apex", "1", "--device", "cuda"], cwd=tmp_path, nproc=1)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (only_folder(tmp_path / "runs") / "train.log").read_text()
    assert "torchrun: 1 process(es), nccl" in log
    assert "device cuda:0" in log


def tie_heavy_set(num_items, dim, num_classes, seed):
    """Integer coordinates: many exactly equal distances, the hardest case for exactness."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randint(-2, 3, (num_items, dim), generator=generator).float()
    labels = torch.randint(0, num_classes, (num_items,), generator=generator)
    return embeddings, labels


@pytest.mark.parametrize("block_size", (16, 512))
def test_gpu_hits_equal_cpu_hits_on_tie_heavy_data(block_size):
    embeddings, labels = tie_heavy_set(700, 6, 20, seed=0)
    ks = (1, 2, 4, 8, 16)
    on_cpu = same_label_hits(SquaredEuclidean, embeddings, labels, ks, block_size)
    on_gpu = same_label_hits(SquaredEuclidean, embeddings.cuda(), labels.cuda(), ks, block_size)
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), on_cpu)
    gallery, gallery_labels = tie_heavy_set(500, 6, 20, seed=1)
    inshop_cpu = same_label_hits(NegativeCosine, gallery, gallery_labels, ks, block_size,
                                 queries=embeddings, query_labels=labels)
    inshop_gpu = same_label_hits(NegativeCosine, gallery.cuda(), gallery_labels.cuda(), ks, block_size,
                                 queries=embeddings.cuda(), query_labels=labels.cuda())
    assert torch.equal(inshop_gpu.cpu(), inshop_cpu)


def test_recall_keeps_tf32_off_on_the_gpu():
    embeddings, labels = tie_heavy_set(300, 512, 10, seed=2)
    embeddings = embeddings / embeddings.norm(dim=1, keepdim=True).clamp_min(1e-6)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        on_gpu = recall_at_k(embeddings.cuda(), labels.cuda(), (1, 4))
        inshop_gpu = inshop_recall_at_k(embeddings[:100].cuda(), labels[:100].cuda(),
                                        embeddings[100:].cuda(), labels[100:].cuda(), (1, 4))
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert on_gpu == recall_at_k(embeddings, labels, (1, 4))
    assert inshop_gpu == inshop_recall_at_k(embeddings[:100], labels[:100], embeddings[100:], labels[100:], (1, 4))


def test_pseudo_test_graphs_and_refinement_on_the_gpu_equal_the_cpu_ones():
    from evaluation import k_reciprocal_batches, k_reciprocal_batches_inshop
    from evaluation.refinement import RefinementOptions, refine_first_nodes
    from net import build_mpn
    from tests.test_pseudo_test import gnn_params
    embeddings = torch.randn(500, 32, generator=torch.Generator().manual_seed(0))
    graphs = k_reciprocal_batches(embeddings, 7, block_size=64)
    assert torch.equal(k_reciprocal_batches(embeddings.cuda(), 7, block_size=64).cpu(), graphs)
    assert torch.equal(k_reciprocal_batches_inshop(embeddings[:200].cuda(), embeddings[200:].cuda(), 4).cpu(),
                       k_reciprocal_batches_inshop(embeddings[:200], embeddings[200:], 4))
    torch.manual_seed(0)
    mpn = build_mpn(gnn_params(), 32).eval()
    on_cpu = refine_first_nodes(mpn, embeddings, graphs, RefinementOptions(graphs_per_chunk=100))
    on_gpu = refine_first_nodes(mpn.cuda(), embeddings.cuda(), graphs.cuda(), RefinementOptions(graphs_per_chunk=100))
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-5)
