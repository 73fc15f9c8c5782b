"""The Flower app of a federated run (flwr ≥ 1.42 Message API): `server_app` and `client_app`.

The app folder `flower-app/` beside this module is what `flwr run` submits (the launcher `launch.py` submits it
as it is; a Flower user does the same, see its README.md): its pyproject.toml names these two objects as the
app's components and declares the run config. The SuperLink starts the ServerApp, and each SuperNode starts the
ClientApp for the messages addressed to it.

Run config (`[tool.flwr.app.config]`, overridden with `flwr run --run-config`): `options` — the run's options file
(`TrainFederatedOptions`: data set, hospitals, classes, recipe; the ServerApp reads it and tells the hospitals what
they need in each train message); `out` — the output folder; `fingerprint` — a JSON file with the data part of the
run's fingerprint (written by the launcher, which sees the data; empty: none); the round settings `rounds`,
`local-steps`, `min-available-nodes`, `round-timeout-s`, `checkpoint-every`, `evaluate-every` (`RoundSettings`,
read by both apps from the run config); for the Simulation Runtime also `lmdb`, `federated-csv`, `state-root`,
`device`, `threads` (in a deployment each SuperNode has those in its own `--node-config`: a hospital's paths are its
own business).
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from .. import console
from ..errors import ConfigError
from .client import Hospital, hospital_options, train_round
from .server import run_federation, server_options

console.setup()  # the SuperLink's and SuperNodes' processes load this module: library warnings as one line each
client_app = ClientApp()
server_app = ServerApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One hospital's round (`client.train_round`): the global arrays in, its trained arrays and metrics out. The
    message's config record holds `options` (JSON, `TrainFederatedOptions.for_hospitals`), `server-round` and
    `run-fingerprint`; the round settings come from the run config."""
    config = msg.content.config_records["config"]
    options = hospital_options(str(config["options"]), dict(context.run_config))
    hospital = Hospital.from_node_config(dict(context.node_config), dict(context.run_config), list(options.hospitals))
    round_number = int(config["server-round"])
    run = str(config["run-fingerprint"]) if "run-fingerprint" in config else ""
    arrays, metrics = train_round(msg.content.array_records["arrays"].to_torch_state_dict(), options, round_number,
                                  hospital, run)
    return Message(content=RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)}), reply_to=msg)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """The federated rounds (`server.run_federation`) for the options, round settings, output folder and data
    fingerprint of the run config (`server.server_options`). Raises ConfigError when the run config names no
    options file or output folder, or its round settings are not the options file's."""
    options = server_options(dict(context.run_config))
    out = str(context.run_config.get("out", ""))
    if not out:
        raise ConfigError("the run config names no output folder: flwr run ... --run-config \"out='<folder>' ...\"")
    data_file = str(context.run_config.get("fingerprint", ""))
    data = json.loads(Path(data_file).read_text()) if data_file else None
    run_federation(grid, options, out, data)
