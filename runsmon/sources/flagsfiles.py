"""Flags files: which file in a run directory holds its flags, and reading it.

Shared by the sources that read plain run directories.  Recognised names,
first match wins (:data:`FLAGS_FILES`):

1. ``.guild/attrs/flags`` (a Guild run)
2. ``flags.yaml`` / ``flags.yml`` / ``flags.json``
3. ``hparams.yaml`` (PyTorch Lightning's TensorBoardLogger)
4. ``.hydra/config.yaml`` (Hydra; ``.hydra/overrides.yaml`` names what the
   command line set)
5. ``model_args.yaml`` (KnowIt-style sweep runs)
6. ``config.yaml`` / ``config.json`` / ``args.json`` / ``params.json``

A name given by the user (``flags_file``) is tried before all of these.

YAML is read as the tool that wrote the file reads it.  Files that
PyYAML-based tools write and read back (Guild's attrs, Lightning's
``hparams.yaml``, KnowIt's ``model_args.yaml``) follow PyYAML's YAML 1.1
rules.  Configs (Hydra's ``.hydra/config.yaml``, configs people write by hand)
are read as OmegaConf reads them: as in YAML 1.2, ``1e-3`` is a float (PyYAML
reads it as the string "1e-3"); the rest is as in PyYAML (OmegaConf keeps
``yes``/``no``/``on``/``off`` as booleans, ``017`` as an octal int).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

import yaml

from runsmon.fs import FileSystem

GUILD_FLAGS = ".guild/attrs/flags"
HYDRA_CONFIG = ".hydra/config.yaml"

#: Relative paths of recognised flags files, in order of precedence.
FLAGS_FILES: tuple[str, ...] = (
    GUILD_FLAGS,
    "flags.yaml",
    "flags.yml",
    "flags.json",
    "hparams.yaml",
    HYDRA_CONFIG,
    "model_args.yaml",
    "config.yaml",
    "config.json",
    "args.json",
    "params.json",
)


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads Python tags as plain data instead of failing.

    Lightning's ``hparams.yaml`` may hold ``!!python/tuple`` or objects it
    could not turn into YAML; nothing is ever constructed from them.
    """


def _python_tag(loader: _Loader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    value = loader.construct_scalar(node)
    return value if value else f"<{suffix}>"


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", _python_tag)
_Loader.add_multi_constructor("!", _python_tag)


class _ConfigLoader(_Loader):
    """:class:`_Loader` with the floats of YAML 1.2 that OmegaConf reads (``1e-3``)."""


# OmegaConf's own float resolver (omegaconf/_yaml.py), added after PyYAML's:
# a scalar PyYAML already reads as a number or a bool stays what it was.
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:
         [-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
        |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

#: Flags files that PyYAML-based tools write and read back with PyYAML's
#: YAML 1.1 rules (a plain ``1e-3`` in them is a string the tool wrote).
PYYAML_FILES = frozenset({GUILD_FLAGS, "hparams.yaml", "model_args.yaml"})


def load_yaml(text: str) -> Any:
    """Parse YAML as PyYAML's ``safe_load`` does (Python-specific tags become plain data).

    For files PyYAML-based tools wrote (Guild, MLflow's ``meta.yaml``, wandb).
    """
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_config_yaml(text: str) -> Any:
    """Parse a YAML config as Hydra/OmegaConf reads it: ``lr: 1e-3`` is a float.

    >>> load_config_yaml("lr: 1e-3\\nsteps: 1e3\\nname: 1e-3x\\nflag: yes\\n")
    {'lr': 0.001, 'steps': 1000.0, 'name': '1e-3x', 'flag': True}
    >>> load_yaml("lr: 1e-3\\n")
    {'lr': '1e-3'}
    """
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def find_flags_file(
    fs: FileSystem,
    run_dir: str,
    files: Collection[str],
    dirs: Collection[str],
    extra: str | None = None,
) -> str | None:
    """The relative path of the flags file of ``run_dir``, or None.

    ``files`` and ``dirs`` are the entry names of ``run_dir`` (from a scandir
    the caller already did), so only a file inside ``.guild``/``.hydra`` (or
    a nested ``extra`` name) costs a ``stat``.
    """
    candidates = ((extra,) if extra else ()) + FLAGS_FILES
    for rel in candidates:
        head, sep, _ = rel.partition("/")
        if not sep:
            if rel in files:
                return rel
        elif head in dirs:
            st = fs.stat(f"{run_dir}/{rel}")
            if st is not None and st.is_file:
                return rel
    return None


def parse_flags(text: str, name: str) -> dict[str, Any]:
    """Flags from a flags file's text: JSON for ``.json``, else YAML.

    ``name`` is the file's path; a file of :data:`PYYAML_FILES` is read with
    PyYAML's rules, any other YAML as a config (:func:`load_config_yaml`).
    An empty file is no flags; anything but a mapping is an error.
    """
    if name.endswith(".json"):
        data = json.loads(text) if text.strip() else None
    elif any(name == rel or name.endswith("/" + rel) for rel in PYYAML_FILES):
        data = load_yaml(text)
    else:
        data = load_config_yaml(text)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{name}: expected a mapping, found {type(data).__name__}")
    return dict(data)


def read_flags(fs: FileSystem, path: str) -> dict[str, Any]:
    """Read and parse one flags file (raises OSError or ValueError)."""
    try:
        return parse_flags(fs.read_text(path), path)
    except yaml.YAMLError as e:
        raise ValueError(f"bad YAML: {_yaml_problem(e)}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"bad JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise ValueError("not UTF-8 text") from e


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem} (line {mark.line + 1})" if mark is not None else str(problem)


def parse_hydra_overrides(entries: Any) -> tuple[list[str], frozenset[str]]:
    """Hydra's ``overrides.yaml`` list as (override strings, names set).

    ``key=value``, ``+key=value`` (add) and ``++key=value`` (force add) name
    ``key``; ``~key`` (delete) names nothing, as the flag is gone.  A config
    group choice (``model=resnet``) names the group, the prefix of its
    flattened flags.

    >>> parse_hydra_overrides(["lr=0.1", "+extra.x=2", "++seed=3", "~old", "model=resnet"])
    (['lr=0.1', '+extra.x=2', '++seed=3', '~old', 'model=resnet'], frozenset({...}))
    >>> sorted(parse_hydra_overrides(["lr=0.1", "+extra.x=2", "++seed=3", "~old"])[1])
    ['extra.x', 'lr', 'seed']
    """
    if entries is None:
        return [], frozenset()
    if not isinstance(entries, list):
        raise ValueError("overrides.yaml: expected a list")
    texts = [str(e) for e in entries]
    names: set[str] = set()
    for text in texts:
        if text.startswith("~"):
            continue
        key, sep, _ = text.partition("=")
        if not sep:
            continue
        key = key.lstrip("+").strip()
        # "group@package=choice" sets the group; the package is where it lands.
        key = key.split("@", 1)[0]
        if key:
            names.add(key)
    return texts, frozenset(names)
