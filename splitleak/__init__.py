"""splitleak: split learning over gRPC with a live label-inference adversary.

The one package both parties import: config schema, datasets, model zoo,
tensor codec, transport factories, the generated stubs and the CLI.
"""

__all__ = ["PROTOCOL_VERSION", "__version__"]

__version__ = "0.1.0"
# Version of the splitleak.v1 wire contract spoken in Hello.
PROTOCOL_VERSION = 1
