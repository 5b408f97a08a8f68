"""The contract module against NVIDIA's inflight_batcher_llm, and rendered configs against it.

``OFFICIAL`` is a snapshot of the tensor tables (name, dtype, dims, flags) and the ensemble
wiring of NVIDIA's ``ensemble`` and ``tensorrt_llm`` models, parsed from
tensorrtllm_backend ``all_models/inflight_batcher_llm/{ensemble,tensorrt_llm}/config.pbtxt`` @
c2e65b88d85255be30cf50440a91662abeb497dd plus the tensors TensorRT-LLM
``triton_backend/all_models/inflight_batcher_llm`` @ 2a9abd9536aa62ad3e4b9314be9286b1b1be523b
added since (``return_num_input_tokens``, ``return_num_output_tokens``, ``num_input_tokens``,
``num_output_tokens``), with ``${logits_datatype}`` as FP32 and
``${prompt_embedding_table_data_type}`` / ``${encoder_input_features_data_type}`` as FP16.
Flags: ``opt`` optional, ``scalar`` reshape to [], ``ragged`` allow_ragged_batch.

``llmapi`` is NVIDIA's ``triton_backend/all_models/llmapi/tensorrt_llm/config.pbtxt`` @
c8c6df08bd0ead54cd47f7973e1e425c28a174cd (TensorRT-LLM), whose model runs with
max_batch_size 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tritonllm import contract as C
from tritonllm.builders.repository import parse_config, render_repository
from tritonllm.errors import ConfigError
from tritonllm.settings import PARAMS_BY_MODEL, RepoSettings

OFFICIAL = """
ensemble:
    in  text_input                           STRING  [1]
    in  decoder_text_input                   STRING  [1] opt
    in  max_tokens                           INT32   [1]
    in  num_return_sequences                 INT32   [1] opt
    in  bad_words                            STRING  [-1] opt
    in  stop_words                           STRING  [-1] opt
    in  exclude_input_in_output              BOOL    [1] opt
    in  end_id                               INT32   [1] opt
    in  pad_id                               INT32   [1] opt
    in  top_k                                INT32   [1] opt
    in  top_p                                FP32    [1] opt
    in  temperature                          FP32    [1] opt
    in  length_penalty                       FP32    [1] opt
    in  repetition_penalty                   FP32    [1] opt
    in  min_tokens                           INT32   [1] opt
    in  presence_penalty                     FP32    [1] opt
    in  frequency_penalty                    FP32    [1] opt
    in  seed                                 UINT64  [1] opt
    in  return_log_probs                     BOOL    [1] opt
    in  return_context_logits                BOOL    [1] opt
    in  return_generation_logits             BOOL    [1] opt
    in  return_perf_metrics                  BOOL    [1] opt
    in  return_num_input_tokens              BOOL    [1] opt
    in  return_num_output_tokens             BOOL    [1] opt
    in  beam_width                           INT32   [1] opt
    in  stream                               BOOL    [1] opt
    in  prompt_embedding_table               FP16    [-1,-1] opt
    in  prompt_table_extra_id                UINT64  [1] opt
    in  prompt_vocab_size                    INT32   [1] opt
    in  embedding_bias_words                 STRING  [-1] opt
    in  embedding_bias_weights               FP32    [-1] opt
    in  lora_task_id                         UINT64  [1] opt
    in  lora_weights                         FP16    [-1,-1] opt ragged
    in  lora_config                          INT32   [-1,3] opt ragged
    in  guided_decoding_guide_type           STRING  [1] opt ragged
    in  guided_decoding_guide                STRING  [1] opt ragged
    out text_output                          STRING  [-1]
    out cum_log_probs                        FP32    [-1]
    out output_log_probs                     FP32    [-1,-1]
    out context_logits                       FP32    [-1,-1]
    out generation_logits                    FP32    [-1,-1,-1]
    out batch_index                          INT32   [1]
    out sequence_index                       INT32   [1]
    out kv_cache_alloc_new_blocks            INT32   [1]
    out kv_cache_reused_blocks               INT32   [1]
    out kv_cache_alloc_total_blocks          INT32   [1]
    out arrival_time_ns                      INT64   [1]
    out first_scheduled_time_ns              INT64   [1]
    out first_token_time_ns                  INT64   [1]
    out last_token_time_ns                   INT64   [1]
    out acceptance_rate                      FP32    [1]
    out total_accepted_draft_tokens          INT32   [1]
    out total_draft_tokens                   INT32   [1]
    out num_input_tokens                     INT32   [1]
    out num_output_tokens                    INT32   [1]
    map preprocessing.in  BAD_WORDS_DICT bad_words
    map preprocessing.in  PROMPT_TABLE_EXTRA_ID prompt_table_extra_id
    map preprocessing.in  DECODER_QUERY decoder_text_input
    map preprocessing.in  STOP_WORDS_DICT stop_words
    map preprocessing.in  END_ID end_id
    map preprocessing.in  EMBEDDING_BIAS_WEIGHTS embedding_bias_weights
    map preprocessing.in  REQUEST_OUTPUT_LEN max_tokens
    map preprocessing.in  PAD_ID pad_id
    map preprocessing.in  EMBEDDING_BIAS_WORDS embedding_bias_words
    map preprocessing.in  QUERY text_input
    map preprocessing.out INPUT_ID _INPUT_ID
    map preprocessing.out EMBEDDING_BIAS _EMBEDDING_BIAS
    map preprocessing.out REQUEST_DECODER_INPUT_LEN _REQUEST_DECODER_INPUT_LEN
    map preprocessing.out OUT_PROMPT_TABLE_EXTRA_IDS _OUT_PROMPT_TABLE_EXTRA_IDS
    map preprocessing.out OUT_PAD_ID _PREPROCESSOR_PAD_ID
    map preprocessing.out REQUEST_OUTPUT_LEN _REQUEST_OUTPUT_LEN
    map preprocessing.out BAD_WORDS_IDS _BAD_WORDS_IDS
    map preprocessing.out OUT_END_ID _PREPROCESSOR_END_ID
    map preprocessing.out REQUEST_INPUT_LEN _REQUEST_INPUT_LEN
    map preprocessing.out STOP_WORDS_IDS _STOP_WORDS_IDS
    map preprocessing.out DECODER_INPUT_ID _DECODER_INPUT_ID
    map tensorrt_llm.in  runtime_top_p top_p
    map tensorrt_llm.in  repetition_penalty repetition_penalty
    map tensorrt_llm.in  runtime_top_k top_k
    map tensorrt_llm.in  prompt_table_extra_ids _OUT_PROMPT_TABLE_EXTRA_IDS
    map tensorrt_llm.in  lora_config lora_config
    map tensorrt_llm.in  lora_weights lora_weights
    map tensorrt_llm.in  bad_words_list _BAD_WORDS_IDS
    map tensorrt_llm.in  request_output_len _REQUEST_OUTPUT_LEN
    map tensorrt_llm.in  exclude_input_in_output exclude_input_in_output
    map tensorrt_llm.in  guided_decoding_guide guided_decoding_guide
    map tensorrt_llm.in  streaming stream
    map tensorrt_llm.in  return_log_probs return_log_probs
    map tensorrt_llm.in  seed seed
    map tensorrt_llm.in  lora_task_id lora_task_id
    map tensorrt_llm.in  return_perf_metrics return_perf_metrics
    map tensorrt_llm.in  return_num_input_tokens return_num_input_tokens
    map tensorrt_llm.in  return_num_output_tokens return_num_output_tokens
    map tensorrt_llm.in  decoder_input_lengths _REQUEST_DECODER_INPUT_LEN
    map tensorrt_llm.in  frequency_penalty frequency_penalty
    map tensorrt_llm.in  len_penalty length_penalty
    map tensorrt_llm.in  prompt_embedding_table prompt_embedding_table
    map tensorrt_llm.in  num_return_sequences num_return_sequences
    map tensorrt_llm.in  beam_width beam_width
    map tensorrt_llm.in  min_tokens min_tokens
    map tensorrt_llm.in  stop_words_list _STOP_WORDS_IDS
    map tensorrt_llm.in  decoder_input_ids _DECODER_INPUT_ID
    map tensorrt_llm.in  input_ids _INPUT_ID
    map tensorrt_llm.in  temperature temperature
    map tensorrt_llm.in  embedding_bias _EMBEDDING_BIAS
    map tensorrt_llm.in  prompt_vocab_size prompt_vocab_size
    map tensorrt_llm.in  return_generation_logits return_generation_logits
    map tensorrt_llm.in  presence_penalty presence_penalty
    map tensorrt_llm.in  input_lengths _REQUEST_INPUT_LEN
    map tensorrt_llm.in  return_context_logits return_context_logits
    map tensorrt_llm.in  end_id _PREPROCESSOR_END_ID
    map tensorrt_llm.in  pad_id _PREPROCESSOR_PAD_ID
    map tensorrt_llm.in  guided_decoding_guide_type guided_decoding_guide_type
    map tensorrt_llm.out sequence_length _SEQUENCE_LENGTH
    map tensorrt_llm.out context_logits context_logits
    map tensorrt_llm.out last_token_time_ns last_token_time_ns
    map tensorrt_llm.out total_draft_tokens total_draft_tokens
    map tensorrt_llm.out num_input_tokens num_input_tokens
    map tensorrt_llm.out num_output_tokens num_output_tokens
    map tensorrt_llm.out output_log_probs output_log_probs
    map tensorrt_llm.out output_ids _TOKENS_BATCH
    map tensorrt_llm.out cum_log_probs cum_log_probs
    map tensorrt_llm.out total_accepted_draft_tokens total_accepted_draft_tokens
    map tensorrt_llm.out first_scheduled_time_ns first_scheduled_time_ns
    map tensorrt_llm.out kv_cache_alloc_new_blocks kv_cache_alloc_new_blocks
    map tensorrt_llm.out arrival_time_ns arrival_time_ns
    map tensorrt_llm.out generation_logits generation_logits
    map tensorrt_llm.out acceptance_rate acceptance_rate
    map tensorrt_llm.out sequence_index sequence_index
    map tensorrt_llm.out kv_cache_alloc_total_blocks kv_cache_alloc_total_blocks
    map tensorrt_llm.out kv_cache_reused_blocks kv_cache_reused_blocks
    map tensorrt_llm.out first_token_time_ns first_token_time_ns
    map tensorrt_llm.out batch_index batch_index
    map postprocessing.in  SEQUENCE_LENGTH _SEQUENCE_LENGTH
    map postprocessing.in  TOKENS_BATCH _TOKENS_BATCH
    map postprocessing.out OUTPUT text_output
