"""The ``lthgan`` command line: search, train, eval, prune, transfer, report, profile.

The options of ``lthgan search`` are generated from the fields of
:class:`lthgan.search.SearchConfig` (:func:`config_options`), so flags and config never drift.
Bad input (a value out of range, an unknown GAN or method, missing data, a corrupt run
directory, missing Inception weights offline, a resume with a changed config) prints one line
on stderr and exits with code 2.
"""
from __future__ import annotations

import dataclasses
import functools
import json
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
    """The run itself failed (training diverged): one line, exit code 1."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _usage_errors() -> tuple[type[BaseException], ...]:
    from .data import DataError
    from .metrics import MetricsError
    from .report import ReportError, RunDirError
    from .search import SearchError
    from .ticket import TicketError

    return (SearchError, RunDirError, ReportError, TicketError, DataError, MetricsError)


def _handle_errors(f: Callable) -> Callable:
    """Turn lthgan's usage errors into one-line exits (code 2); divergence exits with 1."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            click.echo("interrupted; continue with --resume RUN_DIR", err=True)
            sys.exit(130)
        except Exception as e:
            from .gans import TrainingDiverged

            if isinstance(e, TrainingDiverged):
                raise RunFailed(str(e)) from None
            if isinstance(e, _usage_errors()):
                raise CLIError(str(e)) from None
            raise

    return wrapper


# --------------------------------------------------------------------------- dataclass -> options


def _click_type(md: dict):
    kind = md.get("type")
    if "choices" in md:
        return click.Choice(list(md["choices"]))
    if kind == "open01":
        return click.FloatRange(0.0, 1.0, min_open=True, max_open=True)
    if kind == "posint":
        return click.IntRange(min=1)
    if kind == "nonnegint":
        return click.IntRange(min=0)
    if kind == "nonneg":
        return click.FloatRange(min=0.0)
    if kind == "file":
        return click.Path(exists=True, dir_okay=False)
    return str


