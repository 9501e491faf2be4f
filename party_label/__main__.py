"""python -m party_label --config RUN.yaml [key.sub=value ...]"""

from __future__ import annotations

from pathlib import Path

import torch

from party_label.server import build_label_party, serve
from splitleak.entry import announce_ready, exit_on_bad_input, parse_process_args, serve_until_done, stop_event


def main(argv: list[str] | None = None) -> int:
    config, args = parse_process_args("party_label", "Serve the label party of a split-learning run.", argv)
    stop = stop_event()
    running = serve(config, party=exit_on_bad_input("party_label", lambda: build_label_party(config)))
    announce_ready(args.ready_file, role="label_party", port=running.port)
    serve_until_done(
        stop, running.party.finished, exit_after_finish=config.label_party.exit_after_finish, prog="party_label"
    )
    running.stop(grace_s=5.0)
    checkpoint = Path(config.run.dir) / "label_party" / "top.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save(running.party.top.state_dict(), checkpoint)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
