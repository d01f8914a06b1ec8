"""Issues 7 and 30: the commands of README and docs/ name files, flags and config keys that exist; the docs pages are linked and current."""
import re
import shlex
from pathlib import Path

import pytest

from schema import SCHEMA, iter_options

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = {"README.md": README} | {f"docs/{page.name}": page.read_text() for page in DOCS}
ALL_PAGES = "\n".join(PAGES.values())


def section(title, text=README):
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, f"README has no section '{title}'"
    return match.group(1)


def page(name):
    """The text of docs/<name>, which must exist and start with a title and a link back to the README."""
    text = PAGES[f"docs/{name}"]
    assert text.startswith("# ") and "](../README.md)" in text.split("\n\n", 2)[1], name
    return text


def shell_commands(text):
    """Every command line inside ```bash blocks, and every `python ...` in inline code or tables."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        commands += [line.strip() for line in block.splitlines() if line.strip()]
    commands += re.findall(r"`((?:python|pip|torchrun|conda) [^`]+)`", text)
    return [part.strip() for command in commands for part in command.split("&&")]


COMMANDS = [command for text in PAGES.values() for command in shell_commands(text)]


def test_quick_start_is_exactly_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", section("Quick start"), flags=re.S)
    assert [block.strip() for block in blocks] == [
        "pip install -r requirements.txt && python train.py",
        "pip install -r requirements-dev.txt && pytest",
    ]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "-r requirements-dev.txt" in ci and re.search(r"^pytest$", ci, flags=re.M)


def defined_flags(source):
    return set(re.findall(r'add_argument\("(--\w+)"', source.read_text()))


def module_file(module):
    path = REPO.joinpath(*module.split("."))
    return next((file for file in (path.with_suffix(".py"), path / "__main__.py") if file.is_file()), None)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_names_existing_files_and_known_flags(command):
    words = shlex.split(command)
    if words == ["pytest"]:
        assert (REPO / "pyproject.toml").is_file() and (REPO / "tests").is_dir()
    elif words[:2] == ["pip", "install"] and "-r" in words:
        assert (REPO / words[words.index("-r") + 1]).is_file()
    elif words[:2] == ["pip", "install"]:  # an optional extra: named in a requirements file
        requirements = (REPO / "requirements.txt").read_text() + (REPO / "requirements-dev.txt").read_text()
        for package in words[2:]:
            assert re.search(rf"^{re.escape(package)}\b", requirements, flags=re.M), package
    elif words[0] == "conda":
        assert (REPO / words[words.index("-f") + 1]).is_file() if "-f" in words else True
    elif words[:3] == ["python", "-m", "dataset.prepare"] and words[3] == "table":
        from dataset.prepare import parse_args
        parse_args(words[3:])  # exits (SystemExit) on an unknown flag or a missing argument
    elif words[:3] == ["python", "-m", "dataset.prepare"]:
        assert words[3] in ("sop", "inshop", "cars") and len(words) == 6
    else:
        if words[:2] == ["python", "-m"]:
            script = module_file(words[2])
            assert script is not None, words[2]
            known_flags = defined_flags(script)
        else:
            script = next(word for word in words if word.endswith(".py"))
            assert (REPO / script).is_file()
            # train.py (also under torchrun) defines its flags; embed.py, retrieve.py and export.py theirs,
            # retrieve.py and export.py taking embed.py's too (add_model_arguments).
            known_flags = defined_flags(REPO / script)
            if script in ("retrieve.py", "export.py"):
                known_flags |= defined_flags(REPO / "embed.py")
        for word in words:
            if word.startswith("--") and "=" not in word and "nproc" not in word:
                assert word in known_flags, word
        if "--config_path" in words:
            assert (REPO / words[words.index("--config_path") + 1]).is_file()


def test_the_commands_of_readme_and_docs_are_checked():
    assert any("train.py" in command for command in shell_commands(README))
    assert {"README.md", "docs/reproducing.md", "docs/released_weights.md", "docs/multi_gpu.md"} <= {
        name for name, text in PAGES.items() if shell_commands(text)}


def test_every_dotted_config_key_in_readme_and_docs_exists():
    keys = {key for key, _ in iter_options(SCHEMA)}
    sections = {key.rsplit(".", 1)[0] for key in keys if "." in key}
    mentioned = set(re.findall(r"`((?:[a-z_]+\.)+[a-z_]+)(?::[^`]*)?`", ALL_PAGES))
    file_suffixes = (".py", ".pth", ".txt", ".yaml", ".yml", ".md", ".png", ".csv", ".json", ".log", ".zip", ".npz",
                     ".onnx", ".pt", ".index")
    mentioned = {key for key in mentioned if not key.endswith(file_suffixes)
                 and not key.startswith(("dataset.prepare", "torch.", "sklearn."))}
    assert mentioned, "no config keys found"
    unknown = sorted(key for key in mentioned if key not in keys and key not in sections
                     and not any(full.endswith("." + key) for full in keys))
    assert unknown == []


def test_configuration_reference_lists_every_key():
    reference = page("configuration.md")
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
    # what a user of their environment looks for and does not find
    "torch-scatter", "python -m benchmarks.mpn",
])
def test_differences_name_what_the_authors_code_ran(behaviour):
    assert behaviour in page("differences.md")


def test_configuration_page_is_what_schema_reference_writes():
    from schema import reference
    assert (REPO / "docs" / "configuration.md").read_text(encoding="utf-8") == reference.render(), \
        reference.STALE


def test_schema_reference_check_says_when_the_page_is_stale(tmp_path, monkeypatch, capsys):
    from schema import reference
    page_file = tmp_path / "configuration.md"
    monkeypatch.setattr(reference, "PAGE", page_file)
    assert reference.main(["--check"]) == 1  # missing
    assert reference.STALE in capsys.readouterr().err
    assert reference.main([]) == 0 and page_file.read_text(encoding="utf-8") == reference.render()
    assert reference.main(["--check"]) == 0
    page_file.write_text(reference.render() + "edited\n", encoding="utf-8")
    assert reference.main(["--check"]) == 1
    assert "docs/configuration.md is stale; run python -m schema.reference" in capsys.readouterr().err


def test_every_docs_page_is_linked_from_the_readme_and_has_a_title():
    assert DOCS, "docs/ has no pages"
    linked = set(re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)", section("Documentation")))
    assert linked == {f"docs/{path.name}" for path in DOCS}
    for path in DOCS:
        page(path.name)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_relative_link_points_to_an_existing_file(name):
    base = (REPO / name).parent
    targets = re.findall(r"\]\(([^)\s]+)\)", PAGES[name])
    relative = [target.split("#")[0] for target in targets if not re.match(r"[a-z]+:", target)]
    missing = [target for target in relative if target and not (base / target).is_file()]
    assert missing == []
