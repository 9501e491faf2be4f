"""python -m party_feature --config RUN.yaml [key.sub=value ...]"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import grpc

from party_feature.link import GrpcLink
from party_feature.party import ResumeError, build_feature_party
from splitleak.checkpoint import CheckpointError, torch_bytes, write_atomic
from splitleak.entry import exit_on_bad_input, parse_process_args
from splitleak.runlog import SIDE_CHANNEL

log = logging.getLogger("party_feature")


def main(argv: list[str] | None = None) -> int:
    config, args = parse_process_args("party_feature", "Drive a split-learning run as the feature party.", argv)
    run_dir = Path(config.run.dir)
    party = exit_on_bad_input("party_feature", lambda: build_feature_party(config))
    tap, interceptors, fatal = None, [], (ResumeError,)
    if config.adversary.mode == "interceptor":
        # The adversary's code (its attacks, scikit-learn) is loaded only when it runs in this process.
        from adversary.interceptor import TapInterceptor
        from adversary.tap import AdversaryFailed, build_tap

        tap = build_tap(config, resume=args.resume)
        interceptors, fatal = [TapInterceptor(tap)], (ResumeError, AdversaryFailed)
    link = GrpcLink(config, interceptors=interceptors)
    known = (
        config.adversary.known_labels if config.feature_party.embed_known and config.adversary.mode != "off" else None
    )
    try:
        report = party.run(link, known_samples=known, side_channel=run_dir / SIDE_CHANNEL, resume=args.resume)
    except grpc.RpcError as err:
        print(f"party_feature: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    except fatal as err:
        print(f"party_feature: {err}", file=sys.stderr)
        return 1
    except CheckpointError as err:
        print(f"party_feature: feature party {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("party_feature: interrupted", file=sys.stderr)
        return 130
    finally:
        link.close()
        if tap:
            tap.close()
    final = run_dir / "feature_party" / "bottom.pt"
    try:
        write_atomic(final, torch_bytes(party.bottom.state_dict()))
    except OSError as err:
        print(f"party_feature: cannot write {final}: {err.strerror or err}", file=sys.stderr)
        return 1
    if report.failure:
        print(f"party_feature: training stopped: {report.failure}", file=sys.stderr)
    elif not args.supervised:
        print(
            f"test accuracy {report.finish.test_accuracy:.4f} on {report.finish.test_samples} samples; "
            f"trained {report.train_rounds} rounds in {report.train_seconds:.1f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
