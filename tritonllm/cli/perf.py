"""``tritonllm perf``: load generation, perf_analyzer / genai-perf drivers, reports, SLO gates.

``tritonllm perf --url H:P --model ensemble --concurrency 1,4,16 ...`` runs a benchmark (the
group runs it when no subcommand is named) and writes an artifact directory; a served
repository's inference key comes from ``--inference-key-file`` or ``$TRITONLLM_INFERENCE_KEY``
(our generator only: genai-perf and perf_analyzer take headers on their command lines); with
``--endpoint openai --url http://H:P/v1`` our generator sends it through an OpenAI-compatible
API (``tritonllm openai``) instead of Triton's gRPC, its key from ``--api-key-file`` or
``$TRITONLLM_OPENAI_API_KEYS`` (the first key). Keys never come from argv and are never
recorded (run.json holds header names only);
``tritonllm perf compare A B`` prints the deltas between two runs. Option defaults are
:class:`tritonllm.perf.scenario.Scenario`'s.

Exit codes: 0 success; 1 an error (one line, from :mod:`tritonllm.cli`); 2 a usage error
(click); :data:`SLO_EXIT` when the run finished but an ``--slo`` objective was violated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from tritonllm.cli._console import request_progress
from tritonllm.errors import ConfigError

SLO_EXIT = 3


def _defaults() -> Any:
    from tritonllm.perf.scenario import DEFAULTS

    return DEFAULTS


def _endpoints() -> tuple[str, ...]:
    from tritonllm.perf.scenario import ENDPOINTS

    return ENDPOINTS


def _default_url(endpoint: str) -> str:
    from tritonllm.perf.scenario import default_url

    return default_url(endpoint)


_D = _defaults()  # tritonllm.perf.scenario is standard library only: --help stays instant


def _parse_value(raw: str) -> Any:
    """``KEY=VALUE`` values: JSON scalars (``0.7``, ``true``, ``5``), else the string."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return value if isinstance(value, (int, float, bool, str)) else raw


def _pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sep = ":" if param.name == "headers" else "="
    for item in values:
        key, found, raw = item.partition(sep)
        if not found or not key.strip():
            raise click.BadParameter(f"expected KEY{sep}VALUE, got {item!r}")
        out[key.strip()] = raw.strip() if param.name == "headers" else _parse_value(raw.strip())
    return out


@click.group("perf", invoke_without_command=True, no_args_is_help=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", help=f"Server gRPC address host:port; with --endpoint openai the API's "
              f"base URL [default: {_D.url}; openai: {_default_url('openai')}].")
@click.option("--endpoint", type=click.Choice(_endpoints()), default=_D.endpoint,
              show_default=True,
              help="What --tool ours talks to: Triton's gRPC, or an OpenAI-compatible API "
                   "(/v1/completions, streamed).")