tensorrt_llm:
    in  input_ids                            INT32   [-1] opt ragged
    in  encoder_input_features               FP16    [-1,-1] opt ragged
    in  encoder_output_lengths               INT32   [1] opt scalar
    in  input_lengths                        INT32   [1] scalar
    in  request_output_len                   INT32   [1] scalar
    in  num_return_sequences                 INT32   [1] opt scalar
    in  draft_input_ids                      INT32   [-1] opt ragged
    in  decoder_input_ids                    INT32   [-1] opt ragged
    in  decoder_input_lengths                INT32   [1] opt scalar
    in  draft_logits                         FP32    [-1,-1] opt ragged
    in  draft_acceptance_threshold           FP32    [1] opt scalar
    in  end_id                               INT32   [1] opt scalar
    in  pad_id                               INT32   [1] opt scalar
    in  stop_words_list                      INT32   [2,-1] opt ragged
    in  bad_words_list                       INT32   [2,-1] opt ragged
    in  embedding_bias                       FP32    [-1] opt ragged
    in  beam_width                           INT32   [1] opt scalar
    in  temperature                          FP32    [1] opt scalar
    in  runtime_top_k                        INT32   [1] opt scalar
    in  runtime_top_p                        FP32    [1] opt scalar
    in  runtime_top_p_min                    FP32    [1] opt scalar
    in  runtime_top_p_decay                  FP32    [1] opt scalar
    in  runtime_top_p_reset_ids              INT32   [1] opt scalar
    in  len_penalty                          FP32    [1] opt scalar
    in  early_stopping                       BOOL    [1] opt scalar
    in  repetition_penalty                   FP32    [1] opt scalar
    in  min_tokens                           INT32   [1] opt scalar
    in  beam_search_diversity_rate           FP32    [1] opt scalar
    in  presence_penalty                     FP32    [1] opt scalar
    in  frequency_penalty                    FP32    [1] opt scalar
    in  seed                                 UINT64  [1] opt scalar
    in  return_log_probs                     BOOL    [1] opt scalar
    in  return_context_logits                BOOL    [1] opt scalar
    in  return_generation_logits             BOOL    [1] opt scalar
    in  return_perf_metrics                  BOOL    [1] opt scalar
    in  return_num_input_tokens              BOOL    [1] opt scalar
    in  return_num_output_tokens             BOOL    [1] opt scalar
    in  exclude_input_in_output              BOOL    [1] opt scalar
    in  stop                                 BOOL    [1] opt scalar
    in  streaming                            BOOL    [1] opt scalar
    in  prompt_embedding_table               FP16    [-1,-1] opt ragged
    in  prompt_table_extra_ids               UINT64  [-1] opt ragged
    in  prompt_vocab_size                    INT32   [1] opt scalar
    in  cross_attention_mask                 BOOL    [-1,-1] opt ragged
    in  mrope_rotary_cos_sin                 FP32    [-1] opt
    in  mrope_position_deltas                INT64   [1] opt
    in  lora_task_id                         UINT64  [1] opt scalar
    in  lora_weights                         FP16    [-1,-1] opt ragged
    in  lora_config                          INT32   [-1,3] opt ragged
    in  context_phase_params                 UINT8   [-1] opt ragged
    in  skip_cross_attn_blocks               BOOL    [1] opt ragged
    in  retention_token_range_starts         INT32   [-1] opt ragged
    in  retention_token_range_ends           INT32   [-1] opt ragged
    in  retention_token_range_priorities     INT32   [-1] opt ragged
    in  retention_token_range_durations_ms   INT32   [-1] opt ragged
    in  retention_decode_priority            INT32   [1] opt ragged
    in  retention_decode_duration_ms         INT32   [1] opt ragged
    in  guided_decoding_guide_type           STRING  [1] opt ragged
    in  guided_decoding_guide                STRING  [1] opt ragged
    in  lookahead_window_size                INT32   [1] opt ragged
    in  lookahead_ngram_size                 INT32   [1] opt ragged
    in  lookahead_verification_set_size      INT32   [1] opt ragged
    out output_ids                           INT32   [-1,-1]
    out sequence_length                      INT32   [-1]
    out cum_log_probs                        FP32    [-1]
    out output_log_probs                     FP32    [-1,-1]
    out context_logits                       FP32    [-1,-1]
    out generation_logits                    FP32    [-1,-1,-1]
    out batch_index                          INT32   [1]
    out sequence_index                       INT32   [1]
    out context_phase_params                 UINT8   [-1]
    out kv_cache_alloc_new_blocks            INT32   [1]
    out kv_cache_reused_blocks               INT32   [1]
    out kv_cache_alloc_total_blocks          INT32   [1]
    out arrival_time_ns                      INT64   [1]
    out first_scheduled_time_ns              INT64   [1]
    out first_token_time_ns                  INT64   [1]
    out last_token_time_ns                   INT64   [1]
    out acceptance_rate                      FP32    [1]
    out total_accepted_draft_tokens          INT32   [1]
    out total_draft_tokens                   INT32   [1]
    out num_input_tokens                     INT32   [1]
    out num_output_tokens                    INT32   [1]
