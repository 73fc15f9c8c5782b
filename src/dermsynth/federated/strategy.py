"""`HospitalFedAvg`: Flower's FedAvg strategy with the project's aggregation and reply checks.

Node sampling, message construction and the wait for `min_available_nodes` are Flower's
(`flwr.serverapp.strategy.FedAvg.configure_train`). Aggregation is replaced: replies are checked (only the shared
arrays and scalar metrics may leave a hospital, `messages.check_reply`) and averaged by `state.fedavg` (weights =
each hospital's number of training images, float64 accumulation in the order of hospital names, so the result
does not depend on the order in which replies arrive). Which hospitals answered is kept in `last_round`.
"""

from __future__ import annotations

import json
import sys

import torch
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp.strategy import FedAvg

from .messages import check_reply
from .state import fedavg


class HospitalFedAvg(FedAvg):
    """FedAvg over hospitals. `hospitals`: the run's sorted hospital names (a reply names its hospital by index
    in the metric `hospital-index`); `expected_arrays`: the shared array names; `log`: a text file that receives
    one JSON line per reply (hospital, node, records, counts; never values). Other keyword arguments: `FedAvg`'s."""

    def __init__(self, hospitals: list[str], expected_arrays: set[str], log, **kwargs):
        super().__init__(**kwargs)
        self.hospitals, self.expected_arrays, self.log = list(hospitals), set(expected_arrays), log
        self.last_round: list[tuple[str, int, int, dict]] = []  # (hospital, images, node id, metrics)

    def _collect(self, replies, server_round: int = 0) -> list[tuple[str, int, int, dict, dict]]:
        collected = []
        for message in replies:
            if message.has_error():
                print(f"a hospital failed this round: {message.error.reason}", file=sys.stderr)
                continue
            check_reply(message.content, self.expected_arrays)
            metrics = dict(message.content.metric_records["metrics"])
            hospital = self.hospitals[int(metrics["hospital-index"])]
            arrays = message.content.array_records["arrays"].to_torch_state_dict()
            node = message.metadata.src_node_id
            broken = [name for name, value in arrays.items() if not torch.isfinite(value).all()]
            if broken:  # a diverged hospital must not poison the global model
                print(f"round {server_round}: hospital {hospital} sent NaN or infinite values ({len(broken)} arrays, "
                      f"e.g. {broken[0]}); its reply is left out of the average", file=sys.stderr)
                continue
            self.log.write(json.dumps({"round": server_round, "hospital": hospital, "node": node, "records": sorted(message.content.keys()),
                                       "arrays": len(arrays), "metrics": sorted(metrics)}) + "\n")
            collected.append((hospital, int(metrics["num-examples"]), node, metrics, arrays))
        self.log.flush()
        return collected

    def aggregate_train(self, server_round: int, replies) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg of the valid replies (`state.fedavg`) and their image-weighted losses; (None, None) when none."""
        collected = self._collect(replies, server_round)
        self.last_round = [(h, n, node, m) for h, n, node, m, _ in collected]
        if not collected:
            return None, None
        arrays = fedavg([(h, n, a) for h, n, _, _, a in collected])
        total = sum(n for _, n, _, _, _ in collected)
        metrics = {key: sum(m[key] * n for _, n, _, m, _ in collected) / total for key in ("loss-G", "loss-D")}
        return ArrayRecord(arrays), MetricRecord({**metrics, "num-examples": total})
