"""Fixtures for textual-inversion embeddings in prompts read as AUTOMATIC1111 reads them (issue
#20): found by the tokens of their name (so case-insensitively, on whole tokens), and never split
between two 75-token chunks. The reference is make_prompt_fixtures.py's chunking (written here from
A1111's documented behaviour, not copied) given the embedding; the encoder is transformers' CLIP of
the tiny SD fixture with its token table grown by the embedding's rows (what A1111's embedding
"fixes" put in place of the placeholder tokens' vectors).

Run by hand with the pinned venv (never in CI), after make_fixtures.py, make_embedding_fixtures.py:
    .venv-fixtures/bin/python tools/make_a1111_embedding_fixtures.py

Writes Tests/Fixtures/prompts/embedding-reference.safetensors: per case, ids and multipliers
[2 texts, chunks, 77] and the context [2, chunks·77, 16] of [negative, prompt]; cases in metadata.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch  # noqa: E402
import make_prompt_fixtures as ref  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

# 74 one-token words, so that a 2-vector embedding after them does not fit the first chunk.
FILLER = " ".join(["cat"] * 74)
CASES = {
    # Capitals: CLIP lower-cases, so A1111 finds the embedding (diffusers' exact match would not).
    "case": ("a LumenStyle photo, (LUMENSTYLE:1.3) on a hill", "blurry lumenstyle"),
    # A longer word that starts with the name: not the embedding in A1111.
    "suffix": ("lumenstyles and lumenstyle", ""),
    # The embedding's 2 vectors would straddle the chunk boundary: they open the next chunk.
    "boundary": (FILLER + " lumenstyle dog", "ugly"),
}


def main():
    base.set_up()
    sd = os.path.join(base.FIXTURES, "tiny-sd")
    tok = CLIPTokenizer.from_pretrained(sd, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(sd, subfolder="text_encoder", dtype=torch.float32).eval()
    vectors = load_file(os.path.join(base.FIXTURES, "embeddings", "lumenstyle.safetensors"))["emb_params"]
    vocab = enc.get_input_embeddings().weight.shape[0]
    enc.resize_token_embeddings(vocab + vectors.shape[0])
    with torch.no_grad():
        enc.get_input_embeddings().weight[vocab:] = vectors
    embeddings = [(tok("lumenstyle", add_special_tokens=False)["input_ids"], list(range(vocab, vocab + vectors.shape[0])))]

    out, cases = {}, {}
    for name, (prompt, negative) in CASES.items():
        per_text = [ref.chunks(tok, t, embeddings) for t in (negative, prompt)]
        n = max(len(c) for c in per_text)
        per_text = [ref.pad_to(c, n, tok) for c in per_text]
        with torch.no_grad():
            rows = [torch.cat([ref.weighted(enc(torch.tensor([ids])).last_hidden_state, m) for ids, m in cs], dim=1)
                    for cs in per_text]
        out[f"{name}.ids"] = torch.tensor([[ids for ids, _ in cs] for cs in per_text], dtype=torch.int32)
        out[f"{name}.multipliers"] = torch.tensor([[m for _, m in cs] for cs in per_text], dtype=torch.float32)
        out[f"{name}.context"] = torch.cat(rows, dim=0)
        cases[name] = {"prompt": prompt, "negative_prompt": negative}
    placeholder = lambda t: (t >= vocab).sum().item()  # noqa: E731
    assert placeholder(out["case.ids"][1]) == 4 and placeholder(out["case.ids"][0]) == 2, out["case.ids"]
    assert placeholder(out["suffix.ids"][1]) == 2, out["suffix.ids"]
    boundary = out["boundary.ids"][1]
    assert boundary.shape[0] == 2 and placeholder(boundary[0]) == 0 and boundary[1][1].item() == vocab, boundary
    base.save_safetensors(out, os.path.join(ref.OUT, "embedding-reference.safetensors"),
                          metadata={"cases": json.dumps(cases)})
    print("embedding-reference.safetensors", os.path.getsize(os.path.join(ref.OUT, "embedding-reference.safetensors")))


if __name__ == "__main__":
    main()
