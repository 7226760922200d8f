"""Run sources: callables that list runs from where some tool wrote them."""

from __future__ import annotations

import inspect
import os

from runsmon.fs import LOCAL, FileSystem
from runsmon.sources.base import CombinedRuns, RunSource, combine

__all__ = [
    "KINDS",
    "CombinedRuns",
    "DirRuns",
    "GuildRuns",
    "MLflowRuns",
    "MLflowSQLiteRuns",
    "MLflowServerRuns",
    "RunSource",
    "WandbRuns",
    "combine",
    "describe_kind",
    "detect_kind",
    "detect_source",
]

#: Source kinds, as ``detect_source(kind=...)`` and ``--source`` name them.
KINDS = ("guild", "mlflow", "wandb", "dirs")

#: How many entries of a directory detection looks at, at most.
_PEEK = 50


def _is_dir(fs: FileSystem, path: str) -> bool:
    st = fs.stat(path)
    return st is not None and st.is_dir


def _child_dirs(fs: FileSystem, path: str) -> list[str]:
    try:
        entries = fs.scandir(path)
    except OSError:
        return []
    dirs = sorted(e.path for e in entries if e.is_dir and not e.name.startswith("."))
    return dirs[:_PEEK]


def _is_guild(fs: FileSystem, path: str) -> bool:
    runs = os.path.join(path, "runs")
    if _is_dir(fs, runs) and (
        os.path.basename(path) == ".guild"
        or _is_dir(fs, os.path.join(path, "cache"))
        or any(_is_dir(fs, os.path.join(d, ".guild")) for d in _child_dirs(fs, runs))
    ):
        return True
    return any(
        fs.stat(os.path.join(d, ".guild", "opref")) is not None for d in _child_dirs(fs, path)
    )


def _is_mlflow(fs: FileSystem, path: str) -> bool:
    if os.path.basename(path) == "mlruns" or _is_dir(fs, os.path.join(path, "mlruns")):
        return True
    for d in _child_dirs(fs, path):
        meta = os.path.join(d, "meta.yaml")
        st = fs.stat(meta)
        if st is not None and st.is_file and st.size < 65536:
            try:
                if "experiment_id" in fs.read_text(meta) and not _is_dir(
                    fs, os.path.join(d, ".hydra")
                ):
                    return True
            except (OSError, UnicodeDecodeError):
                continue
    return False


def _is_wandb(fs: FileSystem, path: str) -> bool:
    from runsmon.sources.wandb import is_run_dir_name

    name = os.path.basename(path)
    if is_run_dir_name(name):
        try:
            return any(e.name.endswith(".wandb") for e in fs.scandir(path))
        except OSError:
            return False
    tops = [path, os.path.join(path, "wandb")]
    return any(is_run_dir_name(os.path.basename(d)) for t in tops for d in _child_dirs(fs, t))


def _mlflow_db(path: str, fs: FileSystem) -> str | None:
    from runsmon.sources.mlflow_sqlite import database_path

    return database_path(path, fs)


def _is_server_url(path: str) -> bool:
    from runsmon.sources.mlflow_server import is_server_url

    return is_server_url(path)


def detect_kind(path: str, fs: FileSystem = LOCAL) -> str:
    """Which kind of source fits ``path``: a Guild home or runs directory, an
    MLflow store, database or tracking server URL, a wandb directory, else a tree of run
    directories ("dirs")."""
    if _is_server_url(os.fspath(path)):
        return "mlflow"
    if _mlflow_db(os.fspath(path), fs) is not None:
        return "mlflow"
    path = os.path.normpath(os.fspath(path))
    if _is_guild(fs, path):
        return "guild"
    if _is_mlflow(fs, path):
        return "mlflow"
    if _is_wandb(fs, path):
        return "wandb"
    return "dirs"


#: What each kind of source reads, as a hint names it.
_KIND_NAMES = {
    "guild": "a Guild home",
    "mlflow": "an MLflow store",
    "wandb": "a wandb directory",
    "dirs": "a tree of run directories",
}


def describe_kind(kind: str) -> str:
    """What a source kind reads, for messages ("a Guild home")."""
    return _KIND_NAMES.get(kind, f"{kind} runs")


def _source_class(kind: str) -> type[RunSource]:
    if kind == "guild":
        from runsmon.sources.guild import GuildRuns

        return GuildRuns
    if kind == "mlflow":
        from runsmon.sources.mlflow import MLflowRuns

        return MLflowRuns
    if kind == "wandb":
        from runsmon.sources.wandb import WandbRuns

        return WandbRuns
    if kind == "dirs":
        from runsmon.sources.dirs import DirRuns

        return DirRuns
    raise ValueError(f"unknown source kind {kind!r} (one of: {', '.join(KINDS)})")


def detect_source(path: str, kind: str | None = None, **options: object) -> RunSource:
    """The source for ``path``: ``kind`` when given, else :func:`detect_kind`'s choice.

    Options the chosen source does not take (``flags_file`` for an MLflow
    store, say) and options given as None are left out.
    """
    fs = options.get("fs") or LOCAL
    if _is_server_url(os.fspath(path)):
        if kind not in (None, "mlflow"):
            raise ValueError(f"{path} is read as an MLflow tracking server, not as {kind!r} runs")
        from runsmon.sources.mlflow_server import MLflowServerRuns

        params = inspect.signature(MLflowServerRuns.__init__).parameters
        return MLflowServerRuns(
            path, **{k: v for k, v in options.items() if v is not None and k in params}
        )  # type: ignore[arg-type]
    detected = detect_kind(path, fs)  # type: ignore[arg-type]
    chosen = kind or detected
    cls = _source_class(chosen)
    if chosen == "mlflow" and _mlflow_db(os.fspath(path), fs) is not None:
        from runsmon.sources.mlflow_sqlite import MLflowSQLiteRuns

        cls = MLflowSQLiteRuns
    params = inspect.signature(cls.__init__).parameters
    accepted = {k: v for k, v in options.items() if v is not None and k in params}
    source = cls(path, **accepted)  # type: ignore[arg-type]
    if chosen != detected:
        source.suggest = (detected, os.path.normpath(os.fspath(path)))
    return source


def __getattr__(name: str) -> object:
    # Sources are imported lazily: `runsmon.sources` stays light to import.
    kinds = {"GuildRuns": "guild", "DirRuns": "dirs", "MLflowRuns": "mlflow", "WandbRuns": "wandb"}
    if name in kinds:
        return _source_class(kinds[name])
    if name == "MLflowServerRuns":
        from runsmon.sources.mlflow_server import MLflowServerRuns

        return MLflowServerRuns
    if name == "MLflowSQLiteRuns":
        from runsmon.sources.mlflow_sqlite import MLflowSQLiteRuns

        return MLflowSQLiteRuns
    raise AttributeError(name)