llmapi:
    in  text_input                           STRING  [-1]
    in  streaming                            BOOL    [1] opt
    in  sampling_param_best_of               INT32   [1] opt
    in  sampling_param_temperature           FP32    [1] opt
    in  sampling_param_top_k                 INT32   [1] opt
    in  sampling_param_top_p                 FP32    [1] opt
    in  sampling_param_frequency_penalty     FP32    [1] opt
    in  sampling_param_presence_penalty      FP32    [1] opt
    in  sampling_param_max_tokens            INT32   [1] opt
    in  sampling_param_stop                  STRING  [-1] opt
    in  sampling_param_seed                  UINT64  [1] opt
    in  sampling_param_exclude_input_from_output BOOL [1] opt
    in  sampling_param_return_perf_metrics   BOOL    [1] opt
    in  return_finish_reason                 BOOL    [1] opt
    in  return_stop_reason                   BOOL    [1] opt
    in  return_cumulative_logprob            BOOL    [1] opt
    in  stop                                 BOOL    [1] opt
    out text_output                          STRING  [-1]
    out finish_reason                        STRING  [-1]
    out stop_reason                          STRING  [-1]
    out cumulative_logprob                   FP32    [-1]
    out kv_cache_reused_block                INT32   [-1]
    out kv_cache_missed_block                INT32   [-1]
    out kv_cache_alloc_new_blocks            INT32   [-1]
    out kv_cache_alloc_total_blocks          INT32   [-1]
    out kv_cache_hit_rate                    FP32    [-1]
    out arrival_time_ns                      INT64   [1]
    out first_scheduled_time_ns              INT64   [1]
    out first_token_time_ns                  INT64   [1]
    out last_token_time_ns                   INT64   [1]
    out acceptance_rate                      FP32    [1]
    out total_accepted_draft_tokens          INT32   [1]
    out total_draft_tokens                   INT32   [1]
