"""The ``lthgan`` command line: search, train, eval, prune, transfer, report, profile.

Thin by design: each command parses its options, calls the library and prints. The options
of ``search``, ``train`` and ``transfer`` are generated from the fields of
:class:`lthgan.search.SearchConfig` (each field's metadata says which commands show it), so
flags and config never drift. Library errors name settings by field (``target_sparsity``);
:func:`_flags` turns those names into flags (``--target-sparsity``). Bad input prints one line
on stderr and exits with code 2, before anything trains.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import click
from click.core import ParameterSource

__all__ = ["main", "config_options", "CLIError"]


class CLIError(click.ClickException):
    """A usage problem: one line on stderr, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class RunFailed(click.ClickException):
    """The run itself failed (training diverged, a file could not be written): one line,
    exit code 1."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _usage_errors() -> tuple[type[BaseException], ...]:
    from .data import DataError
    from .metrics import MetricsError
    from .profile import ProfileError
    from .search import RunDirError, SearchError
    from .search.report import ReportError
    from .ticket import TicketError

    return (SearchError, RunDirError, ReportError, TicketError, DataError, MetricsError, ProfileError)


#: words of the library's messages that name a setting by the library's keyword
_ALIASES = {"root=DIR": "--data-root DIR", "download=True": "--download"}


def _flags(message: str, fields: Iterable[str]) -> str:
    """``message`` with the named fields written as flags."""
    for f in sorted(set(fields), key=len, reverse=True):
        message = re.sub(rf"(?<![\w\-]){re.escape(f)}(?![\w\-])", "--" + f.replace("_", "-"), message)
    for word, flag in _ALIASES.items():
        message = message.replace(word, flag)
    return message


def _handle_errors(f: Callable) -> Callable:
    """Usage errors become one-line exits (code 2); divergence and write failures exit with 1;
    an interrupt says how to continue."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt as e:
            where = getattr(e, "run_dir", None)
            how = f"; continue with: lthgan {click.get_current_context().info_name} --resume {where}" \
                if where is not None else ""
            click.echo(f"interrupted{how}", err=True)
            sys.exit(130)
        except Exception as e:
            from .gans import TrainingDiverged

            if isinstance(e, TrainingDiverged):
                raise RunFailed(str(e)) from None
            if isinstance(e, _usage_errors()):
                raise CLIError(_flags(str(e), getattr(e, "fields", ()))) from None
            if isinstance(e, OSError) and e.filename is not None:
                raise RunFailed(f"cannot write or read {e.filename}: {e.strerror or e}") from None
            raise

    return wrapper


# --------------------------------------------------------------------------- dataclass -> options


def _click_type(fld: dataclasses.Field):
    md = fld.metadata
    choices = md.get("cli_choices") or md.get("choices")
    if choices is not None:
        return click.Choice(list(choices() if callable(choices) else choices))
    kind = md.get("kind")
    if kind == "open01":
        return click.FloatRange(0.0, 1.0, min_open=True, max_open=True)
    if kind in ("posint", "nonnegint"):
        return click.IntRange(min=md.get("minimum", 1 if kind == "posint" else 0))
    if kind == "nonneg":
        return click.FloatRange(min=0.0)
    if kind == "file":
        return click.Path(exists=True, dir_okay=False)
    return str


def config_options(cls, command: str) -> Callable:
    """Decorator adding one click option per field of ``cls`` whose metadata lists
    ``command``. The option's destination is the field name, its default the field's."""

    def deco(f: Callable) -> Callable:
        for fld in reversed(dataclasses.fields(cls)):
            md = fld.metadata
            if command not in md.get("commands", ()):
                continue
            if "flag" in md:
                f = click.option(md["flag"], fld.name, default=fld.default, show_default=True,
                                 help=md["help"])(f)
                continue
            kw: dict[str, Any] = {"type": _click_type(fld), "default": fld.default, "help": md["help"]}
            if fld.default is not None:
                kw["show_default"] = True
            if "metavar" in md:
                kw["metavar"] = md["metavar"]
            f = click.option("--" + fld.name.replace("_", "-"), fld.name, **kw)(f)
        return f

    return deco


