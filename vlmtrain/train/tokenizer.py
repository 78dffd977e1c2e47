"""The run's tokenizer: the model's own (local path or Hub id), or one trained on the dataset's text
for offline runs, with ``<image>`` added and the pad token set by the template's rule."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterator

from vlmtrain.config import ConfigError, TrainConfig


def _corpus(cfg: TrainConfig) -> Iterator[str]:
    """The dataset's text (streamed from Arrow) plus the template's fixed strings."""
    from vlmtrain.data.dataset import open_blend
    from vlmtrain.data.templates import get_template

    fixed = get_template(cfg.template).corpus
    for _ in range(8 if fixed else 0):
        yield fixed
    ds, _, _ = open_blend(cfg.dataset_dir, cfg.image_root)
    for batch in ds.select_columns(["conversations"]).iter(batch_size=1000):
        for conv in batch["conversations"]:
            for turn in conv:
                yield turn["value"].replace(cfg.image_token, " ")


# The tokenizer family of each LLM type (what `tokenizer_train_kind: auto` trains for it).
TOKENIZER_KINDS = {"llama": "sentencepiece", "mistral": "sentencepiece", "phi": "bytelevel", "qwen2": "tiktoken",
                   "stablelm": "tiktoken"}


def tokenizer_kind(cfg: TrainConfig, template) -> str:
    if cfg.tokenizer_train_kind != "auto":
        return cfg.tokenizer_train_kind
    model_type = cfg.text_config.get("model_type") if isinstance(cfg.text_config, dict) else None
    return TOKENIZER_KINDS.get(model_type or "", template.tokenizer_kind)


def _train_tokenizer(cfg: TrainConfig, template):
    """A tokenizer trained on the dataset's text, of the kind the LLM uses (offline runs).

    Every rank of a run gets here, on one machine or on several sharing the output folder: each
    trains into its own temporary folder and renames it into place; the first rename wins and every
    rank loads the winner's files, so all ranks (and a resumed run) use one vocabulary and none reads
    a file another is still writing."""
    import shutil

    workdir = Path(cfg.output_dir) / "tokenizer"
    kind = tokenizer_kind(cfg, template)
    marker = "tokenizer.model" if kind == "sentencepiece" else "tokenizer.json"
    if not (workdir / marker).is_file():
        tmp = workdir.with_name(f".{workdir.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _train_tokenizer_into(tmp, cfg, template, kind)
        try:
            os.rename(tmp, workdir)  # (onto a missing or empty folder; a filled one means another rank won)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    if kind == "sentencepiece":
        from transformers import LlamaTokenizer

        return LlamaTokenizer.from_pretrained(str(workdir), legacy=cfg.tokenizer_legacy)
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(workdir))


def _train_tokenizer_into(workdir: Path, cfg: TrainConfig, template, kind: str) -> None:
    if kind == "sentencepiece":
        from vlmtrain.data.tokenizers import train_llama_sentencepiece

        train_llama_sentencepiece(_corpus(cfg), cfg.tokenizer_train_vocab_size, legacy=cfg.tokenizer_legacy,
                                  workdir=workdir)
        return
    from vlmtrain.data.tokenizers import train_bytelevel_bpe

    extra = ("<|extra_0|>",) if template.name == "qwen" else ()  # Qwen's vocabulary reserves <|extra_N|>
    train_bytelevel_bpe(_corpus(cfg), cfg.tokenizer_train_vocab_size, kind=kind, workdir=workdir,
                        extra_special=extra)


def load_tokenizer(cfg: TrainConfig):
    """The tokenizer, with ``<image>`` added when absent and the pad token set by the template's rule."""
    from transformers import AutoTokenizer

    from vlmtrain.data.templates import get_template

    template = get_template(cfg.template)
    if cfg.tokenizer_train_vocab_size:
        tok = _train_tokenizer(cfg, template)
    else:
        name = cfg.tokenizer_name_or_path or cfg.model_name_or_path
        from vlmtrain.model.hub_reach import require_hub_for

        require_hub_for(name, "the tokenizer", "tokenizer_config.json")
        _require_tokenizer_files(name)
        try:
            tok = AutoTokenizer.from_pretrained(name, padding_side="right", trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as e:
            if "trust_remote_code" in str(e) and not cfg.trust_remote_code:  # e.g. Qwen-1_8B's tiktoken tokenizer
                raise ConfigError(f"the tokenizer {name!r} is remote code (its tokenizer_config.json names its own "
                                  "Python class)", hint="`trust_remote_code` is off by default; set "
                                  "`trust_remote_code: true` to run the publisher's tokenizer code") from None
            said = " ".join(str(e).split())  # (transformers' message goes on over several lines)
            raise ConfigError(f"cannot load the tokenizer {name!r}: {said[:400]}",
                              hint="check the path / Hub id and the network, or set `tokenizer_train_vocab_size` "
                                   "to train one on the dataset's text") from None
        tok = _legacy_as_saved(tok, name, lambda **kw: AutoTokenizer.from_pretrained(
            name, padding_side="right", trust_remote_code=cfg.trust_remote_code, **kw))
    tok.padding_side = "right"
    tok.model_max_length = cfg.model_max_length
    if cfg.image_token not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [cfg.image_token]})
    set_pad_token(tok, template)
    return tok