"""


def official() -> dict[str, dict[str, list[tuple[str, ...]]]]:
    """{"ensemble": {"in": [...], "out": [...], "map": [...]}, "tensorrt_llm": {...}}"""
    out: dict[str, dict[str, list[tuple[str, ...]]]] = {}
    model = ""
    for line in OFFICIAL.strip().splitlines():
        if not line.startswith(" "):
            model = line.rstrip(":")
            out[model] = {"in": [], "out": [], "map": []}
            continue
        kind, *rest = line.split()
        out[model][kind].append(tuple(rest))
    return out


def row(t: C.Tensor, kind: str) -> tuple[str, ...]:
    flags = []
    if kind == "in" and t.optional:
        flags.append("opt")
    if t.reshape is not None:
        flags.append("scalar" if t.reshape == () else "reshape")
    if kind == "in" and t.ragged:
        flags.append("ragged")
    return (t.name, t.dtype, f"[{','.join(map(str, t.dims))}]", *flags)


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm", "llmapi"])
def test_contract_matches_nvidia(model: str) -> None:
    """Every tensor but our additions (``ours``, listed apart) is NVIDIA's, in its order."""
    off = official()[model]
    ours = C.contract(model)
    assert [row(t, "in") for t in ours.inputs_for("gpu") if not t.ours] == off["in"]
    assert [row(t, "out") for t in ours.outputs_for("gpu") if not t.ours] == off["out"]
    official_names = {r[0] for r in (*off["in"], *off["out"])}
    assert not {t.name for t in (*ours.inputs, *ours.outputs) if t.ours} & official_names