def _split(kwargs: dict, cls) -> tuple[dict, dict]:
    names = {f.name for f in dataclasses.fields(cls)}
    return ({k: v for k, v in kwargs.items() if k in names},
            {k: v for k, v in kwargs.items() if k not in names})


def _given(ctx: click.Context, names: Iterable[str]) -> dict:
    """Options the user typed (command line or environment), not defaults."""
    return {n: ctx.params[n] for n in names
            if ctx.get_parameter_source(n) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}


def _logger(quiet: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if not quiet:
            from tqdm.auto import tqdm

            tqdm.write(msg, file=sys.stderr)

    return log


def _print_summary(run_dir: Path) -> None:
    from .search import RunDir
    from .search import report

    rd = RunDir(run_dir)
    target = rd.parent or rd
    try:
        runs = report.load_run(target.path)
        runs = [runs] + runs.baselines
        report.check_comparable(runs)
    except report.ReportError:
        target, runs = rd, [report.load_run(rd.path, with_baselines=False)]
    click.echo(report.markdown_table(runs))
    click.echo(f"wrote {target.summary_md}, {target.summary_csv} and {target.plot}", err=True)


# --------------------------------------------------------------------------- the group


class _Group(click.Group):
    """A group whose errors are one line on stderr: ``Error: ...`` (click's usage banner and
    hint are left out), with click's exit codes (2 for usage errors)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.format_message(), err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"Error: {' '.join(e.format_message().split())}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="lthgan", message="lthgan %(version)s")
def main() -> None:
    """Lottery tickets in GANs (Chen et al., ICLR 2021): find sparse subnetworks of a GAN's
    generator that match the dense model's FID."""


# importing lthgan.search pulls in torch; the config class is needed to build the options
from .search import SearchConfig  # noqa: E402

_OUT_HELP = {
    "search": "Run directory to create (or continue, with the same settings). An existing run with "
              "another method or variant gets this one as a baseline in OUT/baselines/. Default: "
              "runs/GAN-PRESET.",
    "train": "Run directory of the dense run (level dense); a later `lthgan search` with the same "
             "settings and --out continues it into a search. Default: runs/GAN-PRESET.",
    "transfer": "Run directory of the transferred ticket's training. Default: "
                "runs/transfer-GAN-DATA.",
}


def _run_options(command: str):
    def deco(f):
        f = click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-round lines.")(f)
        f = click.option("--resume", type=click.Path(file_okay=False, path_type=Path), default=None,
                         metavar="RUN_DIR", help="Continue the run in RUN_DIR from its last checkpoint "
                                                 "(settings from its config.json; changing one is refused).")(f)
        return click.option("--out", type=click.Path(path_type=Path), default=None, metavar="RUN_DIR",
                            help=_OUT_HELP[command])(f)
    return deco


def _default_out(cfg: SearchConfig) -> Path:
    from .search import default_preset

    if cfg.ticket is not None:
        data = str(cfg.data or "default").replace(":", "-").replace("/", "_")
        return Path("runs") / f"transfer-{cfg.gan}-{data}"
    return Path("runs") / f"{cfg.gan}-{cfg.preset or default_preset(cfg.device)}"


def _do_search(ctx, kwargs, command: str, *, max_level=None, make=None, fixed: dict | None = None):
    """Run or resume a search; ``make(fields)`` builds its SearchConfig (default: from the
    options as given)."""
    from .search import resume_search, run_search

    fields, rest = _split(kwargs, SearchConfig)
    out, resume, quiet = rest["out"], rest["resume"], rest["quiet"]
    if out is not None and resume is not None:
        raise click.UsageError("give either --out RUN_DIR (a new run, or the same run continued) or "
                               "--resume RUN_DIR, not both")
    log = _logger(quiet)
    if resume is not None:
        overrides = {**_given(ctx, fields), **(fixed or {})}
        run_dir, _ = resume_search(resume, overrides, quiet=quiet, log=log, max_level=max_level)
    else:
        cfg = make(fields) if make is not None else SearchConfig(**{**fields, **(fixed or {})})
        if out is None:
            out = _default_out(cfg)
            if not quiet:
                click.echo(f"run directory: {out} (set it with --out)", err=True)
        run_dir, _ = run_search(cfg, out, quiet=quiet, log=log, max_level=max_level,
                                command="train" if max_level == 0 else "search")
    from .gans import dist

    if dist.is_main_process():  # under torchrun, rank 0 reports
        _print_summary(run_dir)


def _method_help() -> str:
    from .search import methods

    return "\n".join(f"  {n:<14}{methods.get(n).help}" for n in methods.names())


@main.command("search", help=f"""Run a lottery-ticket search: train dense, then prune, rewind and
retrain round by round until --target-sparsity, judging each round against the dense FID.

\b
Methods (--method):
{_method_help()}

\b
Examples:
  lthgan search --gan sngan --preset quick --out runs/sngan
  lthgan search --gan sngan --preset quick --method random --out runs/sngan
  lthgan search --gan cyclegan --preset quick --target-sparsity 0.74 --out runs/cyclegan
  lthgan search --resume runs/sngan
""")
@config_options(SearchConfig, "search")
@_run_options("search")
@click.pass_context
@_handle_errors
def search_command(ctx, **kwargs):
    _do_search(ctx, kwargs, "search")


@main.command("train")
@config_options(SearchConfig, "train")
@_run_options("train")
@click.pass_context
@_handle_errors
def train_command(ctx, **kwargs):
    """Train the dense GAN only (level `dense` of a run directory) and evaluate it.

    A later `lthgan search` with the same settings and --out continues from it."""
    _do_search(ctx, kwargs, "train", max_level=0)


# --------------------------------------------------------------------------- eval


@main.command("eval")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--data", default=None, metavar="NAME",
              help="Evaluation data (default: the run's, or the family's embedded default).")
