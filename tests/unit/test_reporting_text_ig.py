"""Integrated Gradients over prompt tokens, on a tiny random Llama (no download)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("captum")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from reporting.evidence import Evidence, ZoneEvidence  # noqa: E402
from reporting.prompt import build_messages, player_texts  # noqa: E402
from reporting.templates import render_template  # noqa: E402
from reporting.text_ig import IntegratedGradientsExplainer  # noqa: E402

EVIDENCE = Evidence("finding", 0.9, 0.5, (ZoneEvidence("right_mid", 0.42),))


def _tiny() -> tuple[object, object]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    vocab.update({"<|im_start|>": len(vocab), "<|im_end|>": len(vocab) + 1})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, additional_special_tokens=["<|im_start|>", "<|im_end|>"]
    )
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    )
    return transformers.LlamaForCausalLM(config).eval(), fast


def test_ig_per_sentence_is_complete_and_mapped_to_players() -> None:
    model, tok = _tiny()
    zones = EVIDENCE.supported_zones(0.25)
    messages = build_messages(EVIDENCE, zones, "en")
    sections = render_template(EVIDENCE, zones, "en")
    explainer = IntegratedGradientsExplainer(model, tok, n_steps=32)
    result = explainer.explain(messages, sections, player_texts(EVIDENCE, zones, "en"))
    assert len(result.sentences) >= 4
    first = result.sentences[0]
    assert first.section == "findings" and result.continuation[first.start : first.end]
    total = sum(t.value for t in first.tokens)
    # completeness: attributions add up to f(prompt) - f(baseline), up to the IG error
    assert abs(first.convergence_delta) < 0.05 * max(1.0, abs(total))
    zone_tokens = [t for t in first.tokens if t.player == "zone:right_mid"]
    assert "".join(t.text for t in zone_tokens) == "right mid zone (intensity 0.42)"
    assert set(first.player_values) == {"zone:right_mid", "decision", "confidence"}
    assert all(result.prompt[t.start : t.end] == t.text for t in first.tokens)