def test_ensemble_wiring_matches_nvidia() -> None:
    want = official()["ensemble"]["map"]
    got = []
    for step in C.ensemble_steps("gpu"):
        got += [(f"{step.model}.in", k, v) for k, v in step.input_map]
        got += [(f"{step.model}.out", k, v) for k, v in step.output_map]
    assert sorted(got) == sorted(want)


def test_our_additions_are_marked_optional_and_cpu_only_on_the_ensemble_path() -> None:
    ours = [(m, t) for m, c in C.CONTRACTS.items() for t in (*c.inputs, *c.outputs) if t.ours]
    assert {(m, t.name) for m, t in ours} >= {
        ("ensemble", "finish_reason"), ("tensorrt_llm", "finish_reason"),
        ("tensorrt_llm_bls", "finish_reason")}
    for model, t in ours:
        # The GPU ensemble path stays exactly NVIDIA's; the BLS and llmapi models are ours on
        # both targets (the llmapi additions are SamplingParams fields and token counts).
        if model not in (C.BLS, C.LLMAPI):
            assert not t.on("gpu"), (model, t.name)
    for c in C.CONTRACTS.values():
        for t in c.inputs:
            assert not t.ours or t.optional, f"{c.name}.{t.name}: our inputs must be optional"
    assert C.BLS_CONTRACT.output("finish_reason").on("gpu")


@pytest.mark.parametrize("target", C.TARGETS)
def test_ensemble_graph_is_closed(target: str) -> None:
    models = C.TargetModels(target)
    used, produced = set(), set()
    for step in models.steps:
        contract = models[step.model]
        for key, value in step.input_map:
            used.add(value)
            contract.input(key)
        for key, value in step.output_map:
            produced.add(value)
            contract.output(key)
        mapped = {k for k, _ in step.input_map}
        assert set(contract.required_inputs) <= mapped
    ens = models["ensemble"]
    assert {t.name for t in ens.inputs} <= used, "every ensemble input feeds a step"
    assert {t.name for t in ens.outputs} <= produced, "every ensemble output is written"
    internal = produced - {t.name for t in ens.outputs}
    assert internal <= used, "no intermediate tensor is left unused"


def test_genai_perf_inputs_have_dims_one() -> None:
    for name in ("stream", "exclude_input_in_output", "text_input", "max_tokens"):
        assert C.get_input("ensemble", name).dims == (1,)


def test_every_official_optional_ensemble_input_is_declared_optional() -> None:
    for name, *_rest in official()["ensemble"]["in"]:
        t = C.get_input("ensemble", name)
        assert t.optional == (name not in ("text_input", "max_tokens"))


def test_cpu_unsupported_inputs_are_llm_inputs() -> None:
    for name in C.CPU_UNSUPPORTED_INPUTS:
        assert C.LLM_CONTRACT.input(name).optional
    for name in C.BLS_UNSUPPORTED_INPUTS:
        assert C.BLS_CONTRACT.input(name).optional


def test_every_unsupported_input_is_an_optional_input_of_its_model() -> None:
    for u in C.UNSUPPORTED_INPUTS:
        assert C.contract(u.model).input(u.name).optional, u
        assert u.why and u.targets <= C.BOTH
    keys = [(u.model, u.name) for u in C.UNSUPPORTED_INPUTS]
    assert len(keys) == len(set(keys)), "declared once"


