"""Tokenizer backends against references: transformers' AutoTokenizer on a Qwen2-style
tokenizer built here, and SentencePiece models trained here on a generated corpus."""

import json
import random

import jax
import numpy as np
import pytest
from hf_utils import make_hf_model, save_hf_tokenizer

from r1jax import tokenizer as tk
from r1jax.data import templates

# Qwen2.5-7B-Instruct tokenizer_config.json "chat_template", verbatim as a JSON string literal.
QWEN25_CHAT_TEMPLATE = json.loads(
    r'''"{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"'''  # noqa: E501
)
# transformers' Qwen2Tokenizer pre-tokenizer regex (models/qwen2/tokenization_qwen2.py).
QWEN2_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHATS = [
    [{"role": "user", "content": "What is 2+3?"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Sum 17 and 25.\nThen stop."},
    ],
]
TEXTS = [
    "Hello world, 12345 + 678 = 13023!",
    "  leading spaces\tand\ttabs\n\nnew lines  ",
    "<|im_start|>user\nWhat is 7*6?<|im_end|>\n<|im_start|>assistant\n<think>\n42</think>",
    "Ünïcödé: café, 中文, emoji 🙂",
    "<|endoftext|><|endoftext|>x",
]


def _qwen_bpe(specials):
    """Byte-level BPE with Qwen2's pipeline (what transformers' Qwen2Tokenizer rebuilds), trained
    here, plus non-special <think> tags (as Qwen3 has them)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, trainers
    from tokenizers import pre_tokenizers as pt

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pt.Sequence(
        [
            pt.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
            pt.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pt.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [c["content"] for chat in CHATS for c in chat] + TEXTS[:2] * 3
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")]
    )
    return tok


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    """A Qwen2-style tokenizer dir: Qwen2's BPE pipeline, ChatML specials, non-special <think>
    tags, Qwen2.5-Instruct configs."""
    tok = _qwen_bpe(SPECIALS)
    d = tmp_path_factory.mktemp("qwen")
    tok.save(str(d / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIALS + ["<think>", "</think>"]}
    decoder = {
        str(i): {
            "content": t,
            "special": t in SPECIALS,
            "normalized": False,
            "lstrip": False,
            "rstrip": False,
            "single_word": False,
        }
        for t, i in ids.items()
    }
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "chat_template": QWEN25_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 131072,
        "split_special_tokens": False,
    }
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    gen = {
        "bos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
    }
    (d / "generation_config.json").write_text(json.dumps(gen))
    return d


@pytest.fixture(scope="module")
def hf_ref(qwen_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(qwen_dir))


def test_hf_encode_decode_match_transformers(qwen_dir, hf_ref):
    tok = tk.load_tokenizer(qwen_dir)
    assert isinstance(tok, tk.HFTokenizer)
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == hf_ref.encode(text, add_special_tokens=False), text
        for skip in (True, False):
            assert tok.decode(ids, skip_special=skip) == hf_ref.decode(
                ids, skip_special_tokens=skip
            ), (text, skip)
    assert tok.decode(tok.encode(TEXTS[0])) == TEXTS[0]
    assert tok.batch_encode(TEXTS) == [hf_ref.encode(t, add_special_tokens=False) for t in TEXTS]
    # Specials are single ids; skip_special drops them but keeps the non-special <think>.
    ids = tok.encode(TEXTS[2])
    assert ids[0] == tok.token_to_id("<|im_start|>") and tok.token_to_id("<think>") in ids
    assert tok.decode(ids) == "user\nWhat is 7*6?\nassistant\n<think>\n42</think>"
    assert tok.vocab_size == len(hf_ref)


def test_hf_special_ids_from_configs(qwen_dir, hf_ref):
    tok = tk.load_tokenizer(qwen_dir)
    im_end, eot = hf_ref.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert tok.eos_ids == (im_end, eot)  # generation_config.json list, in its order
    assert tok.pad_id == hf_ref.pad_token_id == eot
    assert tok.bos_id is None and hf_ref.bos_token_id is None  # null in tokenizer_config wins
    assert tok.encode("hi", add_bos=True) == tok.encode("hi")
    assert tok.special_tokens == {t: hf_ref.convert_tokens_to_ids(t) for t in SPECIALS}
    with pytest.raises(KeyError, match="not a single token"):
        tok.token_to_id("<not-a-token>")


def test_hf_fallbacks_without_generation_config(qwen_dir, tmp_path):
    # Only tokenizer.json + a config with a plain eos and no pad: pad falls back to eos.
    (tmp_path / "tokenizer.json").write_bytes((qwen_dir / "tokenizer.json").read_bytes())
    cfg = {"eos_token": "<|endoftext|>", "additional_special_tokens": ["<|new|>"]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = tk.HFTokenizer(tmp_path, extra_eos_tokens=["<|im_end|>"])
    eot, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
    assert tok.eos_ids == (eot, im_end) and tok.pad_id == eot and tok.bos_id is None
    # A declared special token missing from tokenizer.json is added after the existing ids.
    new = tok.token_to_id("<|new|>")
    assert new == tok.vocab_size - 1 and tok.special_tokens["<|new|>"] == new
    assert tok.encode("a<|new|>")[-1] == new and tok.decode(tok.encode("a<|new|>")) == "a"
    # No chat template: ChatML without a default system turn.
    assert tok.apply_chat_template(CHATS[0]) == templates.chatml(CHATS[0])


def test_chat_template_and_chatml_match_transformers(qwen_dir, hf_ref):
    tok = tk.load_tokenizer(qwen_dir)
    for chat in CHATS:
        for gen in (True, False):
            ref = hf_ref.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
            assert tok.apply_chat_template(chat, add_generation_prompt=gen) == ref
            assert templates.chatml(chat, gen, templates.QWEN25_DEFAULT_SYSTEM) == ref
    ref = hf_ref.apply_chat_template(CHATS[0], tokenize=False, add_generation_prompt=True)
    assert ref == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    )
    # The tools branch exercises tojson.
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"a": "<int>"}}}]
    ref = hf_ref.apply_chat_template(CHATS[0], tools=tools, tokenize=False)
    assert tok.apply_chat_template(CHATS[0], add_generation_prompt=False, tools=tools) == ref
    assert '{"name": "add", "parameters": {"a": "<int>"}}' in ref


# --- Prompt special tokens: encode_prompt against tokenizer(text)["input_ids"] ---------------

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"  # DeepSeek-R1's, fullwidth bars
PROMPT_TEXTS = [*TEXTS, "", f"{BOS}hi{EOS}", " 🙂"]
# name -> (post-processor, tokenizer_config.json edits, (adds BOS, adds EOS)). transformers 5.x
# ignores add_bos_token / add_eos_token when there is a tokenizer.json: the post-processor rules.
PROMPT_CONFIGS = {
    # R1-Distill-Qwen / -Llama: the template adds BOS and the config says so.
    "bos_added": (
        "bos",
        {"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True, "add_eos_token": False},
        (True, False),
    ),
    "bos_added_flag_false": ("bos", {"add_bos_token": False}, (True, False)),
    # A BOS is defined but the ByteLevel post-processor (as Qwen's) adds nothing.
    "bos_not_added": ("byte_level", {"add_bos_token": False}, (False, False)),
    "flag_without_processor": (None, {"add_bos_token": True}, (False, False)),
    "qwen_null_bos": (
        "byte_level",
        {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None},
        (False, False),
    ),
    "bos_eos": ("bos_eos", {}, (True, True)),
}


def _post_processor(kind, bos_id, eos_id):
    from tokenizers import processors as pp

    byte_level = pp.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    if kind == "byte_level":
        return byte_level
    if kind == "bos":  # Llama-3's: ByteLevel, then a template
        template = pp.TemplateProcessing(
            single=f"{BOS}:0 $A:0",
            pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
            special_tokens=[(BOS, bos_id)],
        )
        return pp.Sequence([byte_level, template])
    assert kind == "bos_eos"
    return pp.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B:1 {EOS}:1",
        special_tokens=[(BOS, bos_id), (EOS, eos_id)],
    )


def save_prompt_tokenizer(path, name, backend):
    """Saves `backend` in the configuration PROMPT_CONFIGS[name] (what a checkpoint ships)."""
    from tokenizers import Tokenizer

    kind, config, _ = PROMPT_CONFIGS[name]
    tok = Tokenizer.from_str(backend.to_str())
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = _post_processor(kind, bos_id, eos_id) if kind else None
    tokenizer_json = {"post_processor": None} if kind is None else {}
    if name == "bos_eos":  # stored truncation and padding, which tokenizer(text) switches off
        tokenizer_json["truncation"] = dict(
            direction="Right", max_length=4, strategy="LongestFirst", stride=0
        )
        tokenizer_json["padding"] = dict(
            strategy="BatchLongest",
            direction="Right",
            pad_to_multiple_of=None,
            pad_id=eos_id,
            pad_type_id=0,
            pad_token=EOS,
        )
    save_hf_tokenizer(
        path, tok, config, tokenizer_json, bos_token=BOS, eos_token=EOS, pad_token="<|endoftext|>"
    )


@pytest.fixture(scope="module")
def prompt_backend():
    return _qwen_bpe([*SPECIALS, BOS, EOS])


@pytest.mark.parametrize("name", list(PROMPT_CONFIGS))
def test_encode_prompt_matches_transformers(name, prompt_backend, tmp_path):
    transformers = pytest.importorskip("transformers")
    save_prompt_tokenizer(tmp_path, name, prompt_backend)
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    tok = tk.load_tokenizer(tmp_path)
    adds_bos, adds_eos = PROMPT_CONFIGS[name][2]
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    for text in PROMPT_TEXTS:
        ids = tok.encode_prompt(text)
        assert ids == ref(text)["input_ids"], (name, text)
        assert ids == [bos] * adds_bos + tok.encode(text) + [eos] * adds_eos, (name, text)
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False), (name, text)
    assert tok.batch_encode_prompts(PROMPT_TEXTS) == ref(PROMPT_TEXTS)["input_ids"]
    assert tok.bos_id == (None if name == "qwen_null_bos" else bos) == ref.bos_token_id
    assert len(tok.encode_prompt(TEXTS[0])) > 4  # tokenizer.json's truncation is off


@pytest.fixture(scope="module")
def greedy_dirs(prompt_backend, tmp_path_factory):
    """One tiny random Qwen2 model saved twice, with a tokenizer that adds a BOS (R1-Distill-Qwen's
    configs) and with one that defines a BOS but does not add it."""
    import shutil

    root = tmp_path_factory.mktemp("greedy")
    vocab = prompt_backend.get_vocab_size()
    ids = [prompt_backend.token_to_id(t) for t in (BOS, EOS)]
    model = make_hf_model(
        root / "bos_added", "qwen2", init_std=0.3, seed=3, vocab=vocab, bos=ids[0], eos=ids[1]
    )
    shutil.copytree(root / "bos_added", root / "bos_not_added")
    for name in ("bos_added", "bos_not_added"):
        save_prompt_tokenizer(root / name, name, prompt_backend)
    return model, root


GREEDY_PROMPTS = ["What is 7*6? Think step by step.", CHATS[0][0]["content"] + "<|im_end|>\n"]


@pytest.mark.parametrize("name", ["bos_added", "bos_not_added"])
def test_greedy_tokens_match_transformers_generate(name, greedy_dirs):
    import torch
    import transformers

    from r1jax import sampling
    from r1jax.models.store import load_model

    model, root = greedy_dirs
    path = str(root / name)
    ref_tok = transformers.AutoTokenizer.from_pretrained(path)
    tok = tk.load_tokenizer(path)
    prompts = tok.batch_encode_prompts(GREEDY_PROMPTS)
    assert prompts == ref_tok(GREEDY_PROMPTS)["input_ids"]
    assert [p[0] == tok.bos_id for p in prompts] == [name == "bos_added"] * 2
    # What encode(add_bos=True) gave before encode_prompt: a BOS this tokenizer does not add.
    assert (prompts[0] == tok.encode(GREEDY_PROMPTS[0], add_bos=True)) == (name == "bos_added")
    cfg, params = load_model(path)
    tokens, mask = sampling.pad_prompts(prompts, tok.pad_id)
    s = sampling.SamplingConfig(max_new_tokens=8, temperature=0.0, eos_ids=(), pad_id=tok.pad_id)
    out = sampling.generate(params, tokens, mask, jax.random.key(0), cfg=cfg, s=s, group_size=1)
    for p, ours in zip(prompts, np.asarray(out["tokens"]).tolist(), strict=True):
        with torch.no_grad():
            ref = model.generate(
                torch.tensor([p]),
                attention_mask=torch.ones(1, len(p), dtype=torch.long),
                do_sample=False,
                max_new_tokens=8,
                eos_token_id=None,
                pad_token_id=tok.pad_id,
            )
        assert ours == ref[0, len(p) :].tolist(), (name, p)
    assert len({t for row in np.asarray(out["tokens"]).tolist() for t in row}) > 4


# --- SentencePiece --------------------------------------------------------------------------


def _corpus(n=600, seed=0):
    rng = random.Random(seed)
    words = "the sum of and is what target numbers equation create using equals".split()
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        w = " ".join(rng.choice(words) for _ in range(4))
        out.append(
            f"User: {w} {a} + {b}?\nAssistant: <think> {a}+{b}={a + b} </think>\n"
            f"<answer> {a + b} </answer>"
        )
    return out


@pytest.fixture(scope="module")
def sp_tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("sp")
    return tk.train_sentencepiece(_corpus(), d / "tok", vocab_size=360)


def test_sentencepiece_digits_tags_roundtrip(sp_tok):
    pieces = lambda s: [sp_tok.sp.id_to_piece(i) for i in sp_tok.encode(s)]  # noqa: E731
    assert [p for p in pieces("1234567890") if p != "▁"] == list("1234567890")
    assert pieces("<think>12</think><answer>3</answer>") == [
        "<think>",
        "1",
        "2",
        "</think>",
        "<answer>",
        "3",
        "</answer>",
    ]
    assert sp_tok.token_to_id("<think>") == 4 and sp_tok.token_to_id("</answer>") == 7
    for text in [*_corpus(3, seed=1), "  two  spaces\tand tab\n", "unseen: é 中 🙂 ~"]:
        assert sp_tok.decode(sp_tok.encode(text)) == text
    assert (sp_tok.bos_id, sp_tok.eos_ids, sp_tok.pad_id) == (1, (2,), 3)
    assert sp_tok.special_tokens == {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    # Prompts start with <s>: the base models are pretrained with it.
    assert sp_tok.encode_prompt("9 + 1") == [1, *sp_tok.encode("9 + 1")]
    assert sp_tok.batch_encode_prompts(["9", ""]) == [[1, *sp_tok.encode("9")], [1]]
    ids = sp_tok.encode("9 + 1", add_bos=True) + [2, 3]
    assert ids[0] == 1
    assert sp_tok.decode(ids) == "9 + 1"
    assert sp_tok.decode(ids, skip_special=False) == "<s>9 + 1</s><pad>"
    assert sp_tok.batch_encode(["1+1", "22"]) == [sp_tok.encode("1+1"), sp_tok.encode("22")]
    assert sp_tok.vocab_size == 360


def test_sentencepiece_is_deterministic(sp_tok, tmp_path):
    again = tk.train_sentencepiece(_corpus(), tmp_path / "other" / "tok2", vocab_size=360)
    assert again.path.read_bytes() == sp_tok.path.read_bytes()
    # A file corpus (one sentence per line) works too and loads through load_tokenizer.
    (tmp_path / "corpus.txt").write_text("\n".join(_corpus(200)))
    tok = tk.train_sentencepiece(tmp_path / "corpus.txt", tmp_path / "f" / "tok", vocab_size=300)
    assert isinstance(tk.load_tokenizer(tmp_path / "f"), tk.SentencePieceTokenizer)
    assert tk.load_tokenizer(tok.path).encode("12") == tok.encode("12")


def test_sentencepiece_chat_defaults_to_chatml(sp_tok):
    assert sp_tok.apply_chat_template(CHATS[0]) == templates.chatml(CHATS[0])


def test_load_tokenizer_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        tk.load_tokenizer(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=f"no tokenizer in {tmp_path}.*config.json"):
        tk.load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a file"):
        tk.train_sentencepiece("just some text", tmp_path / "x", vocab_size=300)
