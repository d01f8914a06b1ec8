"""The config schema: every key with its default, type and check; ``load_config`` is the one door."""
from schema.loading import config_to_yaml, load_config, set_dotted
from schema.options import SCHEMA, iter_options

__all__ = ["SCHEMA", "config_to_yaml", "iter_options", "load_config", "set_dotted"]
