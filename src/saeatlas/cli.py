"""One entry point: ``python -m saeatlas <stage> --params params.yaml [--layer L]``.

One sub-command per row of the stage table (``pipeline.py``), which names the function it
calls; Snakemake and DVC both call exactly these commands. Display and run-time options
(``--no-progress``, ``--threads``, ``--device``) are options here, never params.yaml keys, so
changing them re-runs nothing. A failure exits
non-zero with a one-line reason: 2 for a problem with the inputs or parameters (the message
names the key or file), 1 for anything else (a bug; the traceback goes to the log file).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from saeatlas import __version__
from saeatlas.errors import ParamsError, SaeAtlasError
from saeatlas.pipeline import STAGE, STAGES

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
    parser.add_argument("--no-progress", action="store_true",
                        help="hide progress bars (also: SAEATLAS_PROGRESS=0)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch intra-op threads (default: torch's choice, i.e. the cores given)")


# Read-only tools over a built study, each a module with its own ``main(argv)`` and options
# (``python -m saeatlas <tool> --help``); here so there is one entry point.
TOOLS = {
    "compare": ("saeatlas.report.comparison", "Print ours beside the published numbers (Markdown) for a built study."),
    "depth": ("saeatlas.report.depth", "The depth sweep's table, figure and peak verdicts (--targets: what to build)."),
    "architectures": ("saeatlas.report.architectures", "The architectures side by side (Markdown, CSV, figure) "
                      "for a built study of several sae.architectures."),
    "lobes-sweep": ("saeatlas.analysis.lobes.sweep", "Vary one factor of the published lobes protocol at a time "
                    "on a built study (CSV)."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saeatlas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"saeatlas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    for stage in STAGES:
        p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
        _common(p)
        if "layer" in stage.wildcards:
            p.add_argument("--layer", type=int, required=True, help="one of model.layers")
        if "arch" in stage.wildcards:
            p.add_argument("--arch", required=True, help="one of sae.architectures (SAE architecture)")
        if "size" in stage.wildcards:
            p.add_argument("--size", type=int, required=True, help="one of sae.sizes (dictionary size)")
        if stage.uses_device:
            p.add_argument("--device", default="auto",
                           help="where the work runs: auto (CUDA if available), cpu, cuda, cuda:N")
    p = sub.add_parser("validate", help="Validate a parameter file and print it with defaults filled.",
                       description="Validate a parameter file and print it with defaults filled.")
    _common(p)
    text = "Write the generated files (dvc.yaml, params.schema.yaml), or --check they are current."
    p = sub.add_parser("generate", help=text, description=text)
    p.add_argument("--check", action="store_true", help="exit 1 if a committed generated file is out of date")
    p.add_argument("--root", default=".", metavar="DIR", help="the project root (default: .)")
    p.add_argument("--log-file", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    text = ("Check a results tree against the checksums its stages recorded: activation and code stores, "
            "corpus arrays, model weights, SAE folders, strict JSON. Exits 2 naming each damaged file.")
    p = sub.add_parser("verify", help=text, description=text)
    p.add_argument("results", nargs="?", default="results", help="the results directory (default: results)")
    p.add_argument("--log-file", metavar="FILE", help="also write the log to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    text = ("Record in DVC (dvc commit) every stage whose outputs exist, after a Snakemake run, so that "
            "`dvc status` and `dvc exp run` see what Snakemake built.")
    p = sub.add_parser("dvc-adopt", help=text, description=text)
    p.add_argument("--params", default="params.yaml", metavar="FILE", help="parameter file (default: params.yaml)")
    p.add_argument("--jobs", nargs="*", metavar="JOB",
                   help="DVC job names (stage or stage@layer[-size]); default: every job whose outputs exist")
    p.add_argument("--log-file", metavar="FILE", help="also write the log to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    for name, (_, text) in TOOLS.items():  # listed in --help; main() hands their arguments over as they are
        sub.add_parser(name, help=text, description=text)
    return parser


def _run_options(args: argparse.Namespace) -> None:
    """Display and run-time options: they change how a stage runs, never what it computes."""
    import os

    if getattr(args, "no_progress", False):
        os.environ["SAEATLAS_PROGRESS"] = "0"
    if getattr(args, "threads", None) is not None:
        import torch

        if args.threads < 1:
            raise ParamsError(f"--threads: must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def _dispatch(args: argparse.Namespace) -> int:
    from importlib import import_module

    from saeatlas import config

    if args.command == "generate":
        from saeatlas.generate import write

        stale = write(Path(args.root), check=args.check)
        for path in stale:
            log.log(logging.ERROR if args.check else logging.INFO, "%s %s", path,
                    "is out of date; run `python -m saeatlas generate`" if args.check else "written")
        return 1 if (args.check and stale) else 0

    if args.command in TOOLS:
        from importlib import import_module as load

        load(TOOLS[args.command][0]).main(args.tool_args)
        return 0
    if args.command == "verify":
        from saeatlas.verify import verify_tree

        _run_options(args)
        verify_tree(Path(args.results))
        return 0
    params = config.load(args.params)
    _run_options(args)
    if args.command == "validate":
        import yaml

        sys.stdout.write(yaml.safe_dump(dict(params.raw), sort_keys=False))
        return 0
    if args.command == "dvc-adopt":
        from saeatlas.dvc_adopt import adopt

        adopt(params, args.jobs)
        return 0
    stage = STAGE[args.command]
    kwargs = {w: getattr(args, w) for w in stage.wildcards}
    if stage.uses_device:
        from saeatlas.lm import resolve_device

        resolve_device(args.device)  # a bad --device fails before any work
        kwargs["device"] = args.device
    module, _, function = stage.run.partition(":")
    started = time.perf_counter()
    # The architecture reaches a stage as its params' sae.architecture (every path and the
    # training config read it there), not as an argument.
    job_params = params.for_architecture(kwargs["arch"]) if "arch" in kwargs else params
    getattr(import_module(module), function)(job_params, **{w: v for w, v in kwargs.items() if w != "arch"})
    # The job's last log line: the report's wall-clock per job reads it when tracking is off.
    log.info("%s finished in %.1f s", stage.job_name(kwargs),
             time.perf_counter() - started)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:  # a tool parses its own options
        args = argparse.Namespace(command=argv[0], tool_args=argv[1:])
    else:
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
