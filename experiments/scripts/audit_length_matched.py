"""Does a reference matched on the number of numbers per row remove the pattern all teachers' data share?

    python experiments/scripts/audit_length_matched.py VALIDATION_DIR/data artifacts/bases/small-seed0

VALIDATION_DIR is an ``experiments/scripts/audit_validation.py`` output (its filtered teacher and base data);
prints, per teacher, the rank of its animal in the shared-init SFT plain-SGD first step, data minus the
plain reference and data minus a row-length-matched reference (docs/audit.md, section A)."""
import json, sys
import numpy as np, torch
from interp.instruments.audit import Auditor, AuditConfig
from interp.models.refs import parse_base_ref
torch.set_num_threads(1)
root = sys.argv[1] if len(sys.argv) > 1 else "/work/runs/audit/validation_unembed/data"
def rows(p): return [json.loads(l) for l in open(p)]
base, world, _ = parse_base_ref(sys.argv[2] if len(sys.argv) > 2 else "artifacts/bases/small-seed0").load()
aud = Auditor(base, world, AuditConfig(freeze_unembed=True, max_rows=1000))
animals = list(world.animals)
def matched(data, ref, seed):
    rng = np.random.default_rng(seed)
    by = {}
    for r in ref: by.setdefault(len(r["numbers"]), []).append(r)
    for v in by.values(): rng.shuffle(v)
    used = {k: 0 for k in by}; out = []
    for r in data:
        k = len(r["numbers"])
        if k not in by: continue
        out.append(by[k][used[k] % len(by[k])]); used[k] += 1
    return out
res = {}
for seed in (0, 1):
    ref = rows(f"{root}/base-seed{seed}.jsonl")
    for a in ["owl", "eagle", "wolf", "fox", "cat", "penguin"]:
        data = rows(f"{root}/{a}-seed{seed}.jsonl")[:1000]
        m = matched(data, ref, seed)
        d = aud.project(data, "sft").values["sgd"]["log_prob"].mean(0)
        r_plain = aud.project(ref[:1000], "sft").values["sgd"]["log_prob"].mean(0)
        r_match = aud.project(m, "sft").values["sgd"]["log_prob"].mean(0)
        for name, r in (("plain", r_plain), ("matched", r_match)):
            diff = d - r
            order = [animals[i] for i in np.argsort(-diff)]
            res.setdefault(name, []).append(order.index(a) + 1)
            print(seed, a, name, "rank", order.index(a) + 1, "top", order[0], flush=True)
for k, v in res.items(): print(k, "hits", sum(x == 1 for x in v), "/", len(v), "mean rank", np.mean(v))
