import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kit.data.ingest import load_conversations, strip_surrogates
from kit.ops.packing import PackConfig, Packer, _water_fill
from conftest import KAGGLE_TRAIN, PANDALM

# a turn: short unicode text (lone surrogates included, stripped as ingest does), or the
# same repeated to ~100k characters
short_text = st.text(st.characters(), max_size=60)
turn = st.builds(lambda s, k: strip_surrogates(s * k), short_text, st.sampled_from([1, 1, 1, 3, 100_000 // 60]))
conversation = st.integers(1, 20).flatmap(
    lambda n: st.tuples(*(st.lists(turn, min_size=n, max_size=n) for _ in range(3))))

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                    HealthCheck.function_scoped_fixture])


@given(conv=conversation, max_length=st.sampled_from([64, 128, 256, 512, 1024]),
       keep=st.sampled_from(["last", "first"]), cut=st.sampled_from(["end", "middle"]))
@PROPERTY_SETTINGS
def test_packer_properties(tokenizer, conv, max_length, keep, cut):
    packer = Packer(tokenizer, PackConfig(max_length=max_length, keep=keep, cut=cut))
    prompt, a, b = conv
    packed = packer.pack(prompt, a, b)
    # 1. the bound, always
    assert len(packed.input_ids) <= max_length
    # 2. deterministic
    assert packer.pack(prompt, a, b).input_ids == packed.input_ids
    # 3. contiguous kept turns from the chosen end
    kept, n = packed.kept_turns, len(prompt)
    assert kept and kept == list(range(kept[0], kept[-1] + 1))
    assert (kept[-1] == n - 1) if keep == "last" else (kept[0] == 0)
    # 4. every kept non-empty response shows content; with room, at least min_response_tokens
    sizes = [[len(x) for x in packer.encode_many([prompt[t], a[t], b[t]])] for t in kept]
    roomy = max_length >= packer.min_length + 200
    for (kp, ka, kb), (sp, sa, sb) in zip(packed.kept_tokens, sizes):
        for kept_n, size in ((ka, sa), (kb, sb)):
            assert kept_n <= size
            if size:
                assert kept_n >= 1
                if roomy:
                    assert kept_n >= min(size, packer.config.min_response_tokens)
    # 5. retention diagnostics agree with the per-turn allocation
    r = packed.retention
    assert r["turns_kept"] == len(kept) and r["turns_total"] == n
    assert r["response_a_kept"] == sum(k[1] for k in packed.kept_tokens)
    assert r["n_tokens"] == len(packed.input_ids)


side_conversation = st.integers(1, 12).flatmap(
    lambda n: st.tuples(*(st.lists(turn, min_size=n, max_size=n) for _ in range(2))))


@given(conv=side_conversation, max_length=st.sampled_from([64, 128, 256, 512]), keep=st.sampled_from(["last", "first"]))
@PROPERTY_SETTINGS
def test_side_packer_properties(tokenizer, conv, max_length, keep):
    """One side (prompt + one response), the pairwise head's packing: the same guarantees."""
    packer = Packer(tokenizer, PackConfig(max_length=max_length, keep=keep), side=True)
    prompt, response = conv
    packed = packer.pack(prompt, response)
    assert len(packed.input_ids) <= max_length
    assert packer.pack(prompt, response).input_ids == packed.input_ids
    kept, n = packed.kept_turns, len(prompt)
    assert kept and kept == list(range(kept[0], kept[-1] + 1))
    assert (kept[-1] == n - 1) if keep == "last" else (kept[0] == 0)
    sizes = [[len(x) for x in packer.encode_many([prompt[t], response[t]])] for t in kept]
    roomy = max_length >= packer.min_length + 200
    for (kp, kr), (sp, sr) in zip(packed.kept_tokens, sizes):
        assert kr <= sr and kp <= sp
        if sr:
            assert kr >= 1
            if roomy:
                assert kr >= min(sr, packer.config.min_response_tokens)
    r = packed.retention
    assert set(r) >= {"prompt_kept", "response_kept", "response_total"} and r["n_tokens"] == len(packed.input_ids)


def test_side_packing_gives_the_prompt_at_most_a_third_when_both_are_long(minilm_tokenizer):
    packer = Packer(minilm_tokenizer, PackConfig(max_length=256), side=True)
    packed = packer.pack(["word " * 500], ["answer " * 500])
    r = packed.retention
    assert r["prompt_kept"] <= (r["prompt_kept"] + r["response_kept"]) / 3 + 1
    assert r["response_kept"] >= 2 * r["prompt_kept"] - 2
    with pytest.raises(ValueError, match="need 2 fields"):
        packer.pack(["p"], ["a"], ["b"])


def test_nothing_is_cut_when_it_fits(smollm2_tokenizer):
    packer = Packer(smollm2_tokenizer, PackConfig(max_length=512))
    packed = packer.pack(["What is 2+2?"], ["4"], ["It is four."])
    r = packed.retention
    assert r["prompt_kept"] == r["prompt_total"] and r["response_b_kept"] == r["response_b_total"]
    text = smollm2_tokenizer.decode(packed.input_ids)
    assert "What is 2+2?" in text and "It is four." in text and "(...)" not in text


def test_cut_fields_show_the_marker_and_both_responses_survive(minilm_tokenizer):
    long_a, long_b = "alpha " * 2000, "beta " * 2000
    packer = Packer(minilm_tokenizer, PackConfig(max_length=128))
    packed = packer.pack(["compare these"], [long_a], [long_b])
    text = minilm_tokenizer.decode(packed.input_ids)
    assert text.count("(...") == 2 and "alpha" in text and "beta" in text
    assert packed.retention["prompt_kept"] == packed.retention["prompt_total"]  # short prompt whole
    _, ka, kb = packed.kept_tokens[0]
    assert abs(ka - kb) <= 1  # equal shares for A and B


def test_keep_last_drops_early_turns_and_says_so(smollm2_tokenizer):
    turns = [f"question {i} " + "word " * 300 for i in range(6)]
    packer = Packer(smollm2_tokenizer, PackConfig(max_length=256))
    packed = packer.pack(turns, turns, turns)
    text = smollm2_tokenizer.decode(packed.input_ids)
    assert packed.kept_turns[-1] == 5 and len(packed.kept_turns) < 6
    assert "earlier turns omitted" in text and "question 5" in text and "question 0" not in text
    first = Packer(smollm2_tokenizer, PackConfig(max_length=256, keep="first")).pack(turns, turns, turns)
    assert first.kept_turns[0] == 0 and "question 0" in smollm2_tokenizer.decode(first.input_ids)


def test_special_tokens_frame(minilm_tokenizer, smollm2_tokenizer):
    bert = Packer(minilm_tokenizer, PackConfig(max_length=64)).pack(["p"], ["a"], ["b"]).input_ids
    assert bert[0] == minilm_tokenizer.cls_token_id and bert[-1] == minilm_tokenizer.sep_token_id
    smol = Packer(smollm2_tokenizer, PackConfig(max_length=64)).pack(["p"], ["a"], ["b"]).input_ids
    assert smollm2_tokenizer.pad_token_id not in smol  # last-token pooling reads content


def test_too_small_budget_and_bad_config_are_named(minilm_tokenizer):
    with pytest.raises(ValueError, match="too small"):
        Packer(minilm_tokenizer, PackConfig(max_length=20))
    with pytest.raises(ValueError, match="keep must be"):
        PackConfig(keep="middle")
    with pytest.raises(ValueError, match="shares"):
        PackConfig(shares=(0.5, 0.5, 0))


@given(st.lists(st.integers(0, 500), min_size=1, max_size=30), st.integers(0, 5000), st.data())
@settings(max_examples=300, deadline=None)
def test_water_fill_is_exact_capped_and_nearly_monotone(sizes, budget, data):
    weights = data.draw(st.lists(st.sampled_from([0.2, 0.4, 1.0]), min_size=len(sizes), max_size=len(sizes)))
    alloc = _water_fill(sizes, weights, budget)
    assert all(0 <= x <= s for x, s in zip(alloc, sizes))
    assert sum(alloc) == min(budget, sum(sizes))
    more = _water_fill(sizes, weights, budget + 7)
    assert all(m >= x - 1 for m, x in zip(more, alloc))  # monotone up to one rounding token


@pytest.mark.parametrize("path", [KAGGLE_TRAIN, PANDALM], ids=["kaggle", "pandalm"])
@pytest.mark.parametrize("max_length", [256, 512])
def test_real_rows_keep_both_responses(smollm2_tokenizer, path, max_length):
    frame = load_conversations(path).frame
    packer = Packer(smollm2_tokenizer, PackConfig(max_length=max_length))
    for p, a, b in zip(frame["prompt"], frame["response_a"], frame["response_b"]):
        packed = packer.pack(p, a, b)
        assert len(packed.input_ids) <= max_length
        sa = sum(len(x) for x in packer.encode_many(a))
        sb = sum(len(x) for x in packer.encode_many(b))
        assert packed.retention["response_a_kept"] >= min(32, sa)
        assert packed.retention["response_b_kept"] >= min(32, sb)


# -- chat template packing (kit.ops.chat) ------------------------------------------------------
def _rendered(tokenizer, prompt, response):
    """The tokenizer's own rendering of alternating user/assistant turns: the golden reference."""
    messages = [{"role": role, "content": text} for p, r in zip(prompt, response)
                for role, text in (("user", p), ("assistant", r))]
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.mark.parametrize("prompt, response", [(["What is 2+2?"], ["4"]),
                                              (["What is 2+2?", "And 3+3?"], ["4", "It is six."]),
                                              (["Tell me a joke", ""], ["No.", "Really?"])])
def test_chat_side_packing_is_what_the_template_renders(smollm2_tokenizer, prompt, response):
    packer = Packer(smollm2_tokenizer, PackConfig(max_length=512, chat_template=True), side=True)
    assert packer.pack(prompt, response).input_ids == _rendered(smollm2_tokenizer, prompt, response)
    plain = Packer(smollm2_tokenizer, PackConfig(max_length=512), side=True).pack(prompt, response).input_ids
    assert plain != _rendered(smollm2_tokenizer, prompt, response)  # the option changes what is packed


@given(conv=side_conversation, max_length=st.sampled_from([96, 128, 256]), keep=st.sampled_from(["last", "first"]))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
def test_chat_side_packing_keeps_the_budget_and_the_turn_frame(smollm2_tokenizer, conv, max_length, keep):
    packer = Packer(smollm2_tokenizer, PackConfig(max_length=max_length, keep=keep, chat_template=True), side=True)
    packed = packer.pack(*conv)
    ids = packed.input_ids
    assert len(ids) <= max_length
    text = smollm2_tokenizer.decode(ids)
    # every kept turn is one user turn and one assistant turn, and the sequence ends closing the last
    assert text.count("<|im_start|>user") == len(packed.kept_turns) == text.count("<|im_start|>assistant")
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_end|>\n")


def test_chat_joint_packing_is_one_user_turn_with_the_assistant_turn_opened(smollm2_tokenizer):
    packer = Packer(smollm2_tokenizer, PackConfig(max_length=96, chat_template=True))
    packed = packer.pack(["compare " * 200], ["alpha " * 300], ["beta " * 300])
    text = smollm2_tokenizer.decode(packed.input_ids)
    assert len(packed.input_ids) <= 96
    assert text.count("<|im_start|>user") == 1 and text.endswith("<|im_start|>assistant\n")
    assert "alpha" in text and "beta" in text and "Which response do people prefer" in text


def test_chat_template_packing_without_a_usable_template_is_a_one_line_error(minilm_tokenizer, smollm2_tokenizer):
    import copy

    from kit.core.errors import PresetError

    for side in (True, False):
        with pytest.raises(PresetError, match="no chat template.*pack plain text"):
            Packer(minilm_tokenizer, PackConfig(max_length=128, chat_template=True), side=side)
    numbered = copy.deepcopy(smollm2_tokenizer)  # a template that frames each turn differently
    numbered.chat_template = "{% for m in messages %}[{{ loop.index }}]{{ m['content'] }}{% endfor %}"
    with pytest.raises(PresetError, match="second turn unlike the first"):
        Packer(numbered, PackConfig(max_length=128, chat_template=True), side=True)
