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
@click.argument("job_id", type=int)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def export_cmd(job_id: int, out_dir: Path) -> None:
    """Write a job's result as a standalone HF model directory (adapter or delta merged) plus its guard."""
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
