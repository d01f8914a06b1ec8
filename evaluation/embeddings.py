"""Embeddings of a whole test set, as the model gives them in evaluation mode."""
import torch
from tqdm import tqdm

from utils.signals import RunInterrupted


def extract_embeddings(model, loader, device, autocast_dtype=None, output_option="plain", should_stop=None):
    """Run ``model`` over ``loader``; returns ``(embeddings, labels, indices)`` on ``device``.

    Loader batches are ``(images, labels, indices, paths)``; the model is
    called as ``model(images, output_option=...)`` and returns
    ``(logits, embedding)``. The model runs in eval mode without gradients
    and goes back to its previous mode afterwards. Embeddings come back as
    float32 even under autocast, labels and dataset indices as int64.
    ``should_stop()`` is asked after every batch; when it says yes the
    extraction ends with ``RunInterrupted`` (a stop within one batch).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    embeddings, labels, indices = [], [], []
    try:
        with torch.no_grad():
            for images, batch_labels, batch_indices, _paths in tqdm(loader, desc="embedding",
                                                                    leave=False, disable=None):
                with torch.autocast(device.type, dtype=autocast_dtype,
                                    enabled=autocast_dtype is not None):
                    _logits, embedding = model(images.to(device, non_blocking=True),
                                               output_option=output_option)
                embeddings.append(embedding.float())
                labels.append(torch.as_tensor(batch_labels, dtype=torch.int64).to(device))
                indices.append(torch.as_tensor(batch_indices, dtype=torch.int64).to(device))
                if should_stop is not None and should_stop():
                    raise RunInterrupted("Stopped during the evaluation")
    finally:
        model.train(was_training)
    if not embeddings:  # every image of the loader was skipped as unreadable
        empty = torch.empty(0, dtype=torch.int64, device=device)
        return torch.empty(0, 0, device=device), empty, empty.clone()
    return torch.cat(embeddings), torch.cat(labels), torch.cat(indices)
