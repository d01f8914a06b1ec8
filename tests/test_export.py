"""Issue 27: export.py writes a backbone for ONNX or TorchScript with its JSON, checked against PyTorch."""
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import PIL.Image
import pytest
import torch
import yaml

import export
from dataset.image_folder import read_image_folder
from inference.embed_images import embed_listing
from inference.export import EmbeddingNetwork, TorchScriptNetwork, spec_path
from inference.run_model import load_run_model, weights_source
from recipe import RunRecipe
from schema import config_to_yaml, load_config
from tests.conftest import tiny_train_config

REPO = Path(__file__).resolve().parents[1]

# Random initialisation throughout: nothing is downloaded.
BACKBONES = {
    "resnet18": {},
    "vit": {"models.encoder_params.net_type": "timm:vit_tiny_patch16_224",
            "models.encoder_params.sz_embedding": 16, "dataset.crop_size": 32, "dataset.resize_size": 32},
    "bn_inception": {"models.encoder_params.net_type": "bn_inception",
                     "models.encoder_params.bn_inception": {"embed": 1, "sz_embedding": 16},
                     "dataset.crop_size": 64, "dataset.resize_size": 72},
}


def write_run(folder, pattern_tree, settings):
    """A run folder as train.py leaves it (config.yaml, summary.json, best backbone), untrained weights."""
    raw = tiny_train_config(pattern_tree)
    for dotted, value in settings.items():
        section, key = dotted.rsplit(".", 1)
        target = raw
        for part in section.split("."):
            target = target.setdefault(part, {})
        target[key] = value
    folder.mkdir(parents=True)
    (folder / "raw.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(folder / "raw.yaml")
    (folder / "config.yaml").write_text(config_to_yaml(config))
    torch.manual_seed(0)
    backbone, _ = RunRecipe(config).build_backbone()
    torch.save(backbone.state_dict(), folder / "0.5net_cub.pth")
    (folder / "summary.json").write_text(json.dumps({"best_weights": {"backbone": "0.5net_cub.pth",
                                                                      "mpn": "0.5gnn_net_cub.pth"}}))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pattern_tree):
    root = tmp_path_factory.mktemp("runs")
    return {name: write_run(root / name, pattern_tree, settings) for name, settings in BACKBONES.items()}


def logged(caplog, level):
    return [record.getMessage() for record in caplog.records if record.levelno == level]


def largest_logged_difference(caplog):
    line = next(message for message in logged(caplog, logging.INFO) if "Largest difference" in message)
    return float(line.rsplit(": ", 1)[1])


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_onnx_export_equals_pytorch_on_the_test_images(backbone, runs, tmp_path, caplog):
    output = tmp_path / "model.onnx"
    with caplog.at_level(logging.INFO):
        assert export.main(["--run", str(runs[backbone]), "--format", "onnx", "--output", str(output),
                            "--check", "--check_images", "0"]) == 0
    assert largest_logged_difference(caplog) < 1e-4
    assert "over 48 test images" in " ".join(logged(caplog, logging.INFO))  # 4 test classes x 12
    spec = json.loads(spec_path(output).read_text())
    model = load_run_model(weights_source(runs[backbone]), torch.device("cpu"))
    assert spec["embedding_size"] == {"resnet18": 512, "vit": 16, "bn_inception": 16}[backbone]
    assert spec["distance"] == "euclidean" and spec["embedding_output"] == model.output_option
    assert spec["backbone"] == model.recipe.input.net_type and spec["run"] == str(runs[backbone].resolve())
    for key in ("resize_size", "crop_size", "interpolation", "channel_order", "pixel_scale", "mean", "std"):
        assert spec[key] == model.recipe.input.as_dict()[key], key


def test_onnx_export_takes_any_batch_size(runs, tmp_path):
    output = tmp_path / "model.onnx"
    assert export.main(["--run", str(runs["resnet18"]), "--format", "onnx", "--output", str(output)]) == 0
    model = load_run_model(weights_source(runs["resnet18"]), torch.device("cpu"))
    network = EmbeddingNetwork(model.backbone, model.output_option).eval()
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        images = torch.randn(batch, 3, 24, 24)
        with torch.no_grad():
            expected = network(images).numpy()
        np.testing.assert_allclose(session.run(["embeddings"], {"images": images.numpy()})[0], expected, atol=1e-4)


