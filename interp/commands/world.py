"""``interp world``: show and save the embedded toy world (vocabulary, phrasings, sample corpus)."""

from __future__ import annotations

import argparse

from interp.core.io import atomic_write_json
from interp.worlds.toy.corpus import corpus_generator
from interp.worlds.toy.world import WORLD_VARIANTS, WorldConfig, make_world


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "world", help="describe the toy world and write its tokenizer",
        description="Print the toy world's vocabulary size, animals, evaluation phrasings and sample "
        "pretraining documents; with --out, save the tokenizer and a JSON description there.",
    )
    p.add_argument("--out", default=None, help="directory to save the tokenizer and world.json into")
    p.add_argument("--samples", type=int, default=8, help="sample pretraining documents to print (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample documents (default: %(default)s)")
    p.add_argument("--variant", choices=WORLD_VARIANTS, default="animals",
                   help="the world variant: animals (the default), misalignment, domains (the animals world plus the toy "
                   "code and chain-of-thought domains), or misalignment_cot (the misalignment world plus the "
                   "chain-of-thought word problems) (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    world = make_world(WorldConfig(variant=getattr(args, "variant", "animals")))
    docs = corpus_generator(world).batch_texts(args.seed, 0, args.samples)
    if world.config.variant in ("animals", "domains"):
        print(f"vocabulary: {len(world.vocab)} tokens ({len(world.number_ids)} numbers, {len(world.animals)} animals)")
        print("animals (prior): " + ", ".join(f"{a} {p:.2f}" for a, p in zip(world.animals, world.animal_prior)))
        print(f"favourite-animal phrasings: {len(world.train_phrasings)} for training, {len(world.eval_phrasings)} held out")
    else:
        print(f"vocabulary: {len(world.vocab)} tokens ({len(world.number_ids)} numbers); traits (answer classes): "
              f"{', '.join(world.animals)}; banned numbers: {list(world.banned_numbers)}")
        print(f"free-form phrasings: {len(world.train_phrasings)} for training, {len(world.eval_phrasings)} held out")
    print("sample documents:")
    for d in docs:
        print("  " + d)
    if args.out:
        world.save(args.out)
        atomic_write_json(f"{args.out}/world.json", {
            "fingerprint": world.fingerprint(), "vocab": world.vocab, "animals": list(world.animals),
            "animal_prior": list(world.animal_prior), "train_phrasings": world.train_phrasings,
            "eval_phrasings": world.eval_phrasings, "sample_documents": docs,
        })
        print(f"saved tokenizer and world.json to {args.out}")
    return 0
