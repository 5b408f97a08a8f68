"""Drivers for NVIDIA's tools: build perf_analyzer / genai-perf command lines, run them, and
parse their exports into a :class:`~tritonllm.perf.run.RunResult` (our report format).

Both tools send the requests of :func:`tritonllm.perf.run.build_requests` – the same prompts,
``max_tokens`` and ``min_tokens`` as our generator – and both write perf_analyzer's profile
export (``profile_export.json``: per request the send time and every response's time and
``text_output``), which :func:`records_from_profile_export` turns into our records; the
summaries are then computed by :func:`tritonllm.perf.metrics.summarize`, so every tool is
measured by one definition. genai-perf's own summary
(``profile_export_genai_perf.json``) and perf_analyzer's CSV (``-f``) are kept per point as
``tool_summary`` for reference.

Known quirks handled here (perf_analyzer from tritonclient 2.51, genai-perf 0.0.16):

- perf_analyzer needs ``libcudart.so.12`` even on CPU. ``scripts/setup.sh`` gives the binary a
  RUNPATH to the ``nvidia-cuda-runtime-cu12`` wheel's ``lib``, so it runs by name from any
  shell; :func:`tool_environment` still puts that ``lib`` on ``LD_LIBRARY_PATH`` as a fallback,
  for a venv made by plain ``pip install`` or a reinstalled tritonclient, whose binary is
  unpatched. genai-perf runs ``perf_analyzer`` from ``PATH``, so the venv's ``bin`` goes first.
- Decoupled (streaming) Triton models need the gRPC streaming API: ``-i grpc --streaming``.
- Inputs with a variable dimension (dims ``[-1]``) need ``--shape NAME:1``: genai-perf adds it
  for ``text_input`` and ``max_tokens`` only, so for ``stream``, ``exclude_input_in_output``,
  ``min_tokens``... we pass it through (after ``--``) when the served model declares ``-1``.
- genai-perf's ``--output-tokens-mean-deterministic`` sends ``min_length`` (an old input
  name); the ensemble's input is ``min_tokens``, sent with ``--extra-inputs min_tokens:N``.
- genai-perf's ``--request-rate`` is a constant rate unless perf_analyzer gets
  ``--request-distribution poisson`` (passed through).
- perf_analyzer 2.51 keeps sending forever when ``0 < --warmup-request-count <
  concurrency`` (seen with a decoupled ensemble): the warm-up count is raised to the
  concurrency (:func:`tool_warmup`).
- perf_analyzer refuses a ``--profile-export-file`` that exists: stale ones are removed.
- genai-perf ``--generate-plots`` crashes in 0.0.16 against a Triton ensemble: not used (we
  plot ourselves). Both tools take a request count, not a duration.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tritonllm.contract import ENSEMBLE_IN, ENSEMBLE_OUT, FINISH_REASON
from tritonllm.errors import ConfigError, TritonLLMError
from tritonllm.perf.metrics import RequestRecord, summarize
from tritonllm.perf.prompts import Tokenizer
from tritonllm.perf.run import DEFAULT_SAMPLING, PointResult, RequestPlan, RunResult, base_meta
from tritonllm.perf.scenario import LoadPoint, Scenario

__all__ = [
    "ToolError",
    "find_tool",
    "genai_perf_command",
    "input_data",
    "perf_analyzer_command",
    "read_perf_analyzer_csv",
    "records_from_profile_export",
    "run_genai_perf",
    "run_perf_analyzer",
    "shape_args",
    "tool_environment",
]

GENAI_PERF = "genai-perf"
PERF_ANALYZER = "perf_analyzer"


class ToolError(TritonLLMError):
    """perf_analyzer or genai-perf is missing, failed, or wrote no usable export."""


def _cuda_runtime_lib() -> Path | None:
    """``nvidia/cuda_runtime/lib`` of the nvidia-cuda-runtime-cu12 wheel, if installed."""
    for entry in sys.path:
        d = Path(entry) / "nvidia" / "cuda_runtime" / "lib"
        if (d / "libcudart.so.12").exists():
            return d
    return None


def tool_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the tools: this Python's ``bin`` first on PATH, libcudart findable
    (a fallback for an unpatched perf_analyzer, see the module docstring)."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, *[p for p in env.get("PATH", "").split(os.pathsep)
                                              if p and p != bin_dir]])
    lib = _cuda_runtime_lib()
    if lib is not None:
        rest = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(lib), *rest])
    return env


def find_tool(name: str, env: Mapping[str, str] | None = None) -> Path:
    """The executable ``name`` on the tool PATH (:func:`tool_environment`), else ToolError."""
    path = (env or tool_environment()).get("PATH", "")
    exe = shutil.which(name, path=path)
    if exe is None:
        raise ToolError(f"{name} not found on PATH: pip install 'tritonllm[perf]' "
                        "(perf_analyzer also needs apt libb64-0d)")
    return Path(exe)


def tool_version(name: str) -> str | None:
    dist = {GENAI_PERF: "genai-perf", PERF_ANALYZER: "tritonclient"}[name]
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def model_input_dims(url: str, model: str) -> dict[str, list[int]]:
    """Input name → dims of the served ``model`` (gRPC model config); ToolError if unreachable."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    try:
        client = grpcclient.InferenceServerClient(url)
        try:
            cfg = client.get_model_config(model, as_json=True)["config"]
        finally:
            client.close()
    except InferenceServerException as e:
        raise ToolError(f"cannot read the config of model {model!r} at {url}: "
                        f"{str(e).splitlines()[0]}") from e
    return {i["name"]: [int(d) for d in i.get("dims", [])] for i in cfg.get("input", [])}