@click.option("--data-root", default=None, metavar="DIR", help="Folder holding cifar10/stl10.")
@click.option("--extractor", type=click.Choice(["digits", "inception"]), default=None,
              help="Feature extractor (default: the run's, or digits on the digit sets).")
@click.option("--inception-weights", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="FILE", help="Local Inception-v3 weights.")
@click.option("--eval-samples", type=click.IntRange(min=2), default=None,
              help="Images per evaluation (default: the run's).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Sampling seed (default: the run's).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_handle_errors
def eval_command(path, as_json, **opts):
    """Metrics of saved models: a checkpoint file, a level folder (RUN_DIR/round-03), every
    finished level of RUN_DIR, or RUN_DIR/init (the untrained initial models, a reference)."""
    from .search import evaluate_checkpoints

    results = evaluate_checkpoints(path, **opts)
    if as_json:
        click.echo(json.dumps(results, indent=2, sort_keys=True, default=str))
        return
    for r in results:
        click.echo(_eval_line(r))


def _eval_line(r: dict) -> str:
    sps = ", ".join(f"{g} {100 * v['sparsity']:.2f}% (all params {100 * v['sparsity_overall']:.2f}%)"
                    for g, v in r["sparsity"].items())
    parts = [f"{r['checkpoint']}:", f"sparsity {sps};"]
    dirs = r.get("directions") or {}
    if len(dirs) > 1:
        parts.append("FID " + ", ".join(f"{d} {v['fid']:.3f}" for d, v in dirs.items()) + f", mean {r['fid']:.3f};")
    else:
        parts.append(f"FID {r['fid']:.3f};")
    if r.get("is_mean") is not None:
        parts.append(f"IS {r['is_mean']:.3f} ± {r['is_std']:.3f};")
    if r.get("kid_mean") is not None:
        parts.append(f"KID {r['kid_mean']:.4f} ± {r['kid_std']:.4f};")
    if r.get("label_kept") is not None:
        parts.append(f"label kept {100 * r['label_kept']:.1f}%;")
    parts.append(f"extractor {r['extractor']}, data {r['data']}")
    return " ".join(parts)


# --------------------------------------------------------------------------- prune


def _prune_methods() -> list[str]:
    from .search import methods

    return list(methods.names(criterion=True))


@main.command("prune")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option("--sparsity", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), required=True,
              help="Share of each generator's prunable weights to prune, in (0, 1).")
