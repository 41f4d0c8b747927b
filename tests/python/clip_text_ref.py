"""Reference side of the CLIP text parity tests: transformers builds, saves and runs the models.

tokenizer DIR PAD           only the tokenizer folder, padding with PAD
make DIR ARCH SEED [proj] [f16]  random-weight CLIPTextModel(WithProjection) of a real architecture, saved by
                            transformers with a tokenizer built here from the raw CLIP BPE file
tokenize DIR CORPUS.json    print input_ids (JSON) of transformers.CLIPTokenizer for each string
decode DIR IDS.json         print CLIPTokenizer.decode(ids, skip_special_tokens=True,
                            clean_up_tokenization_spaces=False) (JSON) for each id list
encode DIR PROMPTS OUT [TOKDIR]  encode prompts (one per line) and save the outputs as safetensors
"""
import gzip, json, os, sys

import torch
import transformers
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ARCHS = {
    # openai/clip-vit-large-patch14 text tower (SD 1.x)
    "sd1": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                hidden_act="quick_gelu", projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1),
    # OpenCLIP ViT-H/14 text tower as SD 2.x ships it (23 layers)
    "sd2": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                hidden_act="gelu", projection_dim=1024, bos_token_id=0, eos_token_id=2, pad_token_id=1),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 hidden_act="quick_gelu", projection_dim=64, bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
}


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def clip_vocab():
    """openai/CLIP SimpleTokenizer's derivation, written independently of the Rust one."""
    lines = gzip.open(os.path.join(ROOT, "assets/bpe_simple_vocab_16e6.txt.gz")).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = bytes_to_unicode()
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, merges


def write_tokenizer(d, pad):
    os.makedirs(d, exist_ok=True)
    vocab, merges = clip_vocab()
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = transformers.CLIPTokenizer(vocab=os.path.join(d, "vocab.json"), merges=os.path.join(d, "merges.txt"), pad_token=pad)
    tok.save_pretrained(d)


def make(d, arch, seed, proj, f16):
    write_tokenizer(d, "!" if arch == "sd2" else "<|endoftext|>")
    torch.manual_seed(seed)
    cfg = transformers.CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **ARCHS[arch])
    cls = transformers.CLIPTextModelWithProjection if proj else transformers.CLIPTextModel
    model = cls(cfg).eval()
    # transformers initialises LayerNorms to 1/0; perturb them so the test sees their weights.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "final_layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    if f16:
        model = model.half()
    model.save_pretrained(d)


def tokenize(d, corpus):
    tok = transformers.CLIPTokenizer.from_pretrained(d)
    texts = json.load(open(corpus))
    ids = tok(texts, padding="max_length", max_length=77, truncation=True).input_ids
    print(json.dumps(ids))


def encode(d, prompts, out, tok_dir=None):
    tok = transformers.CLIPTokenizer.from_pretrained(tok_dir or d)
    cfg = transformers.AutoConfig.from_pretrained(d)
    cls = getattr(transformers, cfg.architectures[0])
    model = cls.from_pretrained(d, dtype=torch.float32).eval()
    texts = [l.rstrip("\n") for l in open(prompts, encoding="utf-8") if l.strip()]
    ids = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        o = model(ids, output_hidden_states=True)
    t = {"input_ids": ids.contiguous(), "last_hidden_state": o.last_hidden_state.contiguous(),
         "penultimate_hidden_state": o.hidden_states[-2].contiguous()}
    if hasattr(o, "text_embeds") and o.text_embeds is not None:
        t["text_embeds"] = o.text_embeds.contiguous()
    else:
        t["pooled_output"] = o.pooler_output.contiguous()
    save_file(t, out)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], sys.argv[3], int(sys.argv[4]), "proj" in sys.argv[5:], "f16" in sys.argv[5:])
    elif cmd == "tokenizer":
        write_tokenizer(sys.argv[2], sys.argv[3])
    elif cmd == "tokenize":
        tokenize(sys.argv[2], sys.argv[3])
    elif cmd == "decode":
        tok = transformers.CLIPTokenizer.from_pretrained(sys.argv[2])
        rows = json.load(open(sys.argv[3]))
        print(json.dumps([tok.decode(r, skip_special_tokens=True, clean_up_tokenization_spaces=False) for r in rows]))
    elif cmd == "encode":
        encode(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        sys.exit(f"unknown command {cmd}")
