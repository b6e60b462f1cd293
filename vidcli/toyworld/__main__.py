"""``python -m vidcli.toyworld``: build the toy world, serve its exact judge, measure its oracle.

    python -m vidcli.toyworld build DIR [--quick] [--seed N]
    python -m vidcli.toyworld critic DIR [--quick] [--seed N]
    python -m vidcli.toyworld judge [--host 127.0.0.1] [--port 0] [--url-file FILE]
    python -m vidcli.toyworld oracle-accuracy [--count N] [--seed N]
    python -m vidcli.toyworld report OUT [--quick] [--seed N] [--critic DIR]
    python -m vidcli.toyworld gradient-check [CRITIC] [--quick] [--seed N] [--count N] [--steps N] [--blur PX]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path


class Terminated(BaseException):
    """SIGTERM (``kill``, ``timeout``, a job scheduler's time limit), raised in the main thread so that the
    build and the report end the commands they started and keep what is done, as on Ctrl-C."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _serve(args: argparse.Namespace) -> int:
    from vidcli.testing.server import serve_until_signalled
    from vidcli.toyworld.judge import judge_server

    return serve_until_signalled(judge_server, args.host, args.port, args.url_file, "toy judge")


def _build(args: argparse.Namespace) -> int:
    from vidcli.toyworld.build import build

    report = build(args.dir, seed=args.seed, quick=args.quick, force=args.force)
    print(json.dumps(report, indent=1))
    return 0


def _critic(args: argparse.Namespace) -> int:
    import logging

    from vidcli.toyworld.curriculum.critic import train_curriculum

    # An hour and more: each stage's progress on stderr (the eyes stage's process logs nothing).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    state = train_curriculum(args.dir, seed=args.seed, quick=args.quick)
    print(json.dumps(state, indent=1))
    print(f"critic: {args.dir / 'critic'}")
    return 0


def _accuracy(args: argparse.Namespace) -> int:
    from vidcli.toyworld.accuracy import oracle_accuracy

    print(json.dumps(oracle_accuracy(args.count, seed=args.seed), indent=1))
    return 0


def _report(args: argparse.Namespace) -> int:
    from vidcli.toyworld.report import last_line, report

    result = report(args.out, quick=args.quick, seed=args.seed, workers=args.jobs, critic=args.critic)
    print(f"report: {args.out / 'report.md'}")
    print(last_line(result))
    return 0


def _gradient(args: argparse.Namespace) -> int:
    from vidcli.toyworld.gradient import gradient_check, summary_line

    result = gradient_check(args.critic, seed=args.seed, quick=args.quick, count=args.count, steps=args.steps,
                            blur=args.blur)
    print(json.dumps(result, indent=1))
    print(summary_line(result))
    return 0


def _blur(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10:  # 3σ must stay inside a 32-px frame, which the blur mirrors at its edges
        raise argparse.ArgumentTypeError(f"must be a number of pixels from 0 to 10, got {text!r}")
    return value


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _critic_dir(text: str) -> Path:
    from vidcli.toyworld.report import check_critic

    try:
        return check_critic(Path(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidcli.toyworld", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    parser.set_defaults(kept="finished stages and runs are kept; the same command continues from them")
    build = sub.add_parser("build", help="write the world's records, media and trained models into DIR (cached)")
    build.add_argument("dir", type=Path)
    build.add_argument("--quick", action="store_true", help="smaller world and shorter training, for CI")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--force", action="store_true", help="rebuild even when DIR holds a build of the same key")
    build.set_defaults(run=_build)
    critic = sub.add_parser("critic", help="train the toy critic by its curriculum into DIR/critic (cached; "
                            "about 75 minutes on 2 cores, see docs/toyworld.md)")
    critic.add_argument("dir", type=Path)
    critic.add_argument("--quick", action="store_true",
                        help="short stages (a few minutes): to try the command, not a critic that sees")
    critic.add_argument("--seed", type=int, default=0)
    critic.set_defaults(run=_critic)
    judge = sub.add_parser("judge", help="serve the exact toy judge/teacher (OpenAI-compatible) until SIGTERM")
    judge.add_argument("--host", default="127.0.0.1")
    judge.add_argument("--port", type=int, default=0, help="0 lets the kernel pick a free one")
    judge.add_argument("--url-file", default=None, help="write the base URL here once listening (removed at exit)")
    judge.set_defaults(run=_serve)
    accuracy = sub.add_parser("oracle-accuracy", help="the oracle's accuracy per property on renders and mp4 copies")
    accuracy.add_argument("--count", type=int, default=1000, help="scenes to draw")
    accuracy.add_argument("--seed", type=int, default=12345)
    accuracy.set_defaults(run=_accuracy)
    rep = sub.add_parser("report", help="run each method in the toy world through vidcli; write OUT/report.md")
    rep.add_argument("out", type=Path)
    rep.add_argument("--quick", action="store_true", help="the quick build and shorter runs, for CI")
    rep.add_argument("--seed", type=int, default=0, help="the build's seed (the runs' seeds are in the report)")
    rep.add_argument("--jobs", type=_at_least_one, default=min(2, os.cpu_count() or 1), metavar="N",
                     help="vidcli commands at once, one thread each, from all three methods' runs (default: 2, or 1 "
                          "on a one-core machine)")
    rep.add_argument("--critic", type=_critic_dir, default=None, metavar="DIR",
                     help="the --vlm of the DRF and ReViSE runs instead of the build's critic: a saved Qwen2.5-VL "
                          "folder, such as DIR/critic of `python -m vidcli.toyworld critic DIR`")
    rep.set_defaults(run=_report)
    grad = sub.add_parser("gradient-check", help="move the generator's held-out videos along a critic's pixel "
                          "gradient (the rich TA reward drf-tune reads) and let the oracle read them: does the "
                          "gradient add the captions' facts?")
    grad.add_argument("critic", type=_critic_dir, nargs="?", default=None, metavar="CRITIC",
                      help="a saved Qwen2.5-VL folder (default: the build's critic)")
    grad.add_argument("--quick", action="store_true", help="the quick build")
    grad.add_argument("--seed", type=int, default=0, help="the build's seed")
    grad.add_argument("--count", type=_at_least_one, default=32, metavar="N", help="held-out captions (default 32)")
    grad.add_argument("--steps", type=_at_least_one, default=15, metavar="N",
                      help="signed steps of 2/255 on the frames (default 15)")
    grad.add_argument("--blur", type=_blur, default=0.0, metavar="PX",
                      help="blur each step's gradient over the frame by a Gaussian of PX pixels before its sign, "
                      "so the steps add no texture finer than that (default 0: as it is; at most 10)")
    grad.set_defaults(run=_gradient, kept="the build's finished stages are kept; the check itself keeps nothing "
                      "and starts again when run again")
    args = parser.parse_args(argv)
    from vidcli.toyworld.build import CommandFailed
    from vidcli.toyworld.report import StaleOutput

    # The judge serves until SIGTERM and stops on it its own way.
    previous = signal.signal(signal.SIGTERM, _terminated) if args.run is not _serve else None
    try:
        return args.run(args)
    except Terminated:
        print(f"terminated: {args.kept}", file=sys.stderr)
        return 143
    except StaleOutput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CommandFailed as e:
        # The command's own last lines say why; runs and stages finished so far are kept.
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: {args.kept}", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
