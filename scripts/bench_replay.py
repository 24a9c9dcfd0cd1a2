#!/usr/bin/env python
"""Replay search on the recorded dataset (issue 3 (b)/(d), preliminary): the target layer's recorded configurations
are the only candidates (looked up, not measured); the other 31 layers are the history. Prints the median best latency
after 5, 10 and 20 trials: random order (5 seeds) vs DGP transfer search with a DGP-selected and a random tuning set
(3 seeds each).

    python scripts/bench_replay.py conv2d:1,64,56,56,64,3,1,1
"""
import numpy as np, torch, sys, time
torch.set_num_threads(1)
from raydgp.records import RecordStore
from raydgp.search import DGPSearch, SearchSettings, history_from_records
from raydgp.space.design_space import DesignSpace
store=RecordStore("data/dataset"); recs=store.records()
spaces={k: DesignSpace.from_json(e["space"]) for k,e in store.workload_entries().items()}
spec=sys.argv[1] if len(sys.argv)>1 else "conv2d:1,64,56,56,64,3,1,1"  # target layer
tkey=next(r.workload.key for r in recs if r.tag=="dataset:"+spec)
hist=history_from_records(recs, spaces, exclude_workload=tkey)
lat={r.config: r.result.median_ms for r in recs if r.workload.key==tkey and r.result.ok}
sp=spaces[tkey]
class Replay:
    def __init__(s): s.configs=list(lat); s.size=len(lat); s.dim=sp.dim
    def sample_many(s, n, rng, exclude=None, max_tries=None):
        c=[x for x in s.configs if x not in (exclude or ())]; rng.shuffle(c); return c[:n]
    def neighbours(s, c): return []
    def encode_many(s, cs): return sp.encode_many(cs)
best=min(lat.values())
def run(init, seed, n=20, alpha=None):
    st=SearchSettings(seed=seed, init=init, pool_size=200)
    s=DGPSearch(Replay(), st, history=hist, cache_dir=None)
    b=[]
    for i in range(n):
        c=s.suggest(); v=lat[c]; s.observe(c, v); b.append(min(b[-1] if b else 1e9, v))
    return b
rs=[]
for seed in range(5):
    rng=np.random.default_rng(seed); order=list(lat); rng.shuffle(order)
    rs.append(np.minimum.accumulate([lat[c] for c in order[:20]]))
print("best in pool", round(best,3))
print("random   @5,10,20", np.median(np.array(rs),0)[[4,9,19]].round(3))
for init in ("dgp","random"):
    t=time.time(); res=[run(init, s) for s in range(3)]
    print(f"dgp init={init} @5,10,20", np.median(np.array(res),0)[[4,9,19]].round(3), round(time.time()-t))
