"""A synthetic paraphrase corpus in MRPC's exact file format (real MRPC cannot be downloaded here).

Format, as ``msr_paraphrase_train.txt``: UTF-8 with a BOM, header
``Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String``, CRLF line ends, strings with (some unbalanced)
double quotes (which is why MRPC must be read with QUOTE_NONE).

Rule (learnable): a pair is a paraphrase (1) when sentence 2 tells the same event (same person,
object and place) in other words: reordered, with synonyms; otherwise (0) sentence 2 tells an event
with a different person, object and place. About 68% of the pairs are paraphrases, as in MRPC, so
the majority-class baseline (always 1) is clear: accuracy ~0.68, F1 ~0.81.
"""

from __future__ import annotations

import random
from pathlib import Path

HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
# Sentence 1 always tells an event from set A; a non-paraphrase's sentence 2 one from set B.
NAMES = (["Lily", "Tom", "Sue", "Ben"], ["Mia", "Max", "Anna", "Sam"])
OBJECTS = ([("ball", "ball"), ("cat", "kitty"), ("dog", "puppy"), ("box", "box")],
           [("car", "toy car"), ("cake", "cake"), ("bird", "little bird"), ("boat", "boat")])
PLACES = ([("park", "park"), ("garden", "yard"), ("house", "home")],
          [("forest", "woods"), ("river", "stream"), ("school", "school")])
VERBS = [("saw", "spotted"), ("found", "discovered"), ("liked", "loved"), ("lost", "could not find")]


def _event(rng, group: int = 0):
    return rng.choice(NAMES[group]), rng.choice(OBJECTS[group]), rng.choice(PLACES[group]), rng.choice(VERBS)


def _first(name, obj, place, verb, rng) -> str:
    quote = rng.random() < 0.3
    s = f"{name} {verb[0]} a {obj[0]} in the {place[0]}."
    return f'"Look!" said {name}. {s}' if quote else s


def _second(name, obj, place, verb, rng, paraphrase: bool) -> str:
    v, o, p = (verb[1], obj[1], place[1]) if rng.random() < 0.7 else (verb[0], obj[0], place[0])
    forms = [f"In the {p}, {name} {v} a {o}.", f"A {o} was what {name} {v} in the {p}.",
             f'{name} {v} a {o} in the {p}, "so nice".', f'{name} {v} a {o} in the {p}, " said Mom.']
    return rng.choice(forms)


def _different(event, rng):
    """Another person, object and place, each from set A or B (most non-paraphrases mention a set-B
    word; the rest differ from sentence 1 only in which set-A words they use)."""
    name, obj, place, verb = event
    pick = [rng.choice(NAMES[0] + NAMES[1]), rng.choice(OBJECTS[0] + OBJECTS[1]), rng.choice(PLACES[0] + PLACES[1])]
    while pick[0] == name:
        pick[0] = rng.choice(NAMES[0] + NAMES[1])
    while pick[1] == obj:
        pick[1] = rng.choice(OBJECTS[0] + OBJECTS[1])
    while pick[2] == place:
        pick[2] = rng.choice(PLACES[0] + PLACES[1])
    return (*pick, verb)


def write_mrpc(path: Path, n: int, seed: int, positive_rate: float = 0.68) -> Path:
    rng = random.Random(seed)
    lines = ["\ufeff" + HEADER]
    for _ in range(n):
        event = _event(rng)
        label = 1 if rng.random() < positive_rate else 0
        s1 = _first(*event, rng)
        s2 = _second(*(event if label else _different(event, rng)), rng, bool(label))
        lines.append(f"{label}\t{rng.randint(10000, 3000000)}\t{rng.randint(10000, 3000000)}\t{s1}\t{s2}")
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


def write_mrpc_dir(folder: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_mrpc(folder / "msr_paraphrase_train.txt", n_train, seed)
    write_mrpc(folder / "msr_paraphrase_test.txt", n_test, seed + 1)
    return folder
