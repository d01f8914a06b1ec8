"""A run's backbone as a file for another runtime (ONNX or TorchScript), with the JSON a client needs.

The exported network takes a preprocessed float batch ``images`` (N x 3 x
crop x crop, any N) and returns ``embeddings``: the backbone output that the
run's evaluation ranks by (``eval_params.output_test_enc``), nothing else.
The JSON beside it says how to prepare an image (the run's evaluation
transform, ``RunRecipe.input``) and how to compare embeddings (the run's
distance). Before anything is written the file is loaded into its runtime
and run once, so that an export the runtime cannot represent is refused
instead of shipped.
"""
import importlib
import importlib.util
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dataset.loaders import build_eval_loader
from utils.errors import UserInputError
from utils.safe_load import load_own_torchscript
from utils.boundary import check_new_outputs
from utils.io import atomic_write, atomic_write_text, write_together

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
# The parameters of the evaluation transform (RunRecipe.input); the others only shape training.
EVALUATION_INPUT_KEYS = ("resize_size", "crop_size", "interpolation", "channel_order", "pixel_scale", "mean",
                         "std")
# The example batch is traced with 2 images, so that no size is fixed to 1 by the trace.
EXAMPLE_BATCH = 2
ONNX_PACKAGES = ("onnx", "onnxruntime")


class EmbeddingNetwork(nn.Module):
    """The backbone returning only the embedding of ``output_option``: what a product calls."""

    def __init__(self, backbone, output_option):
        super().__init__()
        self.backbone = backbone
        self.output_option = output_option

    def forward(self, images):
        _logits, embedding = self.backbone(images, output_option=self.output_option)
        return embedding


def spec_path(output):
    """The JSON beside ``output``: same name, ``.json``."""
    return Path(output).with_suffix(".json")


def check_export_output(output):
    """A new model file and a new JSON beside it, in an existing folder: nothing a user made is overwritten."""
    output = Path(output)
    if output.suffix == ".json":
        raise UserInputError(f"--output {output} ends in .json, the name of the JSON written beside the model; "
                             "give e.g. --output model.onnx.")
    return check_new_outputs(output, (output, spec_path(output)))


def check_format_packages(export_format):
    """ONNX needs the onnx and onnxruntime packages: one sentence when they are missing."""
    if export_format != "onnx":
        return
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserInputError(f"--format onnx needs the {' and '.join(missing)} package(s), which are not "
                             "installed; pip install onnx onnxruntime (or give --format torchscript).")


def example_batch(model):
    crop = model.recipe.input.crop_size
    return torch.randn(EXAMPLE_BATCH, 3, crop, crop, generator=torch.Generator().manual_seed(0))


def not_representable(export_format, net_type, error):
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserInputError(f"The backbone {net_type} cannot be exported to {export_format} ({first_line}); "
                          f"try --format {'torchscript' if export_format == 'onnx' else 'onnx'} or another "
                          "backbone.")


def export_bytes(network, example, export_format, net_type):
    """The exported file's bytes; an operation the format lacks is a ``UserInputError``."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporters announce their deprecation; the files they write are current.
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, torch.jit.TracerWarning))
        try:
            if export_format == "onnx":
                torch.onnx.export(network, (example,), buffer, dynamo=False, input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
            else:
                torch.jit.save(torch.jit.trace(network, example), buffer)
        except (RuntimeError, TypeError, ValueError) as error:  # torch.onnx.OnnxExporterError is a RuntimeError
            raise not_representable(export_format, net_type, error) from None
    return buffer.getvalue()


class OnnxRuntimeNetwork:
    """An ONNX file in onnxruntime on the CPU: float32 batch in, embeddings out."""

    def __init__(self, data):
        onnxruntime = importlib.import_module("onnxruntime")
        self.session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])

    def __call__(self, images):
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]


class TorchScriptNetwork:
    """A TorchScript file loaded with ``torch.jit.load`` on the CPU."""

    def __init__(self, data):
        self.module = load_own_torchscript(data).eval()

    def __call__(self, images):
        with torch.no_grad():
            return self.module(images).numpy()


RUNTIMES = {"onnx": OnnxRuntimeNetwork, "torchscript": TorchScriptNetwork}


def load_in_runtime(data, export_format, net_type, example):
    """The exported file in its runtime, after one batch ran through it; failures are a ``UserInputError``."""
    try:
        network = RUNTIMES[export_format](data)
        network(example)
    except Exception as error:  # onnxruntime's errors share no base class below Exception
        raise not_representable(export_format, net_type, error) from None
    return network


def client_spec(model, source, export_format, output, embedding_size):
    """Everything a client needs besides the model file: preprocessing, distance, origin."""
    preprocessing = model.recipe.input.as_dict()
    return {
        "format": export_format,
        "model_file": Path(output).name,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_layout": "NCHW float32, batch size free",
        "preprocessing": ("resize the shorter side to resize_size (interpolation), centre-crop crop_size, "
                          "channels in channel_order on a 0-pixel_scale scale, minus mean, divided by std"),
        **{key: preprocessing[key] for key in EVALUATION_INPUT_KEYS},
        "distance": model.distance,
        "distance_rule": ("euclidean: smaller L2 distance is nearer" if model.distance == "euclidean" else
                          "cosine: larger cosine of the L2-normalised embeddings is nearer"),
        "embedding_size": embedding_size,
        "embedding_output": model.output_option,
        "backbone": model.recipe.input.net_type,
        "run": str(source.config_path.resolve().parent) if source.flag.startswith("--run") else None,
        "config": str(source.config_path.resolve()),
        "weights": str(source.weights_path.resolve()),
    }


def export_model(model, source, export_format, output):
    """Export ``model`` (a ``RunModel``) to ``output`` and its JSON; returns ``(runtime network, spec)``."""
    network = EmbeddingNetwork(model.backbone, model.output_option).cpu().eval()
    example = example_batch(model)
    net_type = model.recipe.input.net_type
    data = export_bytes(network, example, export_format, net_type)
    runtime = load_in_runtime(data, export_format, net_type, example)
    spec = client_spec(model, source, export_format, output, int(runtime(example).shape[1]))
    with write_together():
        atomic_write(output, data, replace=False)
        atomic_write_text(spec_path(output), json.dumps(spec, indent=2) + "\n", replace=False)
    return runtime, spec


def check_images(dataset, count):
    """At most ``count`` image indices evenly spread over ``dataset`` (0: all)."""
    if count == 0 or count >= len(dataset):
        return list(range(len(dataset)))
    return np.unique(np.linspace(0, len(dataset) - 1, count).round().astype(np.int64)).tolist()


def largest_difference(model, runtime, count):
    """Largest absolute difference between PyTorch's and the runtime's embeddings of the run's test images."""
    network = EmbeddingNetwork(model.backbone, model.output_option).cpu().eval()
    largest, compared = 0.0, 0
    for split in model.recipe.test_splits:
        dataset = model.recipe.dataset(split, model.recipe.input.evaluation())
        loader = build_eval_loader(dataset, model.batch_size, model.num_workers,
                                   sampler=check_images(dataset, count))
        for images, _labels, _indices, _paths in loader:
            with torch.no_grad():
                expected = network(images).numpy()
            largest = max(largest, float(np.abs(runtime(images) - expected).max()))
            compared += len(images)
    if compared == 0:
        raise UserInputError("--check found no readable test images in the run's dataset.dataset_path; "
                             "give the run's data or leave out --check.")
    return largest, compared
