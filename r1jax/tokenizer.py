"""Tokenizers: one small interface over SentencePiece models and Hugging Face tokenizer.json.

The rest of r1jax only needs text <-> ids, the ids that stop generation (``eos_ids``), a pad id
and chat formatting, so that is all ``Tokenizer`` offers. Prompts are encoded with
``encode_prompt``, which adds the special tokens the tokenizer itself adds (for a Hugging Face
tokenizer exactly ``transformers``' ``tokenizer(text)["input_ids"]``), so a model sees the prompt
ids it was trained on. Two backends:

- ``SentencePieceTokenizer``: our own small models for procedural tasks (``train_sentencepiece``).
- ``HFTokenizer``: a Hugging Face checkpoint directory (Qwen2.5, R1-Distill, ...), read with the
  ``tokenizers`` package plus the JSON configs; no ``transformers`` at run time.

``load_tokenizer(path)`` picks the backend from what is on disk.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm
from tokenizers import AddedToken
from tokenizers import Tokenizer as _HFTok

from r1jax import chat_template, files

TEMPLATE_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
# HF names of the special-token attributes that chat templates can read (bos_token, ...).
_SPECIAL_ATTRS = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


class Tokenizer:
    """Common interface. Subclasses set the attributes in ``__init__`` and implement the I/O.

    Attributes:
      vocab_size: number of ids the tokenizer can produce (model embeddings may be larger).
      bos_id: the BOS token's id, or None (Qwen has no BOS). Defining one does not mean it is
        added: ``encode_prompt`` follows the tokenizer's own settings.
      eos_ids: every id that ends a completion, primary first (e.g. Qwen2.5-Instruct's
        ``<|im_end|>`` then ``<|endoftext|>``).
      pad_id: the pad token's id; without one, ``eos_ids[0]`` (padding is always masked).
      special_tokens: special token text -> id; ``decode(skip_special=True)`` drops these.
      chat_template: HF jinja chat template, or None to format chats as ChatML.
    """

    vocab_size: int
    bos_id: int | None
    eos_ids: tuple[int, ...]
    pad_id: int
    special_tokens: dict[str, int]
    chat_template: str | None = None

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Ids of ``text`` with no special tokens added, unless ``add_bos`` prepends ``bos_id``.

        Prefer ``encode_prompt`` for prompts: ``add_bos`` adds a BOS whether or not the
        tokenizer adds one (it is to be removed once callers use ``encode_prompt``).
        """
        raise NotImplementedError

    def encode_prompt(self, text: str) -> list[int]:
        """Ids of a prompt, with the special tokens the tokenizer's own settings add."""
        raise NotImplementedError

    def batch_encode_prompts(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode_prompt(t) for t in texts]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Decodes every id given (it does not stop at EOS; truncate before calling)."""
        raise NotImplementedError

    def token_to_id(self, token: str) -> int:
        """The id of a single token; KeyError naming it when it is not one token."""
        raise NotImplementedError

    def batch_encode(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
        return [self.encode(t, add_bos=add_bos) for t in texts]

    @property
    def eos_id(self) -> int:
        return self.eos_ids[0]

    def _special_token_strings(self) -> dict[str, str]:
        return {}

    def apply_chat_template(
        self, messages: chat_template.Messages, add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Formats a chat as text: the jinja ``chat_template`` if set, else plain ChatML."""
        if self.chat_template is None:
            return chat_template.chatml(messages, add_generation_prompt=add_generation_prompt)
        return chat_template.render_chat_template(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            **{**self._special_token_strings(), **kwargs},
        )