@click.option("--api-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="--endpoint openai: a file of API keys, the first one is sent [default: "
                   "$TRITONLLM_OPENAI_API_KEYS, comma-separated; none: no key].")
@click.option("--inference-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Triton's gRPC endpoint: a file holding the served repository's inference "
                   "key (--tool ours) [default: $TRITONLLM_INFERENCE_KEY].")
@click.option("--model", default=_D.model, show_default=True,
              help="Served model (ensemble or tensorrt_llm_bls).")
@click.option("--concurrency", default=",".join(map(str, _D.concurrency)), show_default=True,
              help="Concurrency levels, one load point each: 1,4,16.")
@click.option("--request-rate", type=float,
              help="Requests/s with Poisson arrivals (instead of --concurrency).")
@click.option("--input-tokens", default=str(_D.input_tokens), show_default=True,
              metavar="MEAN[:STD]", help="Synthetic prompt length in tokens (exact).")
@click.option("--output-tokens", default=str(_D.output_tokens), show_default=True,
              metavar="MEAN[:STD]", help="max_tokens per request.")
@click.option("--dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSONL prompts ({\"text\": ...} per line) instead of synthetic ones.")
@click.option("--requests", type=click.IntRange(min=1), default=_D.requests, show_default=True,
              help="Measured requests per load point.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True),
              help="Seconds per load point instead of --requests (ours only).")
@click.option("--warmup", type=click.IntRange(min=0), default=_D.warmup, show_default=True,
              help="Unmeasured requests before each load point.")
@click.option("--streaming/--no-streaming", default=_D.streaming, show_default=True)
@click.option("--exact-output/--no-exact-output", default=None,
              help="Send min_tokens = max_tokens so outputs have the requested length "
                   f"[default: {'on' if _D.exact_output else 'off'}; off with --endpoint "
                   "openai, which has no min_tokens].")
@click.option("--num-prompts", type=click.IntRange(min=1), default=_D.num_prompts,
              show_default=True, help="Distinct synthetic prompts, cycled.")
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The model's tokenizer directory (token counts, synthetic prompts).")
@click.option("--repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A tritonllm repository: its tokenizer is used.")
@click.option("--sampling", "sampling", multiple=True, callback=_pairs, metavar="KEY=VALUE",
              help="Extra request input, e.g. temperature=0.7 (repeatable).")
@click.option("-H", "--header", "headers", multiple=True, callback=_pairs,
              metavar="KEY:VALUE",
              help="Header sent with every request: gRPC metadata, or HTTP with --endpoint "
                   "openai (repeatable). Not for keys (argv is visible to every user): use "
                   "--inference-key-file / --api-key-file.")
@click.option("--seed", type=int, default=_D.seed, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=_D.timeout,
              show_default=True, help="Seconds one request may take.")
@click.option("--tool", type=click.Choice(["ours", "genai-perf", "perf_analyzer"]),
              default=_D.tool, show_default=True,
              help="Who sends the load; every tool gives the same report.")
@click.option("--slo", metavar="KEY=LIMIT,...",
              help=f"Objectives, e.g. ttft_p99_ms=500,itl_p50_ms=40,error_rate=0.01; a "
                   f"violation exits {SLO_EXIT}.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Artifact directory [default: perf-runs/<time>-<tool>].")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write PNG plots.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.pass_context
def perf_cmd(ctx: click.Context, /, **opts: Any) -> None:
    """Measure a served model: TTFT, inter-token latency, throughput.

    Runs the load (when no subcommand is given), writes run.json, records.csv, summary.csv,
    report.md and plots/ into --out, prints the table, and checks --slo.
    """
    if ctx.invoked_subcommand is not None:
        return
    code = run_benchmark(**opts)
    if code:
        ctx.exit(code)


def _check_endpoint(opts: dict[str, Any]) -> None:
    """Usage errors of --endpoint (exit 2), naming both options."""
    endpoint = opts["endpoint"]
    if endpoint == "openai" and opts["tool"] != "ours":
        raise click.UsageError(f"--endpoint openai and --tool {opts['tool']}: only --tool ours "
                               "speaks the OpenAI API (genai-perf and perf_analyzer are driven "
                               "over Triton's gRPC)")
    if endpoint == "openai" and opts["exact_output"]:
        raise click.UsageError("--endpoint openai and --exact-output: the OpenAI API has no "
                               "min_tokens, so output lengths cannot be forced")
    if endpoint != "openai" and opts["api_key_file"] is not None:
        raise click.UsageError(f"--api-key-file and --endpoint {endpoint}: the key is sent to "
                               "an OpenAI API only (--endpoint openai)")
    if endpoint == "openai" and opts["inference_key_file"] is not None:
        raise click.UsageError("--inference-key-file and --endpoint openai: the key is "
                               "Triton's (--endpoint grpc); the OpenAI API takes --api-key-file")


def _inference_key(opts: dict[str, Any]) -> Any:
    """Triton's inference key (file, else environment) for --endpoint grpc, or None; refused
    for genai-perf and perf_analyzer, which would put it on their command lines."""
    from tritonllm.security import INFERENCE_KEY_ENV, read_secret

    if opts["endpoint"] != "grpc":
        return None
    key = read_secret(opts["inference_key_file"], INFERENCE_KEY_ENV, "--inference-key-file")
    if key is not None and opts["tool"] != "ours":
        raise ConfigError(f"{key.source} and --tool {opts['tool']}: that tool takes headers "
                          "only on its command line, which every user of the machine can "
                          "read; use --tool ours (or unset the key and pass -H yourself)")
    return key


def _recorded_command(argv: list[str]) -> str | None:
    """``tritonllm perf ...`` as run, for run.json, with every -H/--header value as ***."""
    if len(argv) < 2 or argv[1] != "perf":
        return None
    out, hide = ["tritonllm", "perf"], False
    for arg in argv[2:]:
        inline = arg.startswith("--header=") or (arg.startswith("-H") and len(arg) > 2)
        out.append(arg.partition(":")[0] + ":***" if hide or inline else arg)
        hide = not hide and arg in ("-H", "--header")
    return " ".join(out)


def _api_key(opts: dict[str, Any]) -> str | None:
    """The first configured key (file, else environment), or None."""
    if opts["endpoint"] != "openai":
        return None
    from tritonllm.openai.app import load_api_keys

    keys = load_api_keys(opts["api_key_file"])
    return keys[0].decode() if keys else None


def _scenario(opts: dict[str, Any]) -> Any:
    from tritonllm.perf.scenario import Scenario, parse_concurrency, parse_length

    if opts["request_rate"] is not None and opts["request_rate"] <= 0:
        raise ConfigError(f"--request-rate: must be > 0, got {opts['request_rate']}")
    endpoint = opts["endpoint"]
    exact = opts["exact_output"] if opts["exact_output"] is not None else endpoint != "openai"
    return Scenario(
        url=opts["url"] or _default_url(endpoint), model=opts["model"], endpoint=endpoint,
        concurrency=parse_concurrency(opts["concurrency"]), request_rate=opts["request_rate"],
        input_tokens=parse_length(opts["input_tokens"], "--input-tokens"),
        output_tokens=parse_length(opts["output_tokens"], "--output-tokens"),
        dataset=opts["dataset"], requests=opts["requests"], duration=opts["duration"],
        warmup=opts["warmup"], streaming=opts["streaming"], exact_output=exact,
        num_prompts=opts["num_prompts"], tokenizer=opts["tokenizer"], seed=opts["seed"],
        sampling=opts["sampling"], timeout=opts["timeout"], tool=opts["tool"],
        headers=opts["headers"])


def run_benchmark(**opts: Any) -> int:
    """The body of ``tritonllm perf``; returns the exit code (0 or :data:`SLO_EXIT`)."""
    from tritonllm.perf.prompts import Tokenizer, find_tokenizer
    from tritonllm.perf.report import markdown_table, write_run
    from tritonllm.perf.run import default_out_dir
    from tritonllm.perf.slo import check, parse_slos

    _check_endpoint(opts)
    scenario = _scenario(opts)
    api_key = _api_key(opts)
    inference_key = _inference_key(opts)
    slos = parse_slos(opts["slo"]) if opts["slo"] else ()
    tok_dir = find_tokenizer(scenario.tokenizer, opts["repo"])
    scenario = scenario.replace(tokenizer=tok_dir)
    out = opts["out"] or default_out_dir(scenario.tool)

    def say(msg: str) -> None:
        if not opts["quiet"]:
            click.echo(msg, err=True)

    tokenizer = Tokenizer(tok_dir)
    say(f"{scenario.tool}: {scenario.model} at {scenario.url} ({scenario.endpoint}), "
        f"{', '.join(p.label for p in scenario.points)} -> {out}")
    if scenario.endpoint == "openai":
        say("note: the OpenAI API has no min_tokens: outputs end at --output-tokens or at the "
            "model's end of text (lengths not forced)")
    if scenario.tool == "ours":
        from tritonllm.perf.run import run_ours

        with request_progress(not opts["quiet"]) as progress:
            key = ({"api_key": api_key} if scenario.endpoint == "openai"
                   else {"inference_key": inference_key})
            run = run_ours(scenario, tokenizer, progress, **key)
    else:
        from tritonllm.perf import drivers
        from tritonllm.perf.run import build_requests

        plan = build_requests(scenario, tokenizer)
        runner = (drivers.run_genai_perf if scenario.tool == "genai-perf"
                  else drivers.run_perf_analyzer)
        run = runner(scenario, plan, tokenizer, Path(out) / scenario.tool, say)
    run.meta["command"] = _recorded_command(sys.argv)
    results = check(slos, {p.point.label: p.summary for p in run.points}) if slos else []
    write_run(run, Path(out), results, plots=opts["plots"])
    click.echo(markdown_table(run))
    click.echo(f"\nartifacts: {out}")
    failed = [r for r in results if not r.passed]
    for r in results:
        if r.passed:
            click.echo(f"SLO met: {r.describe()}")
    for r in failed:
        click.secho(f"SLO violated: {r.describe()}", err=True, fg="red")
    return SLO_EXIT if failed else 0


@perf_cmd.command("compare")
@click.argument("run_a", type=click.Path(exists=True, path_type=Path))
@click.argument("run_b", type=click.Path(exists=True, path_type=Path))
def compare_cmd(run_a: Path, run_b: Path) -> None:
    """Print the deltas of B against A (artifact directories or their run.json)."""
    from tritonllm.perf.report import compare, format_compare, load_run

    a, b = load_run(run_a), load_run(run_b)
    deltas = compare(a, b)
    if not deltas:
        raise ConfigError(f"{run_a} and {run_b} share no load point "
                          f"({', '.join(p.point.label for p in a.points)} vs "
                          f"{', '.join(p.point.label for p in b.points)})")
    click.echo(format_compare(a, b, deltas))
