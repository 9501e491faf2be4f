"""The label party's gRPC server: a thin servicer over LabelService."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from party_label.party import LabelParty
from party_label.service import LabelService
from splitleak.config import config_digest
from splitleak.data import load_dataset, split_ids
from splitleak.errors import ProtocolError
from splitleak.transport import add_health_and_reflection, bind_server, create_server
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.v1 import splitleak_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

__all__ = ["LabelPartyServicer", "RunningServer", "build_label_party", "serve"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LabelParty"].full_name


class LabelPartyServicer(pb_grpc.LabelPartyServicer):
    def __init__(self, service: LabelService) -> None:
        self.service = service

    @staticmethod
    def _call(handler, request, context):
        try:
            return handler(request)
        except ProtocolError as err:
            context.abort(getattr(grpc.StatusCode, err.status), err.message)

    def Hello(self, request, context):
        return self._call(self.service.hello, request, context)

    def TrainStep(self, request, context):
        return self._call(self.service.train_step, request, context)

    def Infer(self, request, context):
        return self._call(self.service.infer, request, context)

    def Finish(self, request, context):
        return self._call(self.service.finish, request, context)


def build_label_party(config) -> LabelParty:
    """Returns the label party for a run: it loads the labels only, never the features."""
    dataset = load_dataset(config.data, config.run.seed)
    labels = dataset.labels()
    split = split_ids(len(labels), test_fraction=config.data.test_fraction, seed=config.run.seed)
    return LabelParty(
        config,
        labels=labels,
        split=split,
        num_classes=dataset.num_classes,
        input_shape=dataset.input_shape,
        digest=config_digest(config),
    )


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    party: LabelParty

    def stop(self, grace_s: float = 2.0) -> None:
        self.server.stop(grace_s).wait()


def serve(config, *, party: LabelParty | None = None) -> RunningServer:
    """Returns the started label-party server (config.label_party.port 0 picks a free port)."""
    party = party or build_label_party(config)
    server = create_server(config.transport)
    pb_grpc.add_LabelPartyServicer_to_server(LabelPartyServicer(LabelService(party)), server)
    add_health_and_reflection(server, [SERVICE_NAME])
    port = bind_server(server, config.label_party.host, config.label_party.port, config.transport)
    server.start()
    log.info("label party serving %s on %s:%d", config.run.id, config.label_party.host, port)
    return RunningServer(server, port, party)