# --- SentencePiece ----------------------------------------------------------------------------


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece ``.model``. Control pieces (<s>, </s>, <pad>) and <unk> are special."""

    def __init__(self, model_path: str | os.PathLike, chat_template: str | None = None):
        self.path = files.path(model_path)  # local or gs://: read as bytes
        if not self.path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {self.path}")
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=self.path.read_bytes())
        except (OSError, RuntimeError) as e:
            raise ValueError(f"cannot load SentencePiece model {self.path}: {e}") from e
        sp = self.sp
        self.vocab_size = sp.get_piece_size()
        self.special_tokens = {
            sp.id_to_piece(i): i
            for i in range(self.vocab_size)
            if sp.is_control(i) or sp.is_unknown(i)
        }
        self.bos_id = sp.bos_id() if sp.bos_id() >= 0 else None
        if sp.eos_id() < 0:
            raise ValueError(f"SentencePiece model {self.path} has no eos piece (eos_id=-1)")
        self.eos_ids = (sp.eos_id(),)
        self.pad_id = sp.pad_id() if sp.pad_id() >= 0 else sp.eos_id()
        self.chat_template = chat_template
        self._special_ids = frozenset(self.special_tokens.values())

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self.sp.encode(text)
        return [self.bos_id, *ids] if add_bos and self.bos_id is not None else ids

    def batch_encode(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
        out = self.sp.encode(list(texts))
        return [[self.bos_id, *ids] for ids in out] if add_bos and self.bos_id is not None else out

    def encode_prompt(self, text: str) -> list[int]:
        """BOS (when the model defines one: our base models are pretrained with it), then text."""
        return self.encode(text, add_bos=True)

    def batch_encode_prompts(self, texts: Sequence[str]) -> list[list[int]]:
        return self.batch_encode(texts, add_bos=True)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        ids = [int(i) for i in ids]
        if skip_special:
            return self.sp.decode([i for i in ids if i not in self._special_ids])
        # SentencePiece renders control pieces as "", so decode the runs between them and
        # write the special pieces out as text.
        parts, run = [], []
        for i in ids:
            if i in self._special_ids:
                parts += [self.sp.decode(run), self.sp.id_to_piece(i)]
                run = []
            else:
                run.append(i)
        return "".join([*parts, self.sp.decode(run)])

    def token_to_id(self, token: str) -> int:
        i = self.sp.piece_to_id(token)
        if self.sp.id_to_piece(i) != token:  # unknown pieces map to <unk>
            raise KeyError(f"{token!r} is not a single piece of {self.path}")
        return i

    def _special_token_strings(self) -> dict[str, str]:
        sp = self.sp
        ids = {"bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id(), "pad": sp.pad_id()}
        return {f"{k}_token": sp.id_to_piece(i) for k, i in ids.items() if i >= 0}


def train_sentencepiece(
    texts: Iterable[str] | str | os.PathLike,
    model_prefix: str | os.PathLike,
    vocab_size: int,
    user_defined_symbols: Sequence[str] = (),
    model_type: str = "bpe",
    seed: int = 0,
    **trainer_kwargs: Any,
) -> SentencePieceTokenizer:
    """Trains a small SentencePiece model; writes ``{model_prefix}.model`` and ``.vocab``.

    ``texts``: strings (one document each; newlines inside are kept and become pieces) or the
    path of a text file (one sentence per line). Choices, each overridable by ``trainer_kwargs``:
    digits split into single tokens (the models do arithmetic); ``TEMPLATE_TAGS`` plus
    ``user_defined_symbols`` are single pieces; byte fallback, so any text encodes; identity
    normalization and no dummy prefix, so ``decode(encode(s)) == s`` and ids concatenate like
    text; ids 0..3 = <unk>, <s>, </s>, <pad>. ``vocab_size`` is an upper bound (a small corpus may
    give fewer pieces). Deterministic: fixed seed and one thread; the model is written through
    ``model_writer``, so the output path is not stored and the same corpus gives the same bytes.
    """
    if isinstance(texts, (str, os.PathLike)):
        if not Path(texts).is_file():
            raise FileNotFoundError(
                f"train_sentencepiece: {str(texts)[:200]!r} is not a file; pass a list of strings "
                "to train on text"
            )
        source: dict[str, Any] = {"input": str(texts)}
    else:
        source = {"sentence_iterator": iter(list(texts))}
    symbols = list(dict.fromkeys([*TEMPLATE_TAGS, *user_defined_symbols]))
    options = dict(
        vocab_size=vocab_size,
        model_type=model_type,
        user_defined_symbols=symbols,
        split_digits=True,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        hard_vocab_limit=False,
        max_sentence_length=1 << 16,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        num_threads=1,
        minloglevel=2,
    )
    options.update(trainer_kwargs)
    spm.set_random_generator_seed(seed)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(**source, model_writer=buf, **options)
    prefix = files.path(model_prefix)  # local or gs://
    prefix.parent.mkdir(parents=True, exist_ok=True)
    model_path = prefix.with_name(prefix.name + ".model")
    model_path.write_bytes(buf.getvalue())
    tok = SentencePieceTokenizer(model_path)
    vocab = [f"{tok.sp.id_to_piece(i)}\t{tok.sp.get_score(i):g}" for i in range(tok.vocab_size)]
    prefix.with_name(prefix.name + ".vocab").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return tok


# --- Hugging Face tokenizer.json --------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e


def _token_text(value: Any) -> str | None:
    # tokenizer_config stores tokens as "text" or as an AddedToken dict {"content": "text", ...}.
    return value.get("content") if isinstance(value, Mapping) else value


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _special_names(cfg: dict, smap: dict) -> dict[str, str | None]:
    """{"bos_token": text, ...} from tokenizer_config, else special_tokens_map; null stays None."""
    keys = [f"{a}_token" for a in _SPECIAL_ATTRS]
    return {k: _token_text(cfg[k] if k in cfg else smap[k]) for k in keys if k in cfg or k in smap}


def _declared_tokens(cfg: dict, smap: dict, names: Mapping[str, str | None]) -> dict[str, bool]:
    """Every token text the configs declare -> whether it is special."""
    out = {}
    for v in (cfg.get("added_tokens_decoder") or {}).values():
        out[_token_text(v)] = bool(v.get("special", True))
    for key in ("additional_special_tokens", "extra_special_tokens"):
        extra = cfg.get(key, smap.get(key)) or []
        out.update(
            (_token_text(v), True) for v in (extra.values() if isinstance(extra, dict) else extra)
        )
    out.update((t, True) for t in names.values() if t)
    return out


class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer directory: tokenizer.json plus its JSON configs.

    Special tokens: bos/eos/pad/unk text comes from tokenizer_config.json, then
    special_tokens_map.json (a key present with null means "none", as in Qwen's bos; only an
    absent bos key falls back to generation_config/config ``bos_token_id``). ``eos_ids`` merges,
    in this order, generation_config.json ``eos_token_id`` (int or list), the tokenizer's eos
    token, config.json ``eos_token_id``, then ``extra_eos_tokens`` (e.g. "<|im_end|>" for a base
    model prompted with ChatML). Without a pad token the pad id falls back to generation_config
    / config ``pad_token_id``, then to ``eos_ids[0]``. Tokens the configs declare but
    tokenizer.json lacks are added, as transformers does. Decoding applies no
    ``clean_up_tokenization_spaces`` (transformers v5 skips it for BPE too). Padding and
    truncation stored in tokenizer.json are switched off, as ``tokenizer(text)`` does.

    Prompt special tokens (``encode_prompt``) come from tokenizer.json's post-processor alone,
    as in transformers 5.x: with a tokenizer.json, ``PreTrainedTokenizerBase._from_pretrained``
    drops ``add_bos_token`` / ``add_eos_token`` from tokenizer_config.json, and a null
    post-processor becomes one that adds nothing (``TokenizersBackend.update_post_processor``).
    So a Llama-3 / R1-Distill ``TemplateProcessing`` adds its BOS whatever the flags say, and a
    Qwen tokenizer (ByteLevel post-processor) or a tokenizer.json without a post-processor adds
    none even with ``add_bos_token: true``. Not followed: the few transformers classes that
    rebuild the post-processor from their own defaults (GPTNeoX, CodeLlama, Splinter).
    """

    def __init__(self, path: str | os.PathLike, extra_eos_tokens: Sequence[str] = ()):
        path = files.path(path)  # local or gs://
        self.dir = path.parent if path.is_file() else path
        tok_file = path if path.is_file() else path / "tokenizer.json"
        if not tok_file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path}")
        try:
            self.tok = _HFTok.from_str(tok_file.read_text(encoding="utf-8"))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise ValueError(f"cannot load {tok_file}: {e}") from e
        self.tok.no_truncation()
        self.tok.no_padding()
        cfg = _read_json(self.dir / "tokenizer_config.json")
        smap = _read_json(self.dir / "special_tokens_map.json")
        gen = _read_json(self.dir / "generation_config.json")
        model_cfg = _read_json(self.dir / "config.json")
        names = _special_names(cfg, smap)
        declared = _declared_tokens(cfg, smap, names)
        missing = {t: sp for t, sp in declared.items() if t and self.tok.token_to_id(t) is None}
        self.tok.add_special_tokens(
            [AddedToken(t, special=True) for t, sp in missing.items() if sp]
        )
        self.tok.add_tokens([AddedToken(t, special=False) for t, sp in missing.items() if not sp])
        self._names = {k: v for k, v in names.items() if v is not None}

        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.special_tokens = {
            t.content: i for i, t in self.tok.get_added_tokens_decoder().items() if t.special
        }
        self.special_tokens.update({t: self.token_to_id(t) for t in self._names.values()})
        if "bos_token" in names:
            self.bos_id = self.token_to_id(names["bos_token"]) if names["bos_token"] else None
        else:
            bos = _as_ids(gen.get("bos_token_id", model_cfg.get("bos_token_id")))
            self.bos_id = bos[0] if bos else None
        eos = _as_ids(gen.get("eos_token_id"))
        eos += [self.token_to_id(self._names["eos_token"])] if "eos_token" in self._names else []
        eos += _as_ids(model_cfg.get("eos_token_id"))
        eos += [self.token_to_id(t) for t in extra_eos_tokens]
        self.eos_ids = tuple(dict.fromkeys(eos))
        if not self.eos_ids:
            raise ValueError(
                f"{self.dir}: no eos token in tokenizer_config.json, special_tokens_map.json, "
                "generation_config.json or config.json"
            )
        if "pad_token" in self._names:
            self.pad_id = self.token_to_id(self._names["pad_token"])
        else:
            pad = _as_ids(gen.get("pad_token_id", model_cfg.get("pad_token_id")))
            self.pad_id = pad[0] if pad else self.eos_ids[0]
        template = cfg.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
            template = {t["name"]: t["template"] for t in template}.get("default")
        jinja_file = self.dir / "chat_template.jinja"  # where newer checkpoints keep it
        if template is None and jinja_file.is_file():
            template = jinja_file.read_text(encoding="utf-8")
        self.chat_template = template

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos and self.bos_id is not None else ids

    def batch_encode(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
        out = [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]
        return [[self.bos_id, *ids] for ids in out] if add_bos and self.bos_id is not None else out

    def encode_prompt(self, text: str) -> list[int]:
        """``transformers``' ``tokenizer(text)["input_ids"]``: the post-processor's specials.

        Everything the post-processor adds is kept, as transformers keeps it: a template that
        appends EOS (``"<s> $A </s>"``) gives a prompt ending in EOS. That is rare for causal LMs
        and usually a sign of a tokenizer meant for scoring whole texts, but r1jax does not
        second-guess it.
        """
        return self.tok.encode(text, add_special_tokens=True).ids

    def batch_encode_prompts(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=True)]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int:
        i = self.tok.token_to_id(token)
        if i is None:
            raise KeyError(f"{token!r} is not a single token of {self.dir}")
        return i

    def _special_token_strings(self) -> dict[str, str]:
        return dict(self._names)


