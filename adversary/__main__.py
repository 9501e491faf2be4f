"""python -m adversary --config RUN.yaml [key.sub=value ...]  (the sidecar proxy)"""

from __future__ import annotations

import logging
import sys
import time

from adversary.proxy import serve_proxy
from adversary.tap import build_tap
from splitleak.entry import announce_ready, exit_on_bad_input, parse_process_args, serve_until_done, stop_event

log = logging.getLogger("adversary")


def main(argv: list[str] | None = None) -> int:
    config, args = parse_process_args("adversary", "Run the adversary proxy in front of the label party.", argv)
    stop = stop_event()
    running = serve_proxy(config, exit_on_bad_input("adversary", lambda: build_tap(config, resume=args.resume)))
    announce_ready(args.ready_file, role="adversary", port=running.port)
    tap = running.tap
    code = serve_until_done(
        stop,
        tap.finished,
        exit_after_finish=config.adversary.exit_after_finish,
        prog="adversary",
        failed=tap.failed,
        idle=lambda: time.monotonic() - tap.last_exchange,
        idle_exit_s=config.label_party.idle_exit_s,
    )
    if tap.failure is not None:
        print(f"adversary: {tap.failure}", file=sys.stderr)
    running.stop(grace_s=5.0)
    log.info("attack log: %s", tap.log.path)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
