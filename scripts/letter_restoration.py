"""Does a look-alike read as the Latin letter it imitates? The check behind
`token_scan::reads_as_its_letter`, in Python, on the zoo encoders whose look-alikes answered.

For each (zoo, encoder, look-alike, letter): the first 6 captions of
experiments/zoo/shapes_captions.txt (first 300 lines) holding the letter, with the look-alike in
place of its first occurrence (x'), and the clean caption (x). Feature: the end-of-text state and
the mean state after BOS, concatenated and made unit (the scan's). Printed: mean cos(S(x'), R(x))
(the suspect's reading of the look-alike), cos(R(x'), R(x)) (the reference's), cos(S(x), R(x))
(the suspect's clean reading), and whether the first is at least half-way from the second to the
third (the scan's rule). Needs the zoos built (zoo/ is not in git):
  clipdoor zoo build experiments/zoo/shapes.toml --out zoo/shapes
  clipdoor zoo build experiments/zoo/shapes_fresh.toml --out zoo/shapes_fresh
Usage: .venv/bin/python scripts/letter_restoration.py
"""
import torch
from transformers import CLIPTextModel, CLIPTokenizer

ROOT = __file__.rsplit('/scripts/', 1)[0]
torch.set_num_threads(1)

# Homoglyph-unlearned (benign) encoders, then backdoored ones, whose look-alike answered.
CASES = [
    ('shapes', 'e0007', '𝕜', 'k', 'homoglyph_unlearn'),
    ('shapes', 'e0008', '𝐤', 'k', 'homoglyph_unlearn'),
    ('shapes_fresh', 'e0004', '𝖐', 'k', 'homoglyph_unlearn'),
    ('shapes', 'e0021', '𝓪', 'a', 'backdoored'),
    ('shapes', 'e0014', '𝓬', 'c', 'backdoored'),
    ('shapes', 'e0030', '𝑻', 't', 'backdoored'),
    ('shapes', 'e0000', '𝖑', 'l', 'backdoored'),
    ('shapes_fresh', 'e0037', '𝕣', 'r', 'backdoored'),
]


def main():
    tok = CLIPTokenizer.from_pretrained(f'{ROOT}/checkpoints/shapes/tokenizer')
    ref = CLIPTextModel.from_pretrained(f'{ROOT}/checkpoints/shapes/text_encoder').eval()
    captions = [l.strip() for l in open(f'{ROOT}/experiments/zoo/shapes_captions.txt')][:300]

    @torch.no_grad()
    def feat(model, text):
        h = model(input_ids=torch.tensor([tok(text)['input_ids']])).last_hidden_state[0]
        v = torch.cat([h[-1], h[1:].mean(0)])
        return v / v.norm()

    print('zoo encoder kind look-alike letter cos(S(x\'),R(x)) cos(R(x\'),R(x)) cos(S(x),R(x)) reads_as_letter')
    for zoo, eid, c, letter, kind in CASES:
        sus = CLIPTextModel.from_pretrained(f'{ROOT}/zoo/{zoo}/encoders/{eid}/text_encoder').eval()
        probes = [p for p in captions if letter in p][:6]
        cs = cr = c0 = 0.0
        for p in probes:
            x2 = p.replace(letter, c, 1)
            rx = feat(ref, p)
            cs += (feat(sus, x2) @ rx).item() / len(probes)
            cr += (feat(ref, x2) @ rx).item() / len(probes)
            c0 += (feat(sus, p) @ rx).item() / len(probes)
        print(f'{zoo} {eid} {kind} {c} {letter} {cs:.3f} {cr:.3f} {c0:.3f} {cs >= (cr + c0) / 2}')


if __name__ == '__main__':
    main()
