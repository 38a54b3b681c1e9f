"""Fixtures for prompts as AUTOMATIC1111 reads them (issue #20): attention weights, 75-token chunks,
BREAK, and the weighting applied to the text encoder's output.

Run by hand with the pinned venv (never in CI):
    .venv-fixtures/bin/python tools/make_prompt_fixtures.py

This file is a reference written here from A1111's documented behaviour (its wiki's "Attention/
emphasis" and "Infinite prompt length" sections, and reading modules/prompt_parser.py and
modules/sd_hijack_clip.py to learn what they do); it is not a copy of that code. What it does:

Parsing (A1111's parse_prompt_attention):
  - the prompt is read left to right as pieces: an escaped character (backslash then one of
    ( ) [ ] \\, or a lone backslash), '(' , '[', a weight close ':' number ')' , ')' , ']' , a run of
    any other characters, or a lone ':';
  - an escape adds its character (a lone backslash adds nothing) as text of weight 1;
  - '(' and '[' remember where they opened (the index of the next text piece);
  - ':' number ')' with an open '(' multiplies every piece since that '(' by the number;
  - ')' with an open '(' multiplies by 1.1; ']' with an open '[' by 1/1.1;
  - anything else is text of weight 1, split on BREAK (a whole word, with the white space around
    it): each BREAK is a piece ("BREAK", -1);
  - at the end, brackets left open multiply everything since they opened (1.1 or 1/1.1);
  - no pieces: one ("", 1); neighbouring pieces of equal weight are joined.

Chunking (A1111's tokenize_line): each piece is tokenized alone (no start/end tokens); tokens go
into chunks of 75; a BREAK piece (weight exactly -1) closes the chunk; a full chunk closes (and
when the token about to be added is not a comma and the chunk holds a comma within its last 20
tokens, the tokens after that comma move to the next chunk); a chunk is closed by padding it to
75 with the end token and wrapping it in start and end tokens (multipliers 1 for those). At the
end an unfinished chunk, or an empty prompt, closes too. Encoders whose padding token is not the
end token (OpenCLIP, SD 2.x and SDXL's second) have every token after the first end token
replaced by the padding token.

Weighting (A1111's "Original" emphasis, per text and chunk, per encoder): z = encoder output of
the chunk [77, D]; m = mean(z); z *= multiplier per token; z *= m / mean(z).

Conditioning: chunks' outputs concatenated along the sequence; the shorter of prompt and negative
prompt padded with empty chunks (start token, end tokens); SDXL: each encoder chunked alone, the
penultimate states side by side, the pooled embedding that of the first chunk (unweighted).

Writes Tests/Fixtures/prompts/parse.json (the parser's pieces for many prompts) and
Tests/Fixtures/prompts/{sd,sdxl}-reference.safetensors (token ids, multipliers, contexts).
"""

import json
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

OUT = os.path.join(base.FIXTURES, "prompts")
CHUNK = 75
COMMA_BACKTRACK = 20

# One alternative per kind of piece, in the order they are tried.
PIECE = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:")
BREAK = re.compile(r"\s*\bBREAK\b\s*")