def test_the_bls_model_reads_forwards_or_refuses_each_input() -> None:
    """Nothing is silently ignored: each BLS input is read by the BLS model, passed on to the
    model that honours it, or refused on every target."""
    names = {t.name for t in C.BLS_CONTRACT.inputs}
    forwarded = set(C.BLS_FORWARDS)
    refused = set(C.unsupported_inputs(C.BLS))
    assert names == C.BLS_OWN_INPUTS | forwarded | refused
    assert not C.BLS_OWN_INPUTS & forwarded
    for name, (model, inner) in C.BLS_FORWARDS.items():
        outer, inner_t = C.BLS_CONTRACT.input(name), C.contract(model).input(inner)
        assert outer.dtype == inner_t.dtype, name


def test_the_bls_model_refuses_what_the_ensemble_refuses_on_each_target() -> None:
    bls_only = {"image_input", "image_bytes_input", "image_url_input", "image_sizes_input",
                "video_bytes_input", "num_draft_tokens", "use_draft_logits"}
    for target in C.TARGETS:
        ens = C.unsupported_inputs(C.ENSEMBLE, target)
        bls = C.unsupported_inputs(C.BLS, target)
        shared = {t.name for t in C.ENSEMBLE_CONTRACT.inputs} & {t.name for t in
                                                                 C.BLS_CONTRACT.inputs}
        # the BLS model also refuses the logits / perf outputs it does not relay
        relayed = {"return_context_logits", "return_generation_logits", "return_perf_metrics"}
        assert {n for n in ens if n in shared} == {n for n in bls if n in shared} - (
            relayed if target == "gpu" else set())
        assert set(bls) - set(ens) <= bls_only | relayed
        for name in set(ens) & set(bls):
            assert ens[name].neutral == bls[name].neutral, name


def test_unsupported_inputs_per_target() -> None:
    cpu = C.unsupported_inputs(C.ENSEMBLE, "cpu")
    assert {"lora_task_id", "guided_decoding_guide", "prompt_embedding_table",
            "return_context_logits", "decoder_text_input", "embedding_bias_words"} <= set(cpu)
    assert cpu["beam_width"].neutral == 1 and cpu["lora_task_id"].neutral is None
    assert cpu["beam_width"].model == C.ENSEMBLE
    # on GPU TensorRT-LLM honours LoRA etc.; only what our preprocessing lacks is refused
    assert set(C.unsupported_inputs(C.ENSEMBLE, "gpu")) == {
        "decoder_text_input", "embedding_bias_words", "embedding_bias_weights",
        "prompt_table_extra_id"}
    assert C.unsupported_inputs(C.LLM, "gpu") == {}
    assert set(C.unsupported_inputs(C.LLM, "cpu")) == set(C.CPU_UNSUPPORTED_INPUTS)
    assert set(C.unsupported_inputs(C.PREPROCESSING)) == {
        "DECODER_QUERY", "EMBEDDING_BIAS_WORDS", "EMBEDDING_BIAS_WEIGHTS", "PROMPT_TABLE_EXTRA_ID"}
    with pytest.raises(ValueError, match="unknown target"):
        C.unsupported_inputs(C.LLM, "tpu")


def test_every_cpu_llm_input_is_read_or_refused() -> None:
    read = set(C.REQUEST_FIELDS[C.LLM].values())
    read |= {"stop", "return_num_input_tokens", "return_num_output_tokens"}  # llm_service
    for t in C.LLM_CONTRACT.inputs_for("cpu"):
        assert t.name in read or t.name in C.CPU_UNSUPPORTED_INPUTS, t.name


def test_lookups() -> None:
    assert C.get_input("tensorrt_llm", "input_ids").triton_dtype == "TYPE_INT32"
    assert C.get_output("postprocessing", "OUTPUT").dims == (-1,)
    assert {(m, k) for m, k, _ in C.find_tensor("end_id")} == {
        ("ensemble", "input"), ("tensorrt_llm", "input"), ("tensorrt_llm_bls", "input")}
    assert C.Tensor("x", "TYPE_FP16", (1,)).dtype == "FP16"
    with pytest.raises(KeyError, match="no input 'nope'"):
        C.get_input("ensemble", "nope")
    with pytest.raises(KeyError, match="no contract for model"):
        C.contract("nope")
    with pytest.raises(ValueError, match="unknown Triton dtype"):
        C.Tensor("x", "INT3", (1,))
    with pytest.raises(ValueError, match="dims"):
        C.Tensor("x", "INT32", (0,))
    logits = C.TargetModels("gpu", "FP16")["ensemble"].output("context_logits")
    assert logits.dtype == "FP16"