def test_torchscript_export_equals_pytorch_and_names_its_origin(runs, pattern_tree, tmp_path, caplog):
    output = tmp_path / "model.pt"
    run = runs["resnet18"]
    with caplog.at_level(logging.INFO):
        assert export.main(["--weights", str(run / "0.5net_cub.pth"), "--config_path", str(run / "config.yaml"),
                            "--format", "torchscript", "--output", str(output), "--check"]) == 0
    assert largest_logged_difference(caplog) < 1e-4
    spec = json.loads(spec_path(output).read_text())
    assert spec["run"] is None and spec["weights"] == str((run / "0.5net_cub.pth").resolve())
    # The loaded file embeds a folder exactly as embed.py does.
    model = load_run_model(weights_source(run), torch.device("cpu"))
    embedded = embed_listing(model, read_image_folder(pattern_tree / "images" / "class_05"))
    batch = torch.stack([model.transform(PIL.Image.open(path).convert("RGB"))
                         for path in embedded.absolute_paths()])
    np.testing.assert_allclose(TorchScriptNetwork(output.read_bytes())(batch), embedded.embeddings, atol=1e-4)


def docs_client_code():
    text = (REPO / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/deploy.md should hold exactly one python block, the client"
    return blocks[0]


@pytest.mark.parametrize("backbone", ["resnet18", "bn_inception"])
def test_the_documented_client_embeds_an_image_from_the_json_alone(backbone, runs, pattern_tree, tmp_path,
                                                                  monkeypatch):
    code = docs_client_code()
    assert len(code.strip().splitlines()) <= 15
    output = tmp_path / "model.onnx"
    assert export.main(["--run", str(runs[backbone]), "--format", "onnx", "--output", str(output)]) == 0
    image = pattern_tree / "images" / "class_06" / "img_004.png"
    monkeypatch.setattr(sys, "argv", ["client.py", str(output), str(image)])
    namespace = {"__name__": "__main__"}
    exec(compile(code, "docs/deploy.md client", "exec"), namespace)
    model = load_run_model(weights_source(runs[backbone]), torch.device("cpu"))
    expected = embed_listing(model, read_image_folder(image.parent)).embeddings[4]
    np.testing.assert_allclose(namespace["embedding"], expected, atol=1e-4)


# --------------------------------------------------------------- bad inputs
def assert_refused(caplog, args, *patterns):
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert export.main(args) == 2
    errors = logged(caplog, logging.ERROR)
    assert len(errors) == 1 and "\n" not in errors[0], errors
    for pattern in patterns:
        assert pattern in errors[0], (pattern, errors[0])


def test_an_operation_onnx_cannot_represent_is_one_sentence(runs, tmp_path, caplog, monkeypatch):
    def spectrum(self, images):
        return torch.fft.rfft(images, dim=-1).abs().flatten(1)
    monkeypatch.setattr(EmbeddingNetwork, "forward", spectrum)
    output = tmp_path / "model.onnx"
    assert_refused(caplog, ["--run", str(runs["resnet18"]), "--format", "onnx", "--output", str(output)],
                   "cannot be exported to onnx", "fft_rfft", "--format torchscript")
    assert not output.exists() and not spec_path(output).exists()


def test_missing_onnx_packages_are_one_sentence(runs, tmp_path, caplog, monkeypatch):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "onnxruntime" else real_find_spec(name, *rest))
    assert_refused(caplog, ["--run", str(runs["resnet18"]), "--format", "onnx", "--output",
                            str(tmp_path / "m.onnx")], "pip install onnx onnxruntime")


def test_export_overwrites_nothing(runs, tmp_path, caplog):
    (tmp_path / "model.json").write_text("mine")
    assert_refused(caplog, ["--run", str(runs["resnet18"]), "--format", "onnx", "--output",
                            str(tmp_path / "model.onnx")], "already exists")
    assert (tmp_path / "model.json").read_text() == "mine" and not (tmp_path / "model.onnx").exists()
    assert_refused(caplog, ["--run", str(runs["resnet18"]), "--format", "onnx", "--output",
                            str(tmp_path / "model.json")], "ends in .json")