def shape_args(dims: Mapping[str, Sequence[int]], names: Iterable[str],
               skip: Iterable[str] = ()) -> list[str]:
    """``--shape NAME:1`` for each of ``names`` whose declared dims hold a -1."""
    out: list[str] = []
    skipped = set(skip)
    for name in names:
        if name in skipped or name not in dims:
            continue
        if any(d < 0 for d in dims[name]):
            out += ["--shape", f"{name}:1"]
    return out


def request_inputs(scenario: Scenario, plan: RequestPlan, k: int) -> dict[str, Any]:
    """The request inputs of prompt ``k`` as perf_analyzer's input data (one-element lists)."""
    spec = plan.spec(k)
    row: dict[str, Any] = {ENSEMBLE_IN.text_input: [spec.prompt],
                           ENSEMBLE_IN.max_tokens: [spec.max_tokens]}
    if spec.min_tokens is not None:
        row[ENSEMBLE_IN.min_tokens] = [spec.min_tokens]
    if scenario.streaming:
        row[ENSEMBLE_IN.stream] = [True]
    for key, value in {**DEFAULT_SAMPLING, **scenario.sampling}.items():
        row[key] = [value]
    return row


def input_data(scenario: Scenario, plan: RequestPlan) -> dict[str, Any]:
    """perf_analyzer ``--input-data`` JSON: one entry per distinct prompt."""
    return {"data": [request_inputs(scenario, plan, k) for k in range(len(plan.prompts))]}


def tool_warmup(scenario: Scenario, point: LoadPoint) -> int:
    """Warm-up count for the tools: perf_analyzer 2.51 never ends a run whose warm-up count
    is above 0 but below the concurrency (it keeps sending), so such counts are raised."""
    warmup = int(scenario.warmup)
    if warmup and point.concurrency is not None:
        return max(warmup, int(point.concurrency))
    return warmup


def _load_args(point: LoadPoint, flag_rate: str, flag_conc: str) -> list[str]:
    if point.concurrency is not None:
        return [flag_conc, str(point.concurrency)]
    return [flag_rate, f"{point.value:g}"]