@click.option("--method", type=click.Choice(_prune_methods()), default="imp", show_default=True,
              help="A method of `lthgan search` whose masks come from the weights: its criterion "
                   "(imp, oneshot, no-rewind: global magnitude; layerwise: per-layer magnitude; "
                   "random: a global random mask) and its start state (see --state).")
@click.option("--layers", type=click.Choice(["conv", "conv+linear"]), default="conv", show_default=True,
              help="Prunable layers.")
@click.option("--prune-d/--no-prune-d", default=False, show_default=True, help="Prune the discriminator(s) too.")
@click.option("--state", type=click.Choice(["auto", "init", "checkpoint"]), default="auto", show_default=True,
              help="State the ticket starts from: θ0 of the run the checkpoint belongs to (init), the "
                   "checkpoint's own weights, or auto (the method's: init when it rewinds and the run's "
                   "init/ is found).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of --method random.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Ticket file to write (safetensors).")
@_handle_errors
def prune_command(checkpoint, sparsity, method, layers, prune_d, state, seed, out):
    """One-shot mask of a checkpoint (a file, a level folder or a run directory's last level),
    written as an lthgan ticket that `lthgan transfer` can train."""
    from .prune import sparsity_report
    from .search import check_writable
    from .search.methods import prune_checkpoint

    check_writable(out.parent)
    ticket, task, groups = prune_checkpoint(checkpoint, sparsity, method=method, layers=layers,
                                            prune_d=prune_d, state=state, seed=seed)
    ticket.save(out)
    for g in groups:
        click.echo(f"{g}:")
        click.echo(sparsity_report(task.models[g], types=layers).table())
    click.echo(f"wrote {out} (starts from the {ticket.provenance['rewind']} state)", err=True)


# --------------------------------------------------------------------------- transfer


@main.command("transfer")
@click.option("--ticket", "ticket", type=click.Path(exists=True, path_type=Path), default=None,
              help="The ticket: a level folder (RUN_DIR/round-NN) or a ticket file.")
@config_options(SearchConfig, "transfer")
@click.option("--dense/--no-dense", default=True, show_default=True,
              help="Also train the dense GAN on the new data, to judge the ticket against it.")
@_run_options("transfer")
@click.pass_context
@_handle_errors
def transfer_command(ctx, ticket, dense, **kwargs):
    """Train a ticket found on one data set on another, as with the paper's CIFAR-10 -> STL-10
    (the same model, rebuilt from the GAN config the ticket carries; the new data are loaded
    at its resolution)."""
    from .search import transfer_config

    given_dense = ctx.get_parameter_source("dense") == ParameterSource.COMMANDLINE
    if kwargs["resume"] is not None:
        _do_search(ctx, kwargs, "transfer", fixed={"dense": dense} if given_dense else None)
        return
    if ticket is None:
        raise click.UsageError("--ticket RUN_DIR/round-NN is required (unless --resume)")
    if kwargs.get("data") is None:
        raise click.UsageError("--data is required: the data set to transfer the ticket to "
                               "(e.g. digits-m, or stl10 with --data-root)")
    _do_search(ctx, kwargs, "transfer", make=lambda f: transfer_config(ticket, **f, dense=dense))


# --------------------------------------------------------------------------- export