def _legacy_as_saved(tok, name: str, load):
    """``tok``, loaded again with the ``legacy`` its files say where its config does not say it.

    transformers 5 rebuilds a SentencePiece (Llama-family) tokenizer with ``legacy=False`` when
    tokenizer_config.json has no ``legacy``, whatever its tokenizer.json does; transformers 4.37, which
    the original repos run with ``use_fast=False``, builds it legacy. The two differ after every special
    token (``</s>USER`` gives ``USER`` or ``▁USER``), so a later round's ids would not be the original
    recipe's. The tokenizer.json's own prefix rule decides (legacy where it prefixes every text, as the
    ones saved before transformers 5 do); with none, 4.37's default."""
    import logging

    from vlmtrain.data.slow_tokenizer_files import prefix_scheme

    if not hasattr(tok, "legacy"):
        return tok
    config, tj = _saved_json(name, "tokenizer_config.json"), _saved_json(name, "tokenizer.json")
    if config is None or "legacy" in config:
        return tok
    scheme = prefix_scheme(tj) if tj is not None else None
    want = scheme in (None, "always")
    if bool(tok.legacy) == want:
        return tok
    logging.getLogger("vlmtrain").info(
        "tokenizer %s: its tokenizer_config.json sets no `legacy`; loaded with legacy=%s, as its %s (transformers "
        "5 alone would build it legacy=%s)", name, want,
        "tokenizer.json prefixes every text" if scheme == "always" else "slow tokenizer under transformers 4.37 is",
        tok.legacy)
    return load(legacy=want)


def _saved_json(name: str, filename: str) -> dict | None:
    """A tokenizer file of a local folder, or of a Hub id's cached snapshot (from_pretrained has fetched
    it by now); None where it is not there."""
    from vlmtrain.data.slow_tokenizer_files import read_json

    folder = Path(os.path.expanduser(name))
    if folder.is_dir():
        return read_json(folder / filename)
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, filename)
    return read_json(Path(found)) if isinstance(found, str) else None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json", "vocab.txt",
                   "qwen.tiktoken")


def _require_tokenizer_files(name: str) -> None:
    """A local folder with none of a tokenizer's files: said so (transformers' answer blames a
    missing sentencepiece)."""
    import os
    from pathlib import Path

    folder = Path(os.path.expanduser(name))
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(f"{folder} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)})",
                          hint="set `tokenizer_name_or_path` to the folder or Hub id of the model's tokenizer, or "
                               "`tokenizer_train_vocab_size` to train one on the dataset's text")


def set_pad_token(tok, template) -> None:
    """The reference repos' pad rule. LLaVA (plain, v1): pad = unk. MoE-LLaVA (phi, qwen, stablelm):
    unk is first set to its own token (``<|extra_0|>`` / ``<|reg0|>``, added when the vocabulary lacks
    it), eos to ``<|endoftext|>`` for qwen, then pad = unk. With pad = eos instead, every answer's
    closing ``<|endoftext|>`` would count as padding in MoE-LLaVA's length check. MoE-LLaVA's openchat
    and mistral: pad = the tokenizer's own unk; for openchat the eos is ``<|end_of_turn|>`` (already so in
    openchat-3.5's tokenizer; added as a special token to one that lacks it, e.g. one trained on the fly)."""
    if template.eos_token and tok.eos_token != template.eos_token:
        tok.add_special_tokens({"eos_token": template.eos_token})
    if template.unk_token and tok.unk_token != template.unk_token:
        if template.unk_token in tok.get_vocab():
            tok.unk_token = template.unk_token
        else:
            tok.add_special_tokens({"unk_token": template.unk_token})
    if template.pad == "unk" and tok.unk_token is not None:
        tok.pad_token = tok.unk_token
    elif tok.pad_token is None:
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