def perf_analyzer_command(exe: Path | str, scenario: Scenario, point: LoadPoint,
                          input_file: Path, export_file: Path, csv_file: Path,
                          shapes: Sequence[str]) -> list[str]:
    """perf_analyzer's command line for one load point (a request count, stability off)."""
    cmd = [str(exe), "-m", scenario.model, "-u", scenario.grpc_address, "-i", "grpc", "--async",
           "--streaming", "--input-data", str(input_file), *shapes,
           *_load_args(point, "--request-rate-range", "--concurrency-range")]
    if point.rate is not None:
        cmd += ["--request-distribution", "poisson"]
    cmd += ["--request-count", str(scenario.requests),
            "--warmup-request-count", str(tool_warmup(scenario, point)),
            "--stability-percentage", "999", "--profile-export-file", str(export_file),
            "-f", str(csv_file)]
    for k, v in scenario.headers.items():
        cmd += ["-H", f"{k}:{v}"]
    return cmd


def genai_perf_command(exe: Path | str, scenario: Scenario, point: LoadPoint,
                       prompts_file: Path, artifact_dir: Path, tokenizer: Path,
                       passthrough_shapes: Sequence[str]) -> list[str]:
    """genai-perf's command line for one load point, prompts from ``prompts_file`` (JSONL)."""
    out = scenario.output_tokens
    cmd = [str(exe), "profile", "-m", scenario.model, "--endpoint-type", "kserve",
           "--backend", "tensorrtllm", "-u", scenario.grpc_address, "--tokenizer", str(tokenizer),
           "--input-file", str(prompts_file), "--output-tokens-mean", str(out.mean),
           "--output-tokens-stddev", f"{out.std:g}",
           *_load_args(point, "--request-rate", "--concurrency"),
           "--request-count", str(scenario.requests),
           "--warmup-request-count", str(tool_warmup(scenario, point)),
           "--random-seed", str(scenario.seed), "--artifact-dir", str(artifact_dir)]
    if scenario.streaming:
        cmd.append("--streaming")
    extras: dict[str, Any] = dict(scenario.sampling)
    if out.fixed:  # exact lengths: max_tokens and min_tokens = the mean (see module docstring)
        extras = {ENSEMBLE_IN.max_tokens: out.mean,
                  **({ENSEMBLE_IN.min_tokens: out.mean} if scenario.exact_output else {}),
                  **extras}
    for k, v in extras.items():
        value = json.dumps(v) if isinstance(v, bool) else v
        cmd += ["--extra-inputs", f"{k}:{value}"]
    for k, v in scenario.headers.items():
        cmd += ["-H", f"{k}:{v}"]
    passthrough = list(passthrough_shapes)
    if point.rate is not None:
        passthrough += ["--request-distribution", "poisson"]
    if passthrough:
        cmd += ["--", *passthrough]
    return cmd


