"""`sim2real <command>`: parse arguments, compose the command's typed config, call one function.

Every command takes trailing `key=value` hydra overrides of its config (see `configs/`). Bad input
ends with a one-line `error: …` on stderr and exit code 2; Ctrl-C exits 130 after the command has
cleaned up (long jobs are resumable).

    sim2real render --out sim.zarr --episodes 3
    sim2real specialize --refs real/*.png --edit background --out runs/bg
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import typer

from sim2real.errors import Sim2RealError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Turn cheap Push-T simulator data into realistic robot-learning data.",
)

OVERRIDES = typer.Argument(
    None, help="hydra overrides of the command's config: key=value …", show_default=False
)


def _call(target: str, config_name: str, overrides: list[str] | None, **explicit: Any) -> Any:
    """Import `module:Schema:function`, compose the config and run the function."""
    from sim2real.config import compose

    module_name, schema_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    cfg = compose(config_name, overrides, getattr(module, schema_name), **explicit)
    return getattr(module, func_name)(cfg)


def _split_paths(extra: list[str] | None) -> tuple[list[str], list[str]]:
    """Shell globs expand `--refs real/*.png` into one option plus loose paths: take those back.

    Trailing arguments with `=` are hydra overrides; the rest are extra reference paths.
    """
    extra = list(extra or [])
    return [a for a in extra if "=" in a], [a for a in extra if "=" not in a]


@app.command()
def render(
    out: Path = typer.Option(..., help="zarr store to write (Diffusion Policy layout)"),
    episodes: int = typer.Option(..., help="number of expert episodes"),
    seed: int = typer.Option(0, help="seed of the first episode; episode i uses seed + i"),
    appearance: str = typer.Option("sim", help="appearance preset in configs/appearance/"),
    overwrite: bool = typer.Option(False, help="replace an existing store instead of resuming it"),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Render scripted-expert Push-T demonstrations with masks into a zarr store."""
    _call(
        "sim2real.data.render_job:RenderConfig:run_render",
        "render",
        overrides,
        out=out,
        episodes=episodes,
        seed=seed,
        appearance=appearance,
        overwrite=overwrite,
    )


@app.command()
def specialize(
    refs: list[str] = typer.Option(..., help="reference (real) frames: files, a folder or a glob"),
    edit: str = typer.Option("background", help="background | foreground"),
    out: Path = typer.Option(..., help="output folder of the specialist"),
    instruction: str | None = typer.Option(None, help="edit instruction (default per edit kind)"),
    ref_masks: list[str] | None = typer.Option(None, help="masks of the refs (label maps or binary PNGs)"),
    sim: Path | None = typer.Option(None, help="sim zarr to draw training frames from"),
    base: Path | None = typer.Option(None, help="base editor folder (default: the shipped one)"),
    method: str | None = typer.Option(None, help="d3po | hive-weighted | hive-condition"),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Train an image-editing specialist from a few real frames (D3PO from AI feedback)."""
    if edit not in ("background", "foreground"):
        raise Sim2RealError(f"--edit must be background or foreground; got {edit!r}")
    overrides, loose = _split_paths(overrides)
    _call(
        "sim2real.training.specialize:SpecializeConfig:run_specialize",
        f"specialize_{edit}",
        overrides,
        refs=list(refs) + loose,
        out=out,
        instruction=instruction,
        ref_masks=list(ref_masks) if ref_masks else None,
        sim=sim,
        base=base,
        method=method,
    )


@app.command()
def edit(
    in_: Path = typer.Option(..., "--in", help="input zarr store"),
    out: Path = typer.Option(..., help="edited zarr store to write"),
    specialist: list[Path] = typer.Option(..., help="specialist folder; repeat to apply several in order"),
    refs: list[str] = typer.Option(..., help="reference frames used as the visual prompt"),
    seed: int | None = typer.Option(None, help="sampling seed"),
    batch_size: int | None = typer.Option(None, help="frames per batch"),
    overwrite: bool = typer.Option(False, help="replace an existing output instead of resuming it"),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Apply specialists (in order) to every frame of a dataset."""
    overrides, loose = _split_paths(overrides)
    _call(
        "sim2real.editing.edit_dataset:EditConfig:run_edit",
        "edit",
        overrides,
        input=in_,
        out=out,
        specialists=[str(s) for s in specialist],
        refs=list(refs) + loose,
        seed=seed,
        batch_size=batch_size,
        overwrite=overwrite,
    )


@app.command("pretrain-policy")
def pretrain_policy(
    train: Path = typer.Option(..., help="training zarr (sim or edited sim)"),
    out: Path = typer.Option(..., help="run folder (checkpoints, metrics.jsonl)"),
    eval_real: Path | None = typer.Option(None, help="real zarr for zero-shot action MSE"),
    init: str | None = typer.Option(None, help="random | path of a checkpoint folder"),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Pretrain a diffusion policy and report zero-shot action MSE on real data."""
    _call(
        "policies.train:PolicyTrainConfig:run_pretrain",
        "pretrain_policy",
        overrides,
        train=train,
        out=out,
        eval_real=eval_real,
        init=init,
    )


@app.command("eval-policy")
def eval_policy(
    ckpt: Path = typer.Option(..., help="policy run folder or checkpoint"),
    episodes: int = typer.Option(10, help="closed-loop episodes in the simulator"),
    appearance: str | None = typer.Option(None, help="appearance to render observations with"),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Roll a policy out in the simulator and report coverage and success."""
    _call(
        "policies.rollout:EvalPolicyConfig:run_eval_policy",
        "eval_policy",
        overrides,
        ckpt=ckpt,
        episodes=episodes,
        appearance=appearance,
    )


@app.command("pretrain-editor")
def pretrain_editor(
    out: Path = typer.Option(..., help="run folder of the base editor"),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Train the tiny base editor on simulator edit pairs (the shipped default)."""
    _call(
        "sim2real.training.base_editor:PretrainEditorConfig:run_pretrain_editor",
        "pretrain_editor",
        overrides,
        out=out,
    )


@app.command("pretrain-matte")
def pretrain_matte(
    out: Path = typer.Option(..., help="run folder of the edit matte"),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Train an editor's edit matte: which pixels an instruction is about (table, T, or both)."""
    _call(
        "sim2real.training.matte:PretrainMatteConfig:run_pretrain_matte", "pretrain_matte", overrides, out=out
    )


@app.command("import")
def import_(
    kind: str = typer.Argument(..., help="refs | diffusion-policy"),
    src: Path = typer.Option(..., "--from", help="folder of frames, or a Diffusion Policy real dataset"),
    out: Path = typer.Option(..., help="output folder (refs) or zarr store"),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Import real data: a folder of frames as refs, or Diffusion Policy's real Push-T layout."""
    _call("sim2real.data.importers:ImportConfig:run_import", "import", overrides, kind=kind, src=src, out=out)


@app.command("export")
def export(
    kind: str = typer.Argument(..., help="lerobot"),
    src: Path = typer.Option(..., "--from", help="our zarr store"),
    out: Path = typer.Option(..., help="output dataset folder"),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Export one of our zarr stores to another ecosystem's dataset format."""
    _call("sim2real.data.exporters:ExportConfig:run_export", "export", overrides, kind=kind, src=src, out=out)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("sim2real", "envs", "policies"):  # our progress notes; libraries stay at WARNING
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        code = app(standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into Exit(130) and, when not standalone, returns it
            raise KeyboardInterrupt
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except Sim2RealError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: completed work is kept; rerun the same command to resume", err=True)
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click usage errors carry their own exit code
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
