"""Reading a YAML config: unique keys, command-line overrides, then validation (``load_config``).

The schema is the authors' one (their config files load as they are,
misspelled keys ``temperatur`` and ``output_paht`` included) plus a few keys
of ours, each with a default that keeps the authors' behaviour. ``load_config``
returns a plain nested dict with every key present and every value checked;
nothing below ``train.py`` re-reads raw YAML or guesses defaults.
"""
import difflib
from pathlib import Path

import yaml

from schema.checks import check_consistency, check_value, validate
from schema.options import SCHEMA
from utils.errors import UserInputError
from utils.text_files import read_text


def load_config(path, overrides=None):
    """Read, merge command-line overrides into, and validate a YAML config.

    ``overrides`` maps dotted keys (``dataset.dataset_path``) to values;
    each replaces exactly its own key. Returns a complete, checked dict.
    """
    raw = read_yaml(path)
    for dotted_key, value in (overrides or {}).items():
        check_override(dotted_key, value)
        set_dotted(raw, dotted_key, value, source=path)
    refuse_authors_pseudo_mode(raw, path)
    config = validate(raw, SCHEMA, prefix="", source=path)
    check_consistency(config, path)
    return config


class DuplicateKey(Exception):
    def __init__(self, key, first_line, second_line):
        super().__init__(key)
        self.key, self.first_line, self.second_line = key, first_line, second_line


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error.

    (Plain YAML keeps the last value silently: ``lr`` twice trains with the second.)
    """

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, UniqueKeyLoader.construct_mapping)


class ExpandsTooFar(Exception):
    """The document's aliases make it expand, when traversed, beyond ``MAX_EXPANDED_NODES`` (or forever)."""


# Far more than any config holds (the largest has a few hundred values), far less than an alias bomb.
MAX_EXPANDED_NODES = 100_000


def expanded_size(node, limit=MAX_EXPANDED_NODES):
    """The number of nodes of the document once every alias is expanded, as traversing it would.

    Aliases share nodes, so nine lines of ``&a [*b, *b, ...]`` describe a
    billion values (the "billion laughs"): every deep copy, validation or
    dump of the loaded data would walk them all. Counted once per distinct
    node (memoised), so the count itself takes linear time; a node that
    contains itself expands forever.
    """
    sizes, open_nodes = {}, set()

    def size(current):
        key = id(current)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ExpandsTooFar("it refers to itself")
        open_nodes.add(key)
        if isinstance(current, yaml.MappingNode):
            children = [child for pair in current.value for child in pair]
        elif isinstance(current, yaml.SequenceNode):
            children = current.value
        else:
            children = []
        total = 1 + sum(size(child) for child in children)
        open_nodes.discard(key)
        if total > limit:
            raise ExpandsTooFar(f"its aliases expand to more than {limit} values")
        sizes[key] = total
        return total

    return size(node)


def safe_load_unique_keys(text):
    """``yaml.safe_load`` that also refuses a key set twice in one mapping, an alias bomb and a
    document nested deeper than Python's recursion allows (``ExpandsTooFar``); every YAML file and
    ``--set`` value the project reads goes through it."""
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node)
        return loader.construct_document(node)
    except RecursionError:  # PyYAML composes and constructs recursively: '[[[[...' 100,000 deep
        raise ExpandsTooFar("it nests lists or mappings hundreds of levels deep") from None
    finally:
        loader.dispose()


def refuse_authors_pseudo_mode(raw, source):
    """The authors' Cars file says ``mode: "pseudo"``, which in their code trains (only
    modes containing 'test' skip training); say so instead of guessing what was meant."""
    if raw.get("mode") == "pseudo":
        raise UserInputError(
            f"Key 'mode' in {source} is 'pseudo', which in the authors' code trains for "
            "train_params.num_epochs epochs and evaluates with the MPN after each; to evaluate the "
            "weights with the MPN write mode: pseudo_test (or mode: train to train).")


def read_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"Config file {path} does not exist; pass an existing YAML file with "
                             "--config_path (see config/).")
    try:
        raw = safe_load_unique_keys(read_text(path, "config file"))
    except DuplicateKey as error:
        raise UserInputError(f"Config file {path} sets '{error.key}' twice, at lines {error.first_line} and "
                             f"{error.second_line}; keep one of them.") from None
    except ExpandsTooFar as error:
        raise UserInputError(f"Config file {path} is refused: {error}; write the values out plainly (no "
                             "aliases *name that expand, no nesting beyond a config's few levels).") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserInputError(f"Config file {path} is not valid YAML{where}; fix the syntax there.") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"Config file {path} does not hold a mapping of sections; start from one of "
                             "the files in config/.")
    return raw


def check_override(dotted_key, value, source="the command line"):
    """A command-line override names one key of the schema and holds a valid value for it.

    Checked before merging, so that a typo gets the closest valid name and a
    bad value names the command line rather than the config file.
    """
    node, prefix = SCHEMA, ""
    for name in dotted_key.split("."):
        if not isinstance(node, dict) or name not in node:
            choices = list(node) if isinstance(node, dict) else []
            close = difflib.get_close_matches(name, choices, n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else \
                (f"allowed keys here: {', '.join(choices)}." if choices else
                 f"'{prefix.rstrip('.')}' has no keys below it.")
            raise UserInputError(f"Unknown key '{dotted_key}' on {source}; {hint}")
        node, prefix = node[name], f"{prefix}{name}."
    if isinstance(node, dict):
        raise UserInputError(f"Key '{dotted_key}' on {source} is a section; set one of its keys, e.g. "
                             f"'{dotted_key}.{next(iter(node))}'.")
    check_value(value, node, dotted_key, source)


def set_dotted(raw, dotted_key, value, source="the config"):
    """Set ``raw[a][b][c] = value`` for ``dotted_key`` 'a.b.c', creating missing sections.

    A section that ``source`` gave as something else than a mapping (``train_params: 5``) is refused
    here, before the override could be merged into it.
    """
    node = raw
    *parents, leaf = dotted_key.split(".")
    for depth, name in enumerate(parents):
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            section = ".".join(parents[:depth + 1])
            raise UserInputError(f"Key '{section}' in {source} is {node!r} but must be a section of keys; write "
                                 f"it as in the files in config/.")
    node[leaf] = value


def config_to_yaml(config):
    """The resolved config as YAML text (same schema, every key present)."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
