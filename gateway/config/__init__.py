"""Configuration: the three TOML files a technician edits, loaded and checked.

``load_config(path)`` returns a :class:`Config` or raises :class:`ConfigError` listing every
problem as ``file:line key: message``; ``summarize(config)`` is what check-config prints.
Models live in :mod:`gateway.config.models`.
"""

from gateway.config.loader import Config, load_config, load_devices
from gateway.config.problems import ConfigError, ConfigProblem
from gateway.config.summary import summarize

__all__ = [
    "Config",
    "ConfigError",
    "ConfigProblem",
    "load_config",
    "load_devices",
    "summarize",
]
