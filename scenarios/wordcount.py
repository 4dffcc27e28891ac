"""Word count as map-reduce: mappers count words in generated documents, reducers merge.

Ordinary Ray code (``import ray`` in place of ``import detray as ray`` runs it
on Ray). The corpus is generated from a seeded ``random.Random`` (Zipf-like
word frequencies), so every run sees the same documents. Each mapper makes its
own documents and returns one partial count per reducer (``num_returns``); the
shuffle is nothing but object refs: reducer ``r`` receives the ``r``-th return of
every mapper and fetches each from wherever it was made. Words go to reducers
by ``zlib.crc32`` (Python's ``hash`` of a str differs between processes).

The program recounts the corpus sequentially and fails (``AssertionError``)
unless the distributed counts are identical.
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
import zlib
from collections import Counter

import detray as ray

VOCABULARY_SIZE = 2000
WORDS_PER_DOCUMENT = 120


def vocabulary(seed: int) -> list[str]:
    """Pronounceable made-up words, most frequent first, the same for a given seed."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "do"]
    words: set[str] = set()
    while len(words) < VOCABULARY_SIZE:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
    ranked = sorted(words)
    rng.shuffle(ranked)
    return ranked


ZIPF_CUM_WEIGHTS = list(itertools.accumulate(1.0 / rank for rank in range(1, VOCABULARY_SIZE + 1)))


def document(seed: int, index: int, words: list[str]) -> str:
    """Document ``index``: Zipf-like draws from the vocabulary, from its own stream."""
    rng = random.Random(f"{seed}/{index}")
    return " ".join(rng.choices(words, cum_weights=ZIPF_CUM_WEIGHTS, k=WORDS_PER_DOCUMENT))


def partition_of(word: str, reducers: int) -> int:
    return zlib.crc32(word.encode()) % reducers


@ray.remote
def mapper(seed: int, first_doc: int, docs: int, reducers: int) -> tuple[Counter[str], ...]:
    """Count the words of documents ``first_doc .. first_doc + docs``, split by reducer."""
    words = vocabulary(seed)
    parts: list[Counter[str]] = [Counter() for _ in range(reducers)]
    for index in range(first_doc, first_doc + docs):
        for word in document(seed, index, words).split():
            parts[partition_of(word, reducers)][word] += 1
    return tuple(parts)


@ray.remote
def reducer(*parts: Counter[str]) -> Counter[str]:
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part)
    return total


def check(condition: bool, message: str) -> None:
    """Fail the run when a result is wrong (``assert`` would vanish under ``python -O``)."""
    if not condition:
        raise AssertionError(f"wordcount: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description="map-reduce word count over a generated corpus")
    parser.add_argument("--mappers", type=int, default=16)
    parser.add_argument("--reducers", type=int, default=4)
    parser.add_argument("--docs-per-mapper", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    ray.init(num_cpus=8)
    start_s = time.monotonic()
    docs = args.docs_per_mapper
    map_outputs = [
        mapper.options(num_returns=args.reducers).remote(args.seed, m * docs, docs, args.reducers)
        for m in range(args.mappers)
    ]
    if args.reducers == 1:
        map_outputs = [[out] for out in map_outputs]
    reduced = [reducer.remote(*[outs[r] for outs in map_outputs]) for r in range(args.reducers)]
    counts: Counter[str] = Counter()
    for part in ray.get(reduced):
        check(not counts.keys() & part.keys(), "two reducers counted the same word")
        counts.update(part)
    elapsed_s = time.monotonic() - start_s
    total_docs = args.mappers * docs
    print(
        f"{args.mappers} mappers x {args.reducers} reducers counted {sum(counts.values())} words "
        f"({len(counts)} distinct) in {total_docs} documents in {elapsed_s:.2f}s"
    )
    print("most common: " + ", ".join(f"{word} {n}" for word, n in counts.most_common(5)))

    words = vocabulary(args.seed)
    expected = Counter(w for index in range(total_docs) for w in document(args.seed, index, words).split())
    check(sum(expected.values()) == total_docs * WORDS_PER_DOCUMENT, "the sequential count lost words")
    check(counts == expected, f"counts differ from the sequential count for {len(set(counts.items()) ^ set(expected.items()))} entries")
    print("counts equal the sequential count")
    ray.shutdown()


if __name__ == "__main__":
    main()