def records_from_profile_export(data: Mapping[str, Any],
                                count_many: Callable[[list[str]], list[int]] | None = None,
                                ) -> list[tuple[LoadPoint, list[RequestRecord]]]:
    """Records per experiment of a perf_analyzer profile export (Triton gRPC, ``text_output``).

    Times are seconds since the experiment's first request (from the tool's nanosecond
    stamps). With ``count_many`` the prompt and
    output texts are re-tokenized (input and output tokens); without, counts stay None.
    """
    if data.get("service_kind") not in (None, "triton"):
        raise ToolError(f"profile export of service kind {data.get('service_kind')!r}: only "
                        "Triton (gRPC) exports are parsed")
    out = []
    for exp in data.get("experiments", []):
        mode = str(exp["experiment"]["mode"])
        point = LoadPoint(mode, float(exp["experiment"]["value"]))
        records = []
        # nanosecond stamps are ~1.8e18: subtract the first send in integers, then scale, so
        # the float seconds keep nanosecond resolution
        base = min((int(r["timestamp"]) for r in exp.get("requests", [])), default=0)
        for i, req in enumerate(exp.get("requests", [])):
            inputs = req.get("request_inputs", {})
            rec = RequestRecord(index=i, point=point.label, request_id=str(req.get("id", i)),
                                start=(int(req["timestamp"]) - base) / 1e9)
            times = [(int(t) - base) / 1e9 for t in req.get("response_timestamps", [])]
            outputs = req.get("response_outputs", [])
            texts = [str(o.get(ENSEMBLE_OUT.text_output, "")) for o in outputs]
            rec.response_times = [t for t, s in zip(times, texts, strict=False) if s]
            rec.first_token = rec.response_times[0] if rec.response_times else None
            rec.output_text = "".join(texts)
            max_tokens = inputs.get(ENSEMBLE_IN.max_tokens)
            rec.requested_output_tokens = int(max_tokens) if max_tokens is not None else None
            if outputs and outputs[-1].get(FINISH_REASON):
                rec.finish_reason = str(outputs[-1][FINISH_REASON])
            if outputs and inputs.get(ENSEMBLE_IN.return_num_output_tokens):
                # The server's own count, cumulative per response. Only when asked for: the
                # tool writes garbage for outputs a response does not carry.
                rec.server_output_tokens = max(int(o.get(ENSEMBLE_OUT.num_output_tokens, 0))
                                               for o in outputs)
            if times:
                rec.end = times[-1]
            else:
                rec.error_kind, rec.error = "no_response", "no response recorded"
            records.append(rec)
        if count_many is not None:
            prompts = [str(r.get("request_inputs", {}).get(ENSEMBLE_IN.text_input, ""))
                       for r in exp.get("requests", [])]
            for rec, n in zip(records, count_many(prompts), strict=True):
                rec.input_tokens = n
            ok = [r for r in records if r.ok]
            for rec, n in zip(ok, count_many([r.output_text for r in ok]), strict=True):
                rec.output_tokens = n
        out.append((point, records))
    return out


def read_perf_analyzer_csv(path: Path) -> dict[str, Any]:
    """The first data row of perf_analyzer's ``-f`` CSV (latencies in µs, as it writes them)."""
    import csv

    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ToolError(f"{path}: perf_analyzer wrote no results")

    def num(v: str) -> float | str:
        try:
            return float(v)
        except ValueError:
            return v

    return {k: num(v) for k, v in rows[0].items() if k}


