"""The label party's gRPC server: a thin servicer over LabelService."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from party_label.party import LabelParty
from party_label.service import LabelService
from splitleak.config import config_digest
from splitleak.data import load_dataset, split_ids
from splitleak.errors import ProtocolError
from splitleak.transport import add_health_and_reflection, bind_server, create_server
from splitleak.v1 import splitleak_pb2 as pb

log = logging.getLogger(__name__)

__all__ = ["LabelPartyServicer", "RunningServer", "build_label_party", "serve"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LabelParty"].full_name


class LabelPartyServicer:
    """The LabelParty service over LabelService. Requests arrive as bytes and are parsed here, so that a
    message that is not a valid protobuf gets INVALID_ARGUMENT like any other malformed input (gRPC's own
    deserializer would answer INTERNAL)."""

    def __init__(self, service: LabelService) -> None:
        self.service = service

    def handlers(self) -> grpc.GenericRpcHandler:
        methods = {
            "Hello": (pb.HelloRequest, self.service.hello),
            "TrainStep": (pb.TrainStepRequest, self.service.train_step),
            "Infer": (pb.InferRequest, self.service.infer),
            "Finish": (pb.FinishRequest, self.service.finish),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    self._method(request_type, handler), response_serializer=lambda reply: reply.SerializeToString()
                )
                for name, (request_type, handler) in methods.items()
            },
        )

    @staticmethod
    def _method(request_type, handler):
        def call(raw: bytes, context):
            try:
                request = request_type.FromString(raw)
            except DecodeError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a valid {request_type.__name__}: {err}")
            try:
                return handler(request)
            except ProtocolError as err:
                context.abort(getattr(grpc.StatusCode, err.status), err.message)
            except Exception as err:  # a bug, not the peer's fault: say so rather than gRPC's bare UNKNOWN
                log.exception("%s failed", request_type.__name__)
                context.abort(grpc.StatusCode.INTERNAL, f"label party error: {type(err).__name__}: {err}")

        return call


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
    server.add_generic_rpc_handlers((LabelPartyServicer(LabelService(party)).handlers(),))
    add_health_and_reflection(server, [SERVICE_NAME])
    port = bind_server(server, config.label_party.host, config.label_party.port, config.transport)
    server.start()
    log.info("label party serving %s on %s:%d", config.run.id, config.label_party.host, port)
    return RunningServer(server, port, party)