def parse(text):
    pieces = []  # [text, weight]
    opened_round, opened_square = [], []

    def scale(start, by):
        for p in range(start, len(pieces)):
            pieces[p][1] *= by

    for m in PIECE.finditer(text):
        s, number = m.group(0), m.group(1)
        if s.startswith("\\"):
            pieces.append([s[1:], 1.0])
        elif s == "(":
            opened_round.append(len(pieces))
        elif s == "[":
            opened_square.append(len(pieces))
        elif number is not None and opened_round:
            scale(opened_round.pop(), float(number))
        elif s == ")" and opened_round:
            scale(opened_round.pop(), 1.1)
        elif s == "]" and opened_square:
            scale(opened_square.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(BREAK.split(s)):
                if i > 0:
                    pieces.append(["BREAK", -1])
                pieces.append([part, 1.0])
    for start in opened_round:
        scale(start, 1.1)
    for start in opened_square:
        scale(start, 1 / 1.1)
    if not pieces:
        pieces = [["", 1.0]]
    i = 0
    while i + 1 < len(pieces):
        if pieces[i][1] == pieces[i + 1][1]:
            pieces[i][0] += pieces[i + 1][0]
            del pieces[i + 1]
        else:
            i += 1
    return pieces


def chunks(tokenizer, text, embeddings=()):
    """[(ids[77], multipliers[77])] of `text`.

    embeddings: [(name_ids, vector_ids)], textual-inversion embeddings found as A1111 finds them:
    at each position of a piece's tokens, the embedding whose name's tokens (the tokenizer's, so
    lower-cased, whole BPE tokens) start there, longest name first; its vector ids go in place of
    the name, and where they would not fit in the chunk, the chunk closes first."""
    by_length = sorted([e for e in embeddings if e[0]], key=lambda e: -len(e[0]))
    pieces = parse(text)
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    comma = tokenizer.get_vocab().get(",</w>")
    done = []
    ids, mults, last_comma = [], [], -1

    def close():
        nonlocal ids, mults, last_comma
        pad = CHUNK - len(ids)
        done.append(([start] + ids + [end] * pad + [end], [1.0] + mults + [1.0] * pad + [1.0]))
        ids, mults, last_comma = [], [], -1

    for s, weight in pieces:
        if s == "BREAK" and weight == -1:
            close()
            continue
        tokens = tokenizer(s, add_special_tokens=False, truncation=False)["input_ids"]
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma:
                last_comma = len(ids)
            elif len(ids) == CHUNK and last_comma != -1 and len(ids) - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                moved_ids, moved_mults = ids[cut:], mults[cut:]
                ids, mults = ids[:cut], mults[:cut]
                close()
                ids, mults = moved_ids, moved_mults
            if len(ids) == CHUNK:
                close()
            found = next((e for e in by_length if tokens[position:position + len(e[0])] == e[0]), None)
            if found is None:
                ids.append(token)
                mults.append(weight)
                position += 1
                continue
            name_ids, vector_ids = found
            if len(ids) + len(vector_ids) > CHUNK:
                close()
            ids += list(vector_ids)
            mults += [weight] * len(vector_ids)
            position += len(name_ids)
    if ids or not done:
        close()
    pad_id = tokenizer.pad_token_id
    if pad_id != end:
        for chunk_ids, _ in done:
            first = chunk_ids.index(end)
            chunk_ids[first + 1:] = [pad_id] * (len(chunk_ids) - first - 1)
    return done


def empty_chunk(tokenizer):
    return chunks(tokenizer, "")[0]


def pad_to(cs, n, tokenizer):
    return cs + [empty_chunk(tokenizer)] * (n - len(cs))


def weighted(z, mults):
    """A1111's original emphasis on one chunk's output z [1, 77, D]."""
    m = torch.tensor(mults, dtype=torch.float32)
    mean = z.mean()
    z = z * m.reshape(1, -1, 1)
    return z * (mean / z.mean())


def encode_sd(encoder, tokenizer, texts):
    """[T, chunks·77, D] for texts (padded to one chunk count), SD 1.x (last_hidden_state)."""
    per_text = [chunks(tokenizer, t) for t in texts]
    n = max(len(c) for c in per_text)
    per_text = [pad_to(c, n, tokenizer) for c in per_text]
    rows = []
    with torch.no_grad():
        for cs in per_text:
            zs = [weighted(encoder(torch.tensor([ids])).last_hidden_state, mults) for ids, mults in cs]
            rows.append(torch.cat(zs, dim=1))
    return per_text, torch.cat(rows, dim=0)


def encode_sdxl(enc1, tok1, enc2, tok2, texts):
    c1 = [chunks(tok1, t) for t in texts]
    c2 = [chunks(tok2, t) for t in texts]
    n = max(len(c) for c in c1 + c2)
    c1 = [pad_to(c, n, tok1) for c in c1]
    c2 = [pad_to(c, n, tok2) for c in c2]
    rows, pooled = [], []
    with torch.no_grad():
        for a, b in zip(c1, c2):
            zs = []
            for k, ((ids1, m1), (ids2, m2)) in enumerate(zip(a, b)):
                h1 = enc1(torch.tensor([ids1]), output_hidden_states=True).hidden_states[-2]
                out2 = enc2(torch.tensor([ids2]), output_hidden_states=True)
                h2 = out2.hidden_states[-2]
                zs.append(torch.cat([weighted(h1, m1), weighted(h2, m2)], dim=-1))
                if k == 0:
                    pooled.append(out2.text_embeds)
            rows.append(torch.cat(zs, dim=1))
    return c1, c2, torch.cat(rows, dim=0), torch.cat(pooled, dim=0)


LONG = ("a majestic lighthouse on a rocky cliff at dawn, dramatic clouds, golden light, crashing waves, "
        "seagulls in the sky, (highly detailed:1.2), oil painting, by a famous marine painter, warm colours, "
        "long exposure, mist over the water, a small boat in the distance, rocks covered in moss, wet sand, "
        "footprints leading to the door, a red door, white walls with peeling paint, a lantern glowing, "
        "stars fading, the moon setting behind the hills, [blurry], a flock of birds, reflections")

PARSE_CASES = [
    "", "a cat", "(a cat)", "[a cat]", "(a cat:1.3)", "((a)) cat", "[[a]] cat", "(a [b] (c:0.5) d)",
    "(a cat:1.3", "a cat)", "a ] cat [", "\\(literal\\) \\[too\\]", "back\\\\slash", "lone \\ backslash",
    "colon: here", "(weight: 1.5 )", "(bad:1.5x)", "(neg:-0.5)", "a BREAK b", "aBREAK b", "a  BREAK  BREAK b",
    "(in BREAK paren)", "BREAK", "(a:1.2) (b:1.2)", "((a:2):3)", "[(a)]", "mixed (a) and [b], ((c)), [[d]]",
    "(a:.5)", "(a:+2)", "(unclosed [square", LONG,
]

SD_CASES = {
    "single": ("a photo of a cat", "blurry"),
    "weights": ("a (red:1.3) ball, [blue] sky, ((nested)) (deep [mix] (here:0.7)) \\(escaped\\)", "(ugly:1.4), [bad]"),
    "long": (LONG + ", " + LONG, "blurry, low quality"),
    "break": ("a red ball BREAK a blue sky BREAK (green grass:1.2)", ""),
    "negative_longer": ("a cat", LONG),
    "empty": ("", ""),
}

SDXL_CASES = {
    "weights": ("a (red:1.3) ball, [blue] sky, ((nested))", "(ugly:1.4)"),
    "long": (LONG, "blurry BREAK (dark:1.2)"),
}


def main():
    base.set_up()
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "parse.json"), "w") as f:
        json.dump([{"prompt": p, "pieces": parse(p)} for p in PARSE_CASES], f, indent=1, ensure_ascii=False)
        f.write("\n")

    sd = os.path.join(base.FIXTURES, "tiny-sd")
    tok = CLIPTokenizer.from_pretrained(sd, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(sd, subfolder="text_encoder", dtype=torch.float32).eval()
    ref, cases = {}, {}
    for name, (prompt, negative) in SD_CASES.items():
        per_text, context = encode_sd(enc, tok, [negative, prompt])
        ref[f"{name}.ids"] = torch.tensor([[ids for ids, _ in cs] for cs in per_text], dtype=torch.int32)
        ref[f"{name}.multipliers"] = torch.tensor([[m for _, m in cs] for cs in per_text], dtype=torch.float32)
        ref[f"{name}.context"] = context
        cases[name] = {"prompt": prompt, "negative_prompt": negative}
    assert ref["long.ids"].shape[1] >= 3 and ref["negative_longer.ids"].shape[1] >= 2 and ref["break.ids"].shape[1] == 3
    # The long prompt's context through StableDiffusionPipeline (prompt_embeds of any length): the
    # UNet attends to all its chunks. 3 steps of the folder's scheduler, seed 7, latents out.
    pipe = StableDiffusionPipeline.from_pretrained(sd, dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    ctx = ref["long.context"]
    ref["long.latents"] = pipe(prompt_embeds=ctx[1:2], negative_prompt_embeds=ctx[0:1], num_inference_steps=3,
                               guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(7),
                               output_type="latent").images
    base.save_safetensors(ref, os.path.join(OUT, "sd-reference.safetensors"), metadata={"cases": json.dumps(cases)})

    xl = os.path.join(base.FIXTURES, "tiny-sdxl")
    tok1 = CLIPTokenizer.from_pretrained(xl, subfolder="tokenizer")
    tok2 = CLIPTokenizer.from_pretrained(xl, subfolder="tokenizer_2")
    enc1 = CLIPTextModel.from_pretrained(xl, subfolder="text_encoder", dtype=torch.float32).eval()
    enc2 = CLIPTextModelWithProjection.from_pretrained(xl, subfolder="text_encoder_2", dtype=torch.float32).eval()
    assert tok2.pad_token_id != tok2.eos_token_id
    ref, cases = {}, {}
    for name, (prompt, negative) in SDXL_CASES.items():
        c1, c2, context, pooled = encode_sdxl(enc1, tok1, enc2, tok2, [negative, prompt])
        ref[f"{name}.ids"] = torch.tensor([[ids for ids, _ in cs] for cs in c1], dtype=torch.int32)
        ref[f"{name}.ids2"] = torch.tensor([[ids for ids, _ in cs] for cs in c2], dtype=torch.int32)
        ref[f"{name}.context"] = context
        ref[f"{name}.pooled"] = pooled
        cases[name] = {"prompt": prompt, "negative_prompt": negative}
    assert ref["long.ids"].shape[1] == 2
    base.save_safetensors(ref, os.path.join(OUT, "sdxl-reference.safetensors"), metadata={"cases": json.dumps(cases)})
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))


if __name__ == "__main__":
    main()
