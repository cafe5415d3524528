"""What a request or a job hands over: the sign-off report, and the unlearnt model as a standalone directory."""

from __future__ import annotations

from pathlib import Path

import click

from console.cli.common import call, client, out


@click.command()
@click.argument("request_id", type=int)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="FILE.html or FILE.md (default: request-ID-report.html here)")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), help="default: from the --out suffix")
@click.option("--json", "as_json", is_flag=True)
def report(request_id: int, out_path: Path | None, fmt: str | None, as_json: bool) -> None:
    """Write the sign-off report of a request: one self-contained HTML page (or Markdown) to read and sign."""
    from console.reportfile import report_format, write_report

    if fmt is None:
        fmt = "md" if out_path is not None and report_format(out_path) == "md" else "html"
    out_path = (out_path or Path(f"request-{request_id}-report.{fmt}")).expanduser().resolve()
    if not out_path.parent.is_dir():
        raise click.ClickException(f"no such folder: {out_path.parent}")
    res = call(write_report, client(), request_id, out_path, fmt)
    out(res, as_json, lambda r: click.echo(f"report of request {request_id} written to {r['path']}"))


@click.command("export")
@click.argument("target")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def export_cmd(target: str, out_dir: Path) -> None:
    """Write a standalone HF model directory: TARGET is a model version (MODEL@vN, e.g. demo@v2: the line's
    version as deployed, with its guard) or a job id (that job's result alone on the base: adapter or delta
    merged, plus its guard)."""
    if "@" in target:
        _export_version(target, out_dir)
        return
    if not target.isdigit():
        raise click.BadParameter(f"'{target}' is neither a job id nor MODEL@vN", param_hint="TARGET")
    _export_job(int(target), out_dir)


def _export_version(ref: str, out_dir: Path) -> None:
    from engine.control.service.versions import parse_ref
    from engine.control.version_export import export_version
    from engine.schema.errors import SpecError

    try:
        name, number = parse_ref(ref)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    line = call(client().model_versions, name)
    number = line["current"] if number is None else number
    version = next((v for v in line["versions"] if v["number"] == number), None)
    if version is None:
        raise click.ClickException(f"model {name} has no version v{number} (it has v0 to "
                                   f"v{max(v['number'] for v in line['versions'])})")
    if version["status"] != "active":
        click.echo(f"warning: {name}@v{number} was withdrawn ({version['withdrawn_reason']})", err=True)
    try:
        path = export_version(version, out_dir)
    except (FileExistsError, FileNotFoundError, SpecError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"exported {name}@v{number} (carries requests {version['request_ids'] or 'none'}) to {path}")


def _export_job(job_id: int, out_dir: Path) -> None:
    from engine.compute.export import export

    c = client()
    detail = call(c.job, job_id)
    if not detail["artifacts"]:
        raise click.ClickException(f"job {job_id} has no artifact (status {detail['job']['status']})")
    model = next((m for m in call(c.models) if m["name"] == detail["job"]["model"]), None)
    if model is None:
        raise click.ClickException(f"the base model '{detail['job']['model']}' is no longer registered")
    try:
        source = Path(model["source"])
        if model["kind"] == "hub":  # a model id: its folder in the local Hugging Face cache
            from engine.compute.modeling import resolve_source

            source = resolve_source(model["source"], "hub")[0]
        path = export(source, Path(detail["artifacts"][0]["path"]), out_dir)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"exported job {job_id} to {path}")


COMMANDS = [report, export_cmd]
