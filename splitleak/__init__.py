"""splitleak: split learning over gRPC with a live label-inference adversary.

The one package both parties import: config schema, datasets, model zoo,
tensor codec, transport factories, the generated stubs and the CLI.
"""

__all__ = ["PROTOCOL_VERSION", "__version__", "load_run", "run"]

__version__ = "0.1.0"
# Version of the splitleak.v1 wire contract spoken in Hello (2: Hello carries the cut's shape).
PROTOCOL_VERSION = 2


def run(config=None, **kwargs):
    """Runs a split-learning run and returns its summary (splitleak.api.run)."""
    from splitleak.api import run as _run

    return _run(config, **kwargs)


def load_run(run_dir):
    """Returns a run's records (splitleak.api.load_run)."""
    from splitleak.api import load_run as _load_run

    return _load_run(run_dir)
