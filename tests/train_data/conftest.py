"""Fixtures for the data tests: tokenizers trained on the fly (cached per session), a tiny CLIP image processor."""
from __future__ import annotations

import pytest

from traindata_helpers import corpus

_TOKENIZERS: dict = {}


@pytest.fixture(scope="session")
def make_tokenizer(tmp_path_factory):
    """make_tokenizer(legacy, llama_like=True): llama_like gives the vocabulary LLaVA's -1 correction
    was written for (``USER`` is a piece, ``▁USER`` is not; see ``corpus``)."""
    from vlmtrain.data.tokenizers import train_llama_sentencepiece

    def make(legacy: bool, llama_like: bool = True):
        key = (legacy, llama_like)
        if key not in _TOKENIZERS:
            wd = tmp_path_factory.mktemp(f"tok-{int(legacy)}-{int(llama_like)}")
            tok = train_llama_sentencepiece(corpus(llama_like=llama_like), 700, legacy=legacy, workdir=wd)
            tok.pad_token = tok.unk_token  # as LLaVA's train() does for v1
            _TOKENIZERS[key] = tok
        return _TOKENIZERS[key]

    return make


@pytest.fixture(scope="session")
def processor():
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})