def config_options(cls, include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> Callable:
    """Decorator adding one click option per field of the dataclass ``cls``.

    Field metadata: ``help``; ``choices``; ``type`` (open01, posint, nonnegint, nonneg, file);
    ``flag`` (a ``--x/--no-x`` declaration for booleans); ``metavar``; ``cli=False`` to leave
    the field out. The option's destination is the field name, its default the field's."""
    include = set(include) if include is not None else None
    exclude = set(exclude)

    def deco(f: Callable) -> Callable:
        for fld in reversed(dataclasses.fields(cls)):
            md = dict(fld.metadata)
            if md.get("cli", True) is False or fld.name in exclude:
                continue
            if include is not None and fld.name not in include:
                continue
            default = fld.default
            help_ = md.get("help", "")
            if "flag" in md:
                f = click.option(md["flag"], fld.name, default=default, show_default=True, help=help_)(f)
                continue
            kw: dict[str, Any] = {"type": _click_type(md), "default": default, "help": help_}
            if default is not None:
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
    out = {}
    for n in names:
        src = ctx.get_parameter_source(n)
        if src in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            out[n] = ctx.params[n]
    return out


def _logger(quiet: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if not quiet:
            from tqdm.auto import tqdm

            tqdm.write(msg, file=sys.stderr)

    return log


def _print_summary(run_dir: Path) -> None:
    from . import report
    from .search import _baseline_parent

    target = _baseline_parent(run_dir) or run_dir
    try:
        runs = report.load_run(target)
        runs = [runs] + runs.baselines
        report.check_comparable(runs)
    except report.ReportError:
        runs = [report.load_run(run_dir, with_baselines=False)]
    click.echo(report.markdown_table(runs))
    click.echo(f"wrote {target / 'summary.md'}, {target / 'summary.csv'} and "
               f"{target / 'fid_vs_sparsity.png'}", err=True)


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
    """Lottery tickets in GANs (Chen et al., ICLR 2021): find sparse subnetworks of SNGAN and
    CycleGAN that match the dense model's FID."""


# importing lthgan.search pulls in torch; the config class is needed to build the options
from .search import SearchConfig  # noqa: E402

_RUN_OPTS = [
    click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Run directory to create (or continue, with the same settings). An existing "
                      "run with another method or variant gets this one as a baseline in "
                      "OUT/baselines/. Default: runs/GAN-PRESET.", metavar="RUN_DIR"),
    click.option("--resume", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Continue the run in RUN_DIR from its last checkpoint (settings from its "
                      "config.json; changing one is refused).", metavar="RUN_DIR"),
    click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-round lines."),
]


def _run_options(f):
    for o in reversed(_RUN_OPTS):
        f = o(f)
    return f


def _do_search(ctx, kwargs, *, max_level=None, fixed: dict | None = None):
    from .search import resume_search, run_search

    fields, rest = _split(kwargs, SearchConfig)
    out, resume, quiet = rest["out"], rest["resume"], rest["quiet"]
    if out is not None and resume is not None:
        raise click.UsageError("give either --out RUN_DIR (a new run, or the same run continued) or "
                               "--resume RUN_DIR, not both")
    log = _logger(quiet)
    if out is None and resume is None:
        merged = {**fields, **(fixed or {})}
        gan = merged.get("gan") or "sngan"
        preset = merged.get("preset") or "paper"
        if merged.get("method") == "transfer":
            out = Path("runs") / f"transfer-{gan}-{str(merged.get('data') or 'default').replace(':', '-').replace('/', '_')}"
        else:
            out = Path("runs") / f"{gan}-{preset}"
        if not quiet:
            click.echo(f"run directory: {out} (set it with --out)", err=True)
    if resume is not None:
        overrides = _given(ctx, fields)
        overrides.update(fixed or {})
        run_dir, rows = resume_search(resume, overrides, quiet=quiet, log=log, max_level=max_level)
    else:
        fields.update(fixed or {})
        cfg = SearchConfig(**fields)
        run_dir, rows = run_search(cfg, out, quiet=quiet, log=log, max_level=max_level,
                                   command="train" if max_level == 0 else "search")
    from .gans import dist

    if dist.is_main_process():  # under torchrun, rank 0 reports
        _print_summary(run_dir)
    return run_dir, rows


@main.command("search")
@config_options(SearchConfig)
@_run_options
@click.pass_context
@_handle_errors
def search_command(ctx, **kwargs):
    """Run a lottery-ticket search: train dense, then prune, rewind and retrain round by round
    until --target-sparsity, judging each round against the dense FID.

    \b
    Examples:
      lthgan search --gan sngan --preset quick --out runs/sngan
      lthgan search --gan sngan --preset quick --method random --out runs/sngan
      lthgan search --gan cyclegan --preset quick --target-sparsity 0.74 --out runs/cyclegan
      lthgan search --resume runs/sngan
    """
    _do_search(ctx, kwargs)


_TRAIN_FIELDS = ("gan", "data", "data_root", "preset", "iterations", "batch_size", "eval_samples",
                 "extractor", "inception_weights", "seed", "device", "amp", "checkpoint_every",
                 "rewind")


@main.command("train")
@config_options(SearchConfig, include=_TRAIN_FIELDS)
@_run_options
@click.pass_context
@_handle_errors
def train_command(ctx, **kwargs):
    """Train the dense GAN only (level `dense` of a run directory) and evaluate it.

    A later `lthgan search` with the same settings and --out continues from it."""
    _do_search(ctx, kwargs, max_level=0)


# --------------------------------------------------------------------------- eval


def _find_run_dir(path: Path) -> Path | None:
    for p in [path] + list(path.parents)[:3]:
        if (p / "config.json").is_file():
            return p
    return None


def _checkpoints(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / "checkpoint.safetensors").is_file():
        return [path / "checkpoint.safetensors"]
    if path.name == "init" and (path / "state.safetensors").is_file():
        return [path / "state.safetensors"]  # the untrained models, as a reference
    if (path / "config.json").is_file():
        from .search import level_name

        found = []
        i = 0
        while True:
            d = path / level_name(i)
            if not d.is_dir():
                break
            if (d / "DONE").exists() and (d / "checkpoint.safetensors").is_file():
                found.append(d / "checkpoint.safetensors")
            i += 1
        if found:
            return found
        raise CLIError(f"{path} has no finished level with a checkpoint yet")
    raise CLIError(f"{path} is neither a checkpoint file, a level folder (with checkpoint.safetensors) "
                   "nor a run directory (with config.json)")


@main.command("eval")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--data", default=None, metavar="NAME",
              help="Evaluation data (default: the run's, or the GAN's embedded default).")
@click.option("--data-root", default=None, metavar="DIR", help="Folder holding cifar10/stl10.")
@click.option("--extractor", type=click.Choice(["digits", "inception"]), default=None,
              help="Feature extractor (default: the run's, or digits on the digit sets).")
@click.option("--inception-weights", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="FILE", help="Local Inception-v3 weights.")
@click.option("--eval-samples", type=click.IntRange(min=1), default=None,
              help="Images per evaluation (default: the run's).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Sampling seed (default: the run's).")
@click.option("--device", default=None, help="cpu or cuda[:N].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_handle_errors
def eval_command(path, data, data_root, extractor, inception_weights, eval_samples, seed, device, as_json):
    """Metrics of saved models: a checkpoint file, a level folder (RUN_DIR/round-03), every
    finished level of RUN_DIR, or RUN_DIR/init (the untrained initial models, a reference)."""
    import torch

    from . import search as S
    from .prune import sparsity_report

    ckpts = _checkpoints(path)
    run_dir = _find_run_dir(path if path.is_dir() else path.parent)
    record = S.load_config(run_dir) if run_dir is not None else None
    results = []
    for ck in ckpts:
        task, models, meta = S.model_from_checkpoint(ck)
        gan = task.name
        stored = (record or {}).get("search", {})
        resolved = (record or {}).get("resolved", {})
        d = data or resolved.get("data") or S.DEFAULT_DATA[gan]
        ext = extractor or resolved.get("extractor") or ("digits" if S._is_digits(d) else "inception")
        S.check_extractor(ext, inception_weights)
        dev = str(torch.device(device)) if device else ("cuda" if torch.cuda.is_available() else "cpu")
        for m in models.values():
            m.to(dev)
        n = eval_samples or resolved.get("eval_samples")
        if n is None and gan == "sngan":
            n = S.DEFAULT_EVAL_SAMPLES["sngan"]["quick"]
        res = task.config.resolution
        eval_data = S.load_data(gan, d, res, data_root or stored.get("data_root"), S.eval_split(gan))
        row, _ = S.evaluate_models(task, models, eval_data, n_samples=n, extractor=ext,
                                   inception_weights=inception_weights,
                                   seed=seed if seed is not None else int(stored.get("seed", 0)),
                                   device=dev)
        sp = {}
        for g in task.generators:
            r = sparsity_report(task.models[g], types=stored.get("layers", "conv"))
            sp[g] = {"sparsity": r.prunable_sparsity, "sparsity_overall": r.overall_sparsity}
        row.update(checkpoint=str(ck), level=meta.get("level"), data=d, sparsity=sp)
        results.append(row)
    if as_json:
        click.echo(json.dumps(results, indent=2, sort_keys=True, default=str))
        return
    for r in results:
        sps = ", ".join(f"{g} {100 * v['sparsity']:.2f}% (all params {100 * v['sparsity_overall']:.2f}%)"
                        for g, v in r["sparsity"].items())
        parts = [f"{r['checkpoint']}:", f"sparsity {sps};"]
        dirs = r.get("directions") or {}
        if len(dirs) > 1:
            parts.append("FID " + ", ".join(f"{d} {v['fid']:.3f}" for d, v in dirs.items())
                         + f", mean {r['fid']:.3f};")
        else:
            parts.append(f"FID {r['fid']:.3f};")
        if r.get("is_mean") is not None:
            parts.append(f"IS {r['is_mean']:.3f} ± {r['is_std']:.3f};")
        if r.get("kid_mean") is not None:
            parts.append(f"KID {r['kid_mean']:.4f} ± {r['kid_std']:.4f};")
        if r.get("label_kept") is not None:
            parts.append(f"label kept {100 * r['label_kept']:.1f}%;")
        parts.append(f"extractor {r['extractor']}, data {r['data']}")
        click.echo(" ".join(parts))


# --------------------------------------------------------------------------- prune


@main.command("prune")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option("--sparsity", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), required=True,
              help="Share of each generator's prunable weights to prune, in (0, 1).")
@click.option("--method", type=click.Choice(["magnitude", "layerwise", "random"]), default="magnitude",
              show_default=True, help="Global magnitude (one threshold per generator), per-layer "
                                      "magnitude, or a global random mask.")
@click.option("--layers", type=click.Choice(["conv", "conv+linear"]), default="conv", show_default=True,
              help="Prunable layers.")
@click.option("--prune-d/--no-prune-d", default=False, show_default=True,
              help="Prune the discriminator(s) too.")
@click.option("--state", "state_from", type=click.Choice(["auto", "init", "checkpoint"]), default="auto",
              show_default=True, help="State the ticket rewinds to: θ0 of the run the checkpoint "
                                      "belongs to (init), the checkpoint's own weights, or auto "
                                      "(init when the run's init/ is found).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of --method random.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Ticket file to write (safetensors).")
@_handle_errors
def prune_command(checkpoint, sparsity, method, layers, prune_d, state_from, seed, out):
    """One-shot mask of a checkpoint (a file, a level folder or a run directory's last level),
    written as an lthgan ticket."""
    import torch

    from . import prune as P
    from . import search as S
    from .ticket import Ticket

    ck = _checkpoints(checkpoint)[-1]
    task, _, meta = S.model_from_checkpoint(ck)
    groups = list(task.generators) + (list(task.discriminators) if prune_d else [])
    fn = {"magnitude": P.global_magnitude, "layerwise": P.layerwise_magnitude}
    for i, g in enumerate(groups):
        try:
            if method == "random":
                P.random_masks(task.models[g], sparsity, generator=torch.Generator().manual_seed(seed + i),
                               types=layers)
            else:
                fn[method](task.models[g], sparsity, types=layers)
        except ValueError as e:
            raise CLIError(f"cannot prune {g} of {ck} to {sparsity}: {e}") from None
    run_dir = _find_run_dir(ck.parent)
    init = run_dir / "init" / "state.safetensors" if run_dir is not None else None
    if state_from == "init" or (state_from == "auto" and init is not None and init.is_file()):
        if init is None or not init.is_file():
            raise CLIError(f"--state init: no init/state.safetensors found beside {ck}")
        state, _ = S.load_tensors(init)
        rewind = "init"
    else:
        state = task.models.state_dict()
        rewind = "checkpoint"
    ticket = Ticket.from_model(task.models, state, {
        "round": None, "method": f"oneshot-{method}", "sparsity_target": sparsity, "source": str(ck),
        "gan": task.name, "gan_config": dataclasses.asdict(task.config), "layers": layers,
        "rewind": rewind, "prune_d": prune_d})
    ticket.save(out)
    for g in groups:
        click.echo(f"{g}:")
        click.echo(P.sparsity_report(task.models[g], types=layers).table())
    click.echo(f"wrote {out} (rewinds to the {rewind} state)", err=True)


# --------------------------------------------------------------------------- transfer

_TRANSFER_FIELDS = ("data", "data_root", "iterations", "batch_size", "eval_samples", "extractor",
                    "inception_weights", "seed", "device", "amp", "tolerance", "checkpoint_every")


def _ticket_path(p: Path) -> Path:
    if p.is_dir():
        p = p / "ticket.safetensors"
    if not p.is_file():
        raise CLIError(f"--ticket {p}: no ticket file there (expected RUN_DIR/round-NN or a "
                       ".safetensors ticket)")
    return p


@main.command("transfer")
@click.option("--ticket", "ticket", type=click.Path(exists=True, path_type=Path), default=None,
              help="The ticket: a level folder (RUN_DIR/round-NN) or a ticket file.")
@config_options(SearchConfig, include=_TRANSFER_FIELDS)
@click.option("--dense/--no-dense", default=True, show_default=True,
              help="Also train the dense GAN on the new data, to judge the ticket against it.")
@_run_options
@click.pass_context
@_handle_errors
def transfer_command(ctx, ticket, dense, **kwargs):
    """Apply a ticket found on one data set to another and train it, as with the paper's
    CIFAR-10 -> STL-10 (same architecture; the new data are loaded at its resolution)."""
    from .ticket import Ticket, TicketError

    if kwargs["resume"] is not None:
        given_dense = ctx.get_parameter_source("dense") == ParameterSource.COMMANDLINE
        _do_search(ctx, kwargs, fixed={"dense": dense} if given_dense else None)
        return
    if ticket is None:
        raise click.UsageError("--ticket RUN_DIR/round-NN is required (unless --resume)")
    if kwargs.get("data") is None:
        raise click.UsageError("--data is required: the data set to transfer the ticket to "
                               "(e.g. digits-m, stl10 with --data-root)")
    path = _ticket_path(ticket).resolve()
    try:
        t = Ticket.load(path)
    except TicketError as e:
        raise CLIError(str(e)) from None
    src = t.provenance.get("config") or {}
    gan = t.provenance.get("gan") or src.get("gan")
    if gan is None:
        raise CLIError(f"--ticket {path}: its provenance does not say which GAN it belongs to")
    sparsity = t.provenance.get("sparsity")
    if not sparsity or not (0.0 < float(sparsity) < 1.0):
        raise CLIError(f"--ticket {path} has sparsity {sparsity!r}; transfer needs a pruned ticket "
                       "(a round-NN, not dense)")
    fixed = {"gan": gan, "method": "transfer", "ticket": str(path), "dense": dense,
             "target_sparsity": float(sparsity)}
    for k in ("preset", "layers", "prune_d"):
        if k in src:
            fixed[k] = src[k]
    _do_search(ctx, kwargs, fixed=fixed)


# --------------------------------------------------------------------------- report


@main.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write report.md, report.csv and fid_vs_sparsity.png (default: the first "
                   "run directory).")
@_handle_errors
def report_command(run_dirs, out):
    """The table and plot of finished runs side by side (e.g. IMP beside random pruning).
    Runs must share the GAN, the data and the feature extractor."""
    from . import report

    text, where = report.compare(list(run_dirs), out)
    runs = report.load_runs(list(run_dirs))
    click.echo(report.markdown_table(runs))
    click.echo(f"wrote {where / 'report.md'}, {where / 'report.csv'} and {where / 'fid_vs_sparsity.png'}",
               err=True)


# --------------------------------------------------------------------------- profile

from .profile import profile_command  # noqa: E402

main.add_command(profile_command)


if __name__ == "__main__":
    main()