def test_python_parameter_keys_extend_the_official_ones() -> None:
    for model in ("postprocessing", "tensorrt_llm_bls"):
        ours = set(PARAMS_BY_MODEL[model].keys())
        official_keys = set(C.OFFICIAL_PYTHON_PARAMETER_KEYS[model])
        assert official_keys - {"multimodal_encoders_name"} <= ours
    assert {"tokenizer_dir", "add_special_tokens"} <= set(PARAMS_BY_MODEL["preprocessing"].keys())


# --- rendered GPU configs against the contract (and so against NVIDIA) --------------------------

@pytest.fixture(scope="module")
def gpu_repo(fake_engine: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract")
    engine = fake_engine(root / "engine", "trtllm-legacy")
    return render_repository(engine, root / "repo", RepoSettings(server_repo_path="/models"))


def config_rows(cfg: object, kind: str) -> list[tuple[str, ...]]:
    from tritonclient.grpc import model_config_pb2 as mc

    rows = []
    for t in (cfg.input if kind == "in" else cfg.output):  # type: ignore[attr-defined]
        flags = []
        if kind == "in" and t.optional:
            flags.append("opt")
        if t.HasField("reshape"):
            flags.append("scalar" if not len(t.reshape.shape) else "reshape")
        if kind == "in" and t.allow_ragged_batch:
            flags.append("ragged")
        dtype = mc.DataType.Name(t.data_type).removeprefix("TYPE_")
        rows.append((t.name, dtype, f"[{','.join(map(str, t.dims))}]", *flags))
    return rows


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm", "llmapi"])
def test_rendered_gpu_configs_carry_the_official_tensors(model: str, gpu_repo: Path) -> None:
    cfg = parse_config((gpu_repo / model / "config.pbtxt").read_text(), model)
    off = official()[model]
    c = C.contract(model)
    ours = {t.name for t in (*c.inputs_for("gpu"), *c.outputs_for("gpu")) if t.ours}
    assert [r for r in config_rows(cfg, "in") if r[0] not in ours] == off["in"]
    assert [r for r in config_rows(cfg, "out") if r[0] not in ours] == off["out"]


def test_rendered_gpu_ensemble_wiring_is_nvidias(gpu_repo: Path) -> None:
    cfg = parse_config((gpu_repo / "ensemble" / "config.pbtxt").read_text(), "ensemble")
    got = []
    for step in cfg.ensemble_scheduling.step:
        got += [(f"{step.model_name}.in", k, v) for k, v in step.input_map.items()]
        got += [(f"{step.model_name}.out", k, v) for k, v in step.output_map.items()]
    assert sorted(got) == sorted(official()["ensemble"]["map"])


def test_rendered_gpu_llm_uses_official_parameter_keys(gpu_repo: Path) -> None:
    cfg = parse_config((gpu_repo / "tensorrt_llm" / "config.pbtxt").read_text(), "llm")
    assert cfg.backend == "tensorrtllm"
    keys = list(cfg.parameters)
    assert set(keys) <= set(C.TRTLLM_PARAMETER_KEYS)
    assert {"gpt_model_type", "gpt_model_path", "batch_scheduler_policy",
            "kv_cache_free_gpu_mem_fraction", "enable_kv_cache_reuse",
            "exclude_input_in_output", "cancellation_check_period_ms"} <= set(keys)
    assert cfg.parameters["gpt_model_type"].string_value == "inflight_fused_batching"
    assert cfg.model_transaction_policy.decoupled is True


# --- the GPU llmapi layout: NVIDIA's llmapi model, and the classic fronts over it --------------

@pytest.fixture(scope="module")
def gpu_llmapi_repo(fake_engine: Callable[..., Path],
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract-llmapi")
    engine = fake_engine(root / "engine", "trtllm")  # an LLM API deployment
    return render_repository(engine, root / "repo", RepoSettings(server_repo_path="/models"))


def test_gpu_llmapi_layout_serves_nvidias_llmapi_model_as_tensorrt_llm(
        gpu_llmapi_repo: Path) -> None:
    """The GPU ``tensorrt_llm`` of the current stack has every tensor of NVIDIA's llmapi
    config.pbtxt (@ c8c6df08, the OFFICIAL table) with its dtype and dims, in its order; what
    else it declares is marked ours in the contract (token counts, SamplingParams fields)."""
    assert sorted(p.name for p in gpu_llmapi_repo.iterdir() if p.is_dir()) == [
        "ensemble", "tensorrt_llm", "tensorrt_llm_bls"]
    cfg = parse_config((gpu_llmapi_repo / "tensorrt_llm" / "config.pbtxt").read_text(), "llm")
    assert cfg.backend == "python" and cfg.max_batch_size == 0
    off = official()["llmapi"]
    ours = {t.name for t in (*C.LLMAPI_CONTRACT.inputs, *C.LLMAPI_CONTRACT.outputs) if t.ours}
    assert [r for r in config_rows(cfg, "in") if r[0] not in ours] == off["in"]
    assert [r for r in config_rows(cfg, "out") if r[0] not in ours] == off["out"]
    assert {r[0] for r in (*config_rows(cfg, "in"), *config_rows(cfg, "out"))} - {
        r[0] for r in (*off["in"], *off["out"])} == ours
    assert not list(cfg.parameters)  # NVIDIA's model reads model.yaml, not parameters


def test_gpu_llmapi_model_yaml_holds_llm_arguments_of_the_pinned_release(
        gpu_llmapi_repo: Path) -> None:
    import yaml

    from tritonllm.trtllm_release import LLM_ARGS, TRITON_CONFIG_KEYS

    data = yaml.safe_load((gpu_llmapi_repo / "tensorrt_llm" / "1" / "model.yaml").read_text())
    triton = data.pop("triton_config")
    assert set(data) <= LLM_ARGS and set(triton) <= TRITON_CONFIG_KEYS
    assert triton["max_batch_size"] == 0 and triton["decoupled"] is True
    assert data["model"] == "/models/tensorrt_llm/1/engine/checkpoint"  # where the server sees it
    assert data["backend"] == "pytorch"
    assert (data["max_batch_size"], data["max_seq_len"], data["max_num_tokens"]) == (8, 256, 2048)
    assert data["kv_cache_config"] == {"free_gpu_memory_fraction": 0.9,
                                       "enable_block_reuse": False}
    assert (gpu_llmapi_repo / "tensorrt_llm" / "1" / "engine" / "checkpoint").is_dir()


def test_gpu_llmapi_fronts_are_classic_and_call_the_llmapi_model(gpu_llmapi_repo: Path) -> None:
    for name in ("ensemble", "tensorrt_llm_bls"):
        cfg = parse_config((gpu_llmapi_repo / name / "config.pbtxt").read_text(), name)
        assert cfg.backend == "python" and cfg.max_batch_size > 0
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        assert params["llm_contract"] == "llmapi" and params["tensorrt_llm_model_name"] == C.LLM
        got = {t.name for t in cfg.input}
        assert got == {t.name for t in C.CONTRACTS[name].inputs_for("gpu")}
        assert "finish_reason" in {t.name for t in cfg.output}


@pytest.mark.parametrize(("extra", "message"), [
    ({"no_such_argument": "1"}, "'no_such_argument' is not an argument of TensorRT-LLM 1.2.1"),
    ({"kv_cache_config": "{bogus: 1}"}, "'kv_cache_config' is set by the build or its own"),
    ({"max_seq_len": "99"}, "'max_seq_len' is set by the build or its own option"),
])
def test_an_invented_model_yaml_key_is_refused(fake_engine: Callable[..., Path], tmp_path: Path,
                                               extra: dict[str, str], message: str) -> None:
    engine = fake_engine(tmp_path / "engine", "trtllm")
    with pytest.raises(ConfigError, match=message):
        render_repository(engine, tmp_path / "repo", RepoSettings(extra_llm_parameters=extra))
    assert not (tmp_path / "repo").exists()


def test_real_llm_arguments_pass_through_trtllm_param(fake_engine: Callable[..., Path],
                                                      tmp_path: Path) -> None:
    import yaml

    engine = fake_engine(tmp_path / "engine", "trtllm")
    repo = render_repository(engine, tmp_path / "repo", RepoSettings(extra_llm_parameters={
        "enable_attention_dp": "true", "cuda_graph_config": "{enable_padding: true}"}))
    data = yaml.safe_load((repo / "tensorrt_llm" / "1" / "model.yaml").read_text())
    assert data["enable_attention_dp"] is True
    assert data["cuda_graph_config"] == {"enable_padding": True}


def test_a_legacy_engine_cannot_render_the_llmapi_layout_nor_the_reverse(
        fake_engine: Callable[..., Path], tmp_path: Path) -> None:
    legacy = fake_engine(tmp_path / "legacy", "trtllm-legacy")
    with pytest.raises(ConfigError, match="layout: 'llmapi' needs the LLM API"):
        render_repository(legacy, tmp_path / "r1", RepoSettings(layout="llmapi"))
    current = fake_engine(tmp_path / "current", "trtllm")
    with pytest.raises(ConfigError, match="layout: 'classic' needs a token-level tensorrt_llm"):
        render_repository(current, tmp_path / "r2", RepoSettings(layout="classic"))