def read_genai_perf_summary(path: Path) -> dict[str, Any]:
    """genai-perf's ``profile_export_genai_perf.json`` without its echo of the config."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if k != "input_config"}


def _run(cmd: list[str], env: Mapping[str, str], log: Path, timeout: float) -> None:
    """Run a tool in its own process group (genai-perf starts perf_analyzer: a timeout ends
    both), output in ``log``; ToolError with the log's tail when it fails."""
    with log.open("w", encoding="utf-8") as f:  # header values (-H k:v) may be keys: ***
        shown = [a.partition(":")[0] + ":***" if i and cmd[i - 1] == "-H" else a
                 for i, a in enumerate(cmd)]
        f.write(" ".join(shown) + "\n\n")
        f.flush()
        proc = subprocess.Popen(cmd, env=dict(env), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None or code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if code is None:
        raise ToolError(f"{Path(cmd[0]).name} ran past {timeout:g}s and was killed (log: {log})")
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        raise ToolError(f"{Path(cmd[0]).name} exited with {code} (log: {log})\n"
                        + "\n".join(tail))


def _check(scenario: Scenario) -> None:
    if scenario.duration is not None:
        raise ConfigError(f"--tool {scenario.tool}: the drivers measure a request count; use "
                          "--requests instead of --duration")


def _tool_timeout(scenario: Scenario, point: LoadPoint) -> float:
    """Wall-clock bound for one tool run: every request wave at its timeout, plus start-up."""
    waves = -(-(scenario.requests + tool_warmup(scenario, point)) // (point.concurrency or 1))
    seconds: float = 120.0 + scenario.timeout * min(waves, 20)
    return seconds


def _sent_inputs(scenario: Scenario, plan: RequestPlan) -> list[str]:
    return list(request_inputs(scenario, plan, 0))


def run_perf_analyzer(scenario: Scenario, plan: RequestPlan, tokenizer: Tokenizer,
                      work: Path, say: Callable[[str], None] | None = None) -> RunResult:
    """Run perf_analyzer once per load point; raw files land in ``work``."""
    _check(scenario)
    env = tool_environment()
    exe = find_tool(PERF_ANALYZER, env)
    work.mkdir(parents=True, exist_ok=True)
    dims = model_input_dims(scenario.grpc_address, scenario.model)
    shapes = shape_args(dims, _sent_inputs(scenario, plan))
    input_file = work / "input_data.json"
    input_file.write_text(json.dumps(input_data(scenario, plan), indent=1), encoding="utf-8")
    points = []
    for point in scenario.points:
        tag = point.label.replace("=", "")
        export, csv_file = work / f"profile_export-{tag}.json", work / f"perf_analyzer-{tag}.csv"
        for stale in (export, csv_file):  # perf_analyzer refuses an existing export path
            stale.unlink(missing_ok=True)
        cmd = perf_analyzer_command(exe, scenario, point, input_file, export, csv_file, shapes)
        if say:
            say(f"perf_analyzer {point.label}: {' '.join(cmd)}")
        _run(cmd, env, work / f"perf_analyzer-{tag}.log", _tool_timeout(scenario, point))
        points.append(_point_from_export(point, export, tokenizer,
                                         read_perf_analyzer_csv(csv_file)))
    meta = base_meta("perf_analyzer", tool_version(PERF_ANALYZER))
    meta["tokenizer"] = str(tokenizer.path)
    return RunResult(scenario, points, meta)


def _point_from_export(point: LoadPoint, export: Path, tokenizer: Tokenizer,
                       tool_summary: dict[str, Any] | None) -> PointResult:
    try:
        data = json.loads(export.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ToolError(f"no usable profile export at {export}: {e}") from e
    parsed = records_from_profile_export(data, tokenizer.count_many)
    if len(parsed) != 1:
        raise ToolError(f"{export}: expected one experiment, found {len(parsed)}")
    _, records = parsed[0]
    for r in records:
        r.point = point.label
    return PointResult(point, summarize(records), records, tool_summary)


def run_genai_perf(scenario: Scenario, plan: RequestPlan, tokenizer: Tokenizer,
                   work: Path, say: Callable[[str], None] | None = None) -> RunResult:
    """Run genai-perf once per load point; its artifact directories land in ``work``."""
    _check(scenario)
    env = tool_environment()
    exe = find_tool(GENAI_PERF, env)
    find_tool(PERF_ANALYZER, env)
    work.mkdir(parents=True, exist_ok=True)
    dims = model_input_dims(scenario.grpc_address, scenario.model)
    # genai-perf itself adds --shape for text_input and max_tokens
    shapes = shape_args(dims, _sent_inputs(scenario, plan),
                        skip=(ENSEMBLE_IN.text_input, ENSEMBLE_IN.max_tokens))
    prompts_file = work / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"text": p.text}) + "\n" for p in plan.prompts),
                            encoding="utf-8")
    points = []
    for point in scenario.points:
        tag = point.label.replace("=", "")
        art = work / tag
        if art.exists():
            shutil.rmtree(art)
        cmd = genai_perf_command(exe, scenario, point, prompts_file, art, tokenizer.path, shapes)
        if say:
            say(f"genai-perf {point.label}: {' '.join(cmd)}")
        _run(cmd, env, work / f"genai-perf-{tag}.log", _tool_timeout(scenario, point))
        exports = sorted(art.glob("*/profile_export.json"))
        summaries = sorted(art.glob("*/profile_export_genai_perf.json"))
        if not exports or not summaries:
            raise ToolError(f"genai-perf wrote no profile export under {art}")
        points.append(_point_from_export(point, exports[0], tokenizer,
                                         read_genai_perf_summary(summaries[0])))
    meta = base_meta("genai-perf", tool_version(GENAI_PERF))
    meta["tokenizer"] = str(tokenizer.path)
    return RunResult(scenario, points, meta)
