"""One entry point: ``python -m saeatlas <stage> --params params.yaml [--layer L]``.

Snakemake and DVC both call exactly these commands (see ``pipeline.py``). A failure exits
non-zero with a one-line reason: 2 for a problem with the inputs or parameters (the message
names the key or file), 1 for anything else (a bug; the traceback goes to the log file).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from saeatlas import __version__
from saeatlas.errors import SaeAtlasError
from saeatlas.pipeline import STAGE

log = logging.getLogger("saeatlas")


def _setup_logging(log_file: str | None, verbose: bool) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    for noisy in ("mlflow", "alembic", "urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", metavar="FILE",
                        help="parameter file (default: params.yaml)")
    parser.add_argument("--log-file", metavar="FILE", help="also write the log to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saeatlas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"saeatlas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    for stage in STAGE.values():
        p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
        _common(p)
        if "layer" in stage.wildcards:
            p.add_argument("--layer", type=int, required=True, help="one of model.layers")
        if "size" in stage.wildcards:
            p.add_argument("--size", type=int, required=True, help="one of sae.sizes (dictionary size)")
        if stage.uses_device:
            p.add_argument("--device", default="auto",
                           help="where the work runs: auto (CUDA if available), cpu, cuda, cuda:N")
    p = sub.add_parser("validate", help="Validate a parameter file and print it with defaults filled.",
                       description="Validate a parameter file and print it with defaults filled.")
    _common(p)
    p = sub.add_parser("dvc-yaml", help="Write dvc.yaml from the stage table (or --check it is current).",
                       description="Write dvc.yaml from the stage table (or --check it is current).")
    p.add_argument("--check", action="store_true", help="exit 1 if the committed dvc.yaml is out of date")
    p.add_argument("--output", default="dvc.yaml", metavar="FILE")
    p.add_argument("--log-file", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    from saeatlas import config, stages
    from saeatlas.pipeline import dvc_yaml

    if args.command == "dvc-yaml":
        text = dvc_yaml()
        path = Path(args.output)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                log.error("%s is out of date; run `python -m saeatlas dvc-yaml`", path)
                return 1
            return 0
        path.write_text(text)
        return 0

    params = config.load(args.params)
    if args.command == "validate":
        import yaml

        sys.stdout.write(yaml.safe_dump(dict(params.raw), sort_keys=False))
        return 0
    stage = STAGE[args.command]
    kwargs = {w: getattr(args, w) for w in stage.wildcards}
    if stage.uses_device:
        from saeatlas.lm import resolve_device

        resolve_device(args.device)  # a bad --device fails before any work
        kwargs["device"] = args.device
    getattr(stages, f"run_{stage.name}")(params, **kwargs)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "log_file", None), getattr(args, "verbose", False))
    try:
        return _dispatch(args)
    except SaeAtlasError as exc:
        log.error("%s", " ".join(str(exc).split()))  # one line, whatever the message holds
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as exc:  # a bug: one line on the console, the traceback in the log file
        log.debug("traceback", exc_info=True)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0,
                                              "traceback", (), sys.exc_info()))
        log.error("%s: %s", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
