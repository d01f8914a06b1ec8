"""Issue 7: README's commands name files, flags and config keys that exist."""
import re
import shlex
from pathlib import Path

import pytest

from schema import SCHEMA, iter_options

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def section(title):
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert match, f"README has no section '{title}'"
    return match.group(1)


def shell_commands(text):
    """Every command line inside ```bash blocks, and every `python ...` in inline code or tables."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        commands += [line.strip() for line in block.splitlines() if line.strip()]
    commands += re.findall(r"`((?:python|pip|torchrun|conda) [^`]+)`", text)
    return [part.strip() for command in commands for part in command.split("&&")]


REPRODUCTION = section("Quick start") + section("Reproducing the paper") + section("Using the authors' released weights") \
    + section("Several GPUs")


def test_quick_start_is_exactly_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", section("Quick start"), flags=re.S)
    assert [block.strip() for block in blocks] == [
        "pip install -r requirements.txt && python train.py",
        "pip install -r requirements-dev.txt && pytest",
    ]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "-r requirements-dev.txt" in ci and re.search(r"^pytest$", ci, flags=re.M)


@pytest.mark.parametrize("command", shell_commands(REPRODUCTION))
def test_every_command_names_existing_files_and_known_flags(command):
    words = shlex.split(command)
    if words == ["pytest"]:
        assert (REPO / "pyproject.toml").is_file() and (REPO / "tests").is_dir()
    elif words[:2] == ["pip", "install"]:
        assert (REPO / words[words.index("-r") + 1]).is_file()
    elif words[0] == "conda":
        assert (REPO / words[words.index("-f") + 1]).is_file() if "-f" in words else True
    elif words[:3] == ["python", "-m", "dataset.prepare"]:
        assert words[3] in ("sop", "inshop", "cars") and len(words) == 6
    else:
        script = next(word for word in words if word.endswith(".py"))
        assert (REPO / script).is_file()
        known_flags = set(re.findall(r'add_argument\("(--\w+)"', (REPO / "train.py").read_text()))
        for word in words:
            if word.startswith("--") and "=" not in word and "nproc" not in word:
                assert word in known_flags, word
        if "--config_path" in words:
            assert (REPO / words[words.index("--config_path") + 1]).is_file()


def test_every_dotted_config_key_in_the_readme_exists():
    keys = {key for key, _ in iter_options(SCHEMA)}
    sections = {key.rsplit(".", 1)[0] for key in keys if "." in key}
    mentioned = set(re.findall(r"`((?:[a-z_]+\.)+[a-z_]+)(?::[^`]*)?`", README))
    file_suffixes = (".py", ".pth", ".txt", ".yaml", ".yml", ".md", ".png", ".csv", ".json", ".log", ".zip")
    mentioned = {key for key in mentioned if not key.endswith(file_suffixes)
                 and not key.startswith(("dataset.prepare", "torch.", "sklearn."))}
    assert mentioned, "no config keys found"
    unknown = sorted(key for key in mentioned if key not in keys and key not in sections
                     and not any(full.endswith("." + key) for full in keys))
    assert unknown == []


def test_configuration_reference_lists_every_key():
    reference = section("Configuration reference")
    listed = set(re.findall(r"^\| `([^`]+)` \|", reference, flags=re.M))
    assert listed == {key for key, _ in iter_options(SCHEMA)}


def test_demo_config_is_the_default_of_config_path():
    import train
    assert train.DEFAULT_CONFIG == "config/config_demo_train.yaml"
    assert (REPO / train.DEFAULT_CONFIG).is_file()


@pytest.mark.parametrize("behaviour", [
    # what the authors' code ran, reproduced by default, with the option for ours
    "`is_apex: authors`", "`single_bn_update: 1`", "gamma 7", "**ResNet-34**", "`eval_params.kmeans: paper`",
    "`dataset.erasing_fill: colour`",
    # library defaults checked against torch 1.5/1.7, torchvision 0.6, scikit-learn 0.23
    "antialias", "`RandomResizedCrop`", "`zero_grad`", "10 restarts", "`N_sma >= 5`",
    # theirs, not reproduced
    "anomaly detection", "DataParallel", "seeds torch once at import",
])
def test_differences_name_what_the_authors_code_ran(behaviour):
    assert behaviour in section("Differences from the authors' code")
