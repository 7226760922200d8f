"""PyTorch's ``SummaryWriter.add_hparams`` layout.

``runs/<date>_<host>/`` holds the training curves; ``add_hparams`` opens a
second writer in a timestamp subdirectory (``str(time.time())``) and writes
the three hparams summaries (experiment, session start, session end) and
each metric of ``metric_dict`` once, as ``torch.utils.tensorboard`` does.
As in torch, numbers and booleans are stored as ``number_value`` (a float).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from sample_projects.layouts._events import T0, write_events

RUNS = {
    "Jan02_03-04-05_host": ({"lr": 0.1, "bsize": 32, "optim": "sgd", "use_bn": True}, 0.81),
    "Jan02_04-00-00_host": ({"lr": 0.01, "bsize": 64, "optim": "adam", "use_bn": False}, 0.87),
}


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    plugin = summary_pb2.SummaryMetadata.PluginData(
        plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString()
    )
    value = summary_pb2.Summary.Value(
        tag=tag, metadata=summary_pb2.SummaryMetadata(plugin_data=plugin)
    )
    return summary_pb2.Summary(value=[value])


def hparams_summaries(
    hparam_dict: Mapping[str, object], metric_dict: Mapping[str, float]
) -> list[summary_pb2.Summary]:
    """The experiment, session-start and session-end summaries torch writes."""
    version = metadata.PLUGIN_DATA_VERSION
    ssi = plugin_data_pb2.SessionStartInfo()
    infos = []
    for key, value in hparam_dict.items():
        if value is None:
            continue
        if isinstance(value, (int, float)):  # bools too, as in torch
            ssi.hparams[key].number_value = value
            infos.append(api_pb2.HParamInfo(name=key, type=api_pb2.DATA_TYPE_FLOAT64))
        elif isinstance(value, str):
            ssi.hparams[key].string_value = value
            infos.append(api_pb2.HParamInfo(name=key, type=api_pb2.DATA_TYPE_STRING))
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=k)) for k in metric_dict]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)
    return [
        _summary(
            metadata.EXPERIMENT_TAG,
            plugin_data_pb2.HParamsPluginData(experiment=experiment, version=version),
        ),
        _summary(
            metadata.SESSION_START_INFO_TAG,
            plugin_data_pb2.HParamsPluginData(session_start_info=ssi, version=version),
        ),
        _summary(
            metadata.SESSION_END_INFO_TAG,
            plugin_data_pb2.HParamsPluginData(session_end_info=end, version=version),
        ),
    ]


def make(root: str) -> dict[str, tuple[dict, float]]:
    """Write two runs under ``root/runs``; returns {run name: (hparams, final accuracy)}."""
    for i, (name, (hp, acc)) in enumerate(RUNS.items()):
        run = os.path.join(root, "runs", name)
        start = T0 + i * 3600
        curve = [acc - 0.3, acc - 0.1, acc]
        write_events(run, {"loss": [1.0, 0.5, 0.3], "accuracy": curve}, start)
        # add_hparams: metric_dict is logged once, at global_step 0, in its own writer.
        stamp = f"{start + 40:.6f}"
        write_events(
            os.path.join(run, stamp),
            {"hparam/accuracy": [acc]},
            start + 40,
            summaries=hparams_summaries(hp, {"hparam/accuracy": acc}),
        )
    return RUNS
