"""``tritonllm launch`` (the containers' entrypoint) and ``tritonllm deploy k8s``.

Both read one deployment file (:mod:`tritonllm.deployment`; docs/deploy.md has an annotated
example, docker/tritonllm.yaml).
"""

from __future__ import annotations

from pathlib import Path

import click

from tritonllm.cli._console import progress_line
from tritonllm.deployment import DEFAULT_CONFIG_PATH

_CONFIG = click.option(
    "--config", "config", type=click.Path(dir_okay=False, path_type=Path),
    default=str(DEFAULT_CONFIG_PATH), show_default=True, envvar="TRITONLLM_CONFIG",
    help="The deployment file [env TRITONLLM_CONFIG].")


@click.command("launch", context_settings={"help_option_names": ["-h", "--help"]})
@_CONFIG
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path),
              help="Override the file's checkpoint path.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Override the file's engine cache folder.")
@click.option("--repo-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Override the file's repository folder.")
@click.option("--force-build", is_flag=True, help="Rebuild the engine even on a cache hit.")
@click.option("--dry-run", is_flag=True,
              help="Build, render and validate, print the server command, do not exec it.")
def launch_cmd(config: Path, checkpoint: Path | None, cache_dir: Path | None,
               repo_dir: Path | None, force_build: bool, dry_run: bool) -> None:
    """Build (or reuse the cached engine), render, validate, then exec the server.

    The entrypoint of docker/Dockerfile and docker/Dockerfile.cpu: the process becomes the
    server (`tritonllm serve`, or tritonserver with server.managed false), so SIGTERM reaches it.
    """
    from tritonllm.deployment import load_deployment
    from tritonllm.launch import exec_server, prepare

    deployment = load_deployment(config)
    with progress_line() as say:
        plan = prepare(deployment, checkpoint=checkpoint, cache_dir=cache_dir,
                       repo_dir=repo_dir, force_build=force_build, say=say)
    click.echo(f"tritonllm launch: engine {plan.engine_dir} "
               f"({'cache hit' if plan.cached else 'built'}), repository {plan.repo_dir}",
               err=True)
    if dry_run:
        click.echo(plan.shown())
        return
    click.echo(f"tritonllm launch: exec {plan.argv[0]}", err=True)
    exec_server(plan.argv, plan.env)


@click.group("deploy", context_settings={"help_option_names": ["-h", "--help"]})
def deploy_cmd() -> None:
    """Render deployment files for a cluster."""


@deploy_cmd.command("k8s")
@_CONFIG
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the manifests (base/, overlays/hpa, overlays/keda, kserve/).")
def k8s_cmd(config: Path, out: Path) -> None:
    """Kubernetes manifests (a Kustomize base + autoscaling overlays, KServe) from --config."""
    from tritonllm.deployment import load_deployment
    from tritonllm.errors import ConfigError
    from tritonllm.kubernetes import write_manifests

    deployment = load_deployment(config)
    try:
        text = config.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{config}: {e.strerror}") from e
    written = write_manifests(deployment, text, out)
    click.echo(f"wrote {len(written)} files to {out}:")
    for p in written:
        click.echo(f"  {p.relative_to(out)}")
    click.echo(f"apply: kubectl apply -k {out}/overlays/hpa   (or overlays/keda, or kserve)")