@main.command("export")
@click.argument("level", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The file to write (e.g. g.pt2).")
@click.option("--generator", default=None, metavar="NAME",
              help="Which generator (CycleGAN: G_AB or G_BA; default: the first).")
@_handle_errors
def export_command(level, out, generator):
    """Write a level's generator (RUN_DIR/round-NN, or a checkpoint file) as a standalone file
    that runs without lthgan: the narrower network of a structural ticket, or the dense layers
    with the pruned weights as zeros for an unstructured one.

    \b
    Load it with plain PyTorch:
      G = torch.export.load("g.pt2").module()     # a torch.export program (.pt2)
      G = torch.jit.load("g.pt")                  # or, when lthgan says it wrote TorchScript
      images = G(z)      # z: noise [N, z_dim]; for CycleGAN, images [N, 3, H, W] in [-1, 1]
    The output is images in [-1, 1]."""
    from .search.export import export_level

    path, fmt, g = export_level(level, out, generator)
    click.echo(f"wrote {path}: {g} as {fmt}", err=True)


# --------------------------------------------------------------------------- report


@main.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for report.md, report.csv and fid_vs_sparsity.png (default: the first run "
                   "directory).")
@_handle_errors
def report_command(run_dirs, out):
    """The table and plot of finished runs side by side (e.g. IMP beside random pruning).
    Runs must share the GAN, the data and the feature extractor. Every finished level's files
    are verified first."""
    from .search import RunDir
    from .search import report

    _, where = report.compare(list(run_dirs), out)
    click.echo(report.markdown_table(report.load_runs(list(run_dirs))))
    click.echo(f"wrote {where / RunDir.REPORT_MD}, {where / RunDir.REPORT_CSV} and {where / RunDir.PLOT}",
               err=True)


# --------------------------------------------------------------------------- profile


def _parse_shape(ctx, param, value):
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise click.BadParameter(f"{value!r}: expected comma-separated positive ints, e.g. 8,3,32,32")
    return shape


def _gan_names() -> list[str]:
    from . import gans

    return list(gans.names())


@main.command("profile")
@click.option("--gan", type=click.Choice(_gan_names()), default=None,
              help="Profile one of lthgan's GAN families (a whole training step: D and G).")
@click.option("--model", "model_spec", metavar="MODULE:FACTORY", default=None,
              help="Profile any model: MODULE:FACTORY (or path/file.py:FACTORY) names a zero-argument "
                   "callable returning an nn.Module or (nn.Module, example_input). Without an example: "
                   "random --input-shape if given, else MODULE.example_input() if defined, else a guess "
                   "from the first layer. A step is Adam on the mean square of the output (dense: "
                   "torch's fused Adam; masked: lthgan.optim.Adam).")
@click.option("--preset", type=click.Choice(["tiny", "quick", "paper"]), default=None,
              help="GAN size: tiny, quick (default) or paper. Only with --gan.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--sparsity", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.74,
              show_default=True, help="Share of prunable weights to prune (global magnitude).")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed (and profiled) training steps for each of dense and masked.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Untimed steps first.")
@click.option("--layers", "layer_types", type=click.Choice(["conv", "conv+linear"]), default="conv",
              show_default=True, help="Which layers are masked and pruned.")
@click.option("--prune-d/--no-prune-d", default=False, show_default=True,
              help="Also prune the GAN's discriminators (IMP_GD); default prunes G only.")
@click.option("--amp", type=click.Choice(["none", "bf16"]), default="none", show_default=True,
              help="Run forward passes under autocast.")
@click.option("--input-shape", callback=_parse_shape, default=None, metavar="N,C,H,W",
              help="Random input shape for --model when the factory gives no example.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--trace", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a Chrome trace (chrome://tracing, Perfetto) of the masked steps.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead.")
@_handle_errors
def profile_command(gan, model_spec, preset, device, sparsity, steps, warmup, layer_types,
                    prune_d, amp, input_shape, seed, trace, as_json):
    """Profile training steps, dense against masked, with torch.profiler.

    Prints the time per step of both, the overhead, the time inside lthgan's ops (forward and
    backward; "masking" is the part that is not the convolution or matmul itself) and the
    one-off costs of an IMP round: pruning, rewinding and resetting the optimizer."""
    from .profile import format_table, profile_gan, profile_model

    if (gan is None) == (model_spec is None):
        raise click.UsageError("give exactly one of --gan FAMILY or --model MODULE:FACTORY")
    if model_spec is not None and (preset is not None or prune_d):
        raise click.UsageError("--preset and --prune-d apply to --gan only")
    if gan is not None and input_shape is not None:
        raise click.UsageError("--input-shape applies to --model only")
    amp = None if amp == "none" else amp
    common = dict(device=device, sparsity=sparsity, steps=steps, warmup=warmup, amp=amp,
                  layer_types=layer_types, trace=trace)
    if gan is not None:
        result = profile_gan(gan, preset=preset or "quick", prune_d=prune_d, seed=seed, **common)
    else:
        result = profile_model(model_spec, input_shape=input_shape, **common)
    click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True) if as_json else format_table(result))


if __name__ == "__main__":
    main()
