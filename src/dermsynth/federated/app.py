"""The Flower app of a federated run (flwr ≥ 1.42 Message API): `server_app` and `client_app`.

The launcher (`deploy.py`) writes a Flower app folder whose pyproject.toml names these two objects as the
app's components; `flwr run` submits it to the SuperLink, which starts the ServerApp, and each SuperNode starts
the ClientApp for the messages addressed to it.

Run config (`flwr run --run-config`): `options` — the run's options file (`TrainFederatedOptions`), `out` — the
output folder, `fingerprint` — a JSON file with the data part of the run's fingerprint (written by the launcher,
which sees the data; empty: none); for the Simulation Runtime also `lmdb`, `federated-csv`, `state-root`, `device`, `threads` (in a
deployment each SuperNode has those in its own `--node-config`: a hospital's paths are its own business).
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client_app = ClientApp()
server_app = ServerApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One hospital's round (`client.train_round`): the global arrays in, its trained arrays and metrics out."""
    from .client import Hospital, options_from_json, train_round
    options = options_from_json(str(msg.content.config_records["config"]["options"]))
    hospital = Hospital.from_node_config(dict(context.node_config), dict(context.run_config), list(options.hospitals))
    config = msg.content.config_records["config"]
    round_number = int(config["server-round"])
    run = str(config["run-fingerprint"]) if "run-fingerprint" in config else ""
    arrays, metrics = train_round(msg.content.array_records["arrays"].to_torch_state_dict(), options, round_number,
                                  hospital, run)
    return Message(content=RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)}), reply_to=msg)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """The federated rounds (`server.run_federation`) for the options, output folder and data fingerprint of the
    run config."""
    import json
    from pathlib import Path

    from .options import TrainFederatedOptions
    from .server import run_federation
    options = TrainFederatedOptions.load(str(context.run_config["options"]))
    data_file = str(context.run_config.get("fingerprint", ""))
    data = json.loads(Path(data_file).read_text()) if data_file else None
    run_federation(grid, options, str(context.run_config["out"]), data)
