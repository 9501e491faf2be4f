"""python -m party_label --config RUN.yaml [key.sub=value ...]"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from party_label.server import build_label_party, serve
from splitleak.checkpoint import torch_bytes, write_atomic
from splitleak.entry import announce_ready, exit_on_bad_input, parse_process_args, serve_until_done, stop_event


def main(argv: list[str] | None = None) -> int:
    config, args = parse_process_args("party_label", "Serve the label party of a split-learning run.", argv)
    stop = stop_event()
    running = serve(config, party=exit_on_bad_input("party_label", lambda: build_label_party(config)))
    announce_ready(args.ready_file, role="label_party", port=running.port)
    party = running.party
    code = serve_until_done(
        stop,
        party.finished,
        exit_after_finish=config.label_party.exit_after_finish,
        prog="party_label",
        failed=party.failed,
        idle=lambda: time.monotonic() - party.last_call,
        idle_exit_s=config.label_party.idle_exit_s,
    )
    if party.failure is not None:
        print(f"party_label: {party.failure}", file=sys.stderr)
    running.stop(grace_s=5.0)
    if party.finished.is_set():
        final = Path(config.run.dir) / "label_party" / "top.pt"
        try:
            write_atomic(final, torch_bytes(party.top.state_dict()))
        except OSError as err:
            print(f"party_label: cannot write {final}: {err.strerror or err}", file=sys.stderr)
            return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