def load_tokenizer(path: str | os.PathLike, **kwargs: Any) -> Tokenizer:
    """Opens a tokenizer.json / SentencePiece .model file, or a directory holding one.

    A directory with tokenizer.json gives ``HFTokenizer`` (kwargs go to it); otherwise a
    ``tokenizer.model`` (or a single ``*.model``) gives ``SentencePieceTokenizer``, with the
    chat template of a tokenizer_config.json beside it, if any.
    """
    p = files.path(path)
    if not p.exists():
        raise FileNotFoundError(f"load_tokenizer: {p} does not exist")
    if p.is_file():
        if p.suffix == ".json":
            return HFTokenizer(p, **kwargs)
        if p.suffix == ".model":
            return SentencePieceTokenizer(p, **kwargs)
        raise ValueError(f"load_tokenizer: {p} is neither a tokenizer.json nor a .model file")
    if (p / "tokenizer.json").is_file():
        return HFTokenizer(p, **kwargs)
    models = (
        [p / "tokenizer.model"] if (p / "tokenizer.model").is_file() else sorted(p.glob("*.model"))
    )
    if len(models) == 1:
        template = _read_json(p / "tokenizer_config.json").get("chat_template")
        return SentencePieceTokenizer(models[0], chat_template=template, **kwargs)
    found = sorted(x.name for x in p.iterdir())[:20]
    why = f"several .model files {[m.name for m in models]}" if models else "no tokenizer"
    raise FileNotFoundError(
        f"load_tokenizer: {why} in {p}: expected tokenizer.json or one SentencePiece .model "
        f"(found {found})"
    )
