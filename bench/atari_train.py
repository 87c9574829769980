"""Training with reuse against PyTorch dense CPU training: REINFORCE on the seed paper's Atari games.

Env as in bench/atari.py: `ALE/<Game>-v5`, frameskip 4, sticky actions 0.25, seeded, minimal
action set; the seed's red channel strided by 2 (D2, 105x80) or 4 (D4, 53x40); the seed's net
Conv(1,n1,3) - ReLU - Conv(n1,n2,3) - ReLU - Linear - Softmax, weights from reuserun.zoo (seeded).

REINFORCE as in the seed: actions sampled from the policy, discounted returns (gamma 0.99)
normalised over the episode, loss -sum_t R_t log pi(a_t|s_t), one Adam update (lr 1e-4) per
episode. The run is `--steps` agent steps (the seed: 3000); an episode still running at the end
is updated on what it has (its returns truncated there), so every step's backward is counted.

Two learners start from identical weights and see the same frames: the env is driven by the
reuse learner's actions, the dense learner is fed the same frames and trains on the same actions.
Both draw their action from one shared uniform per step (inverse CDF), so with equal weights they
pick the same action; the table counts the steps where they did not (float rounding near a CDF
boundary) and the largest difference in action probabilities, a check that both train the same.

  dense: PyTorch CPU autograd, the seed's base: a batch-1 forward per step keeping the autograd
         graph for the episode, backward and torch.optim.Adam at the episode's end.
  reuse: reuserun.train: forward with reuse per step, the reverse sweep at the episode's end,
         reuserun.train.Adam (torch's arithmetic).

Timed: network only (forward, backward, update), the two learners in a random order each step,
the same thread count for both. Writes markdown tables in the seed's format, JSON and a PNG
under --out (atari_train_<net>.{md,json,png}).

    python bench/atari_train.py --games Pong,Breakout --steps 300          # a quick look
    python bench/atari_train.py --nets d2-40-80,d4-20-40 --steps 3000      # the seed's setting
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

# Both learners run OpenMP (torch's and reuserun's). On a shared machine, spinning waiters stall a
# 2-thread region whenever another process holds a core: measured on Amidar (D4, 200 steps) with
# a neighbour busy, the default policy took 34 s dense / 5.7 s reuse, PASSIVE 1.5 s / 0.15 s.
# Set before either runtime starts; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from reuserun import zoo  # noqa: E402
from reuserun.streams import atari_preprocess, make_atari_env
from reuserun.train import Adam, ReinforceLearner, from_onnx, normalised_returns  # noqa: E402
from reuserun.train.reinforce import sample  # noqa: E402
from reuserun.train.torch_ref import to_torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from atari import SEED_GAMES, SIZES  # noqa: E402
from plots import per_game_bars  # noqa: E402

NETS = {f"d{d}-{n1}-{n2}": (d, n1, n2) for d in (2, 4) for n1, n2 in ((20, 40), (40, 80), (80, 160))}
# the seed paper's training speedups of reuse over its dense CPU base (mean over its games)
SEED_TRAIN = {"d2-40-80": 4.1}
LR = 1e-4


def run_game(net_name: str, game: str, steps: int, threads: int, seed: int) -> dict:
    d, n1, n2 = NETS[net_name]
    h, w = SIZES[d]
    env = make_atari_env(game)
    actions = int(env.action_space.n)
    net = from_onnx(zoo.atari_policy(n1, n2, h, w, actions=actions, seed=seed))
    dense = to_torch(net)
    dense_opt = torch.optim.Adam(dense.parameters(), lr=LR)
    reuse = ReinforceLearner(net, Adam(LR, threads=threads), threads=threads)
    rng = np.random.default_rng(seed)
    order = np.random.default_rng(seed + 1)
    t = {"dense": 0.0, "reuse": 0.0}
    t_bwd = {"dense": 0.0, "reuse": 0.0}
    mismatch, max_dp, episodes, returns, nodes, mem = 0, 0.0, 0, [], 0, 0
    logps, taken, rewards, ep_return = [], [], [], 0.0
    obs, _ = env.reset(seed=seed)
    frame = atari_preprocess(obs, 1, h, w, "red")
    for step in range(steps):
        u = float(rng.random())
        outs = {}
        for who in ("dense", "reuse") if order.random() < 0.5 else ("reuse", "dense"):
            t0 = time.perf_counter()
            if who == "reuse":
                a = reuse.act(frame, u)
                outs[who] = reuse.last_probs
            else:
                logp = torch.log_softmax(dense(torch.from_numpy(frame)), 1)[0]
                logps.append(logp)
                outs[who] = logp.detach().double().exp().numpy()
            t[who] += time.perf_counter() - t0
        mismatch += a != sample(outs["dense"], u)
        max_dp = max(max_dp, float(np.abs(outs["reuse"] - outs["dense"]).max()))
        taken.append(a)
        obs, r, term, trunc, _ = env.step(a)
        reuse.reward(r)
        rewards.append(float(r))
        ep_return += r
        if term or trunc or step == steps - 1:
            nodes += reuse.fwd.node_count()
            mem = max(mem, reuse.fwd.memory_bytes())
            for who in ("dense", "reuse") if order.random() < 0.5 else ("reuse", "dense"):
                t0 = time.perf_counter()
                if who == "reuse":
                    reuse.finish_episode()
                else:
                    wts = torch.from_numpy(normalised_returns(rewards).astype(np.float32))
                    loss = -(wts * torch.stack(logps)[torch.arange(len(logps)), torch.tensor(taken)]).sum()
                    dense_opt.zero_grad()
                    loss.backward()
                    dense_opt.step()
                dt = time.perf_counter() - t0
                t[who] += dt
                t_bwd[who] += dt
            logps, taken, rewards = [], [], []
            episodes += 1
            returns.append(ep_return)
            ep_return = 0.0
            if term or trunc:
                obs, _ = env.reset()
        frame = atari_preprocess(obs, 1, h, w, "red")
    env.close()
    positions = sum(np.prod(layer.out_shape[:2]) for layer in net.convs)
    return {"game": game, "steps": steps, "episodes": episodes, "returns": returns,
            "net_s": t, "update_s": t_bwd, "speedup": t["dense"] / t["reuse"],
            "node_fraction": nodes / (steps * positions) if steps else 0.0,
            "action_mismatches": int(mismatch), "max_prob_diff": max_dp,
            "record_peak_mb": mem / 2**20}


def tables(net: str, rows: list[dict]) -> str:
    steps = rows[0]["steps"]
    out = [f"### {net}: training network time, seconds for {steps} steps "
           "(forward + backward + Adam, REINFORCE, update per episode)", "",
           "| game | dense (PyTorch CPU) | reuse (reuserun) | speedup | episodes | node fraction | action mismatches |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['game']} | {r['net_s']['dense']:.2f} | {r['net_s']['reuse']:.2f} | "
                   f"{r['speedup']:.2f}x | {r['episodes']} | {r['node_fraction']:.3f} | "
                   f"{r['action_mismatches']} |")
    md = np.mean([r["net_s"]["dense"] for r in rows])
    mr = np.mean([r["net_s"]["reuse"] for r in rows])
    ms = np.mean([r["speedup"] for r in rows])
    out.append(f"| **Mean** | {md:.2f} | {mr:.2f} | **{ms:.2f}x** | | "
               f"{np.mean([r['node_fraction'] for r in rows]):.3f} | |")
    seed = SEED_TRAIN.get(net)
    out += ["", f"Mean speedup over the games {ms:.2f}x (ratio of mean times {md / mr:.2f}x)"
            + (f"; the seed paper: {seed}x" if seed else "") + ". Largest probability difference "
            f"between the learners: {max(r['max_prob_diff'] for r in rows):.1e}; peak reuse record "
            f"{max(r['record_peak_mb'] for r in rows):.1f} MiB."]
    return "\n".join(out) + "\n"


def plot(net: str, rows: list[dict], path: Path) -> None:
    lines = {f"seed paper mean {SEED_TRAIN[net]}x": SEED_TRAIN[net]} if net in SEED_TRAIN else None
    per_game_bars([r["game"] for r in rows], {"reuse over PyTorch dense": [r["speedup"] for r in rows]}, path,
                  "training speedup", f"{net}: REINFORCE training network time, speedup per game", lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default="d2-40-80,d4-20-40", help=f"comma list of {sorted(NETS)}")
    p.add_argument("--games", default=",".join(SEED_GAMES))
    p.add_argument("--steps", type=int, default=3000, help="agent steps per game (the seed: 3000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"env": "ALE v5, frameskip 4, sticky actions 0.25, minimal actions", "steps": args.steps,
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
              "threads": args.threads, "lr": LR, "torch": torch.__version__,
              "cpu": f"{os.cpu_count()} cores", "nets": {}}
    for net in args.nets.split(","):
        rows = []
        for game in args.games.split(","):
            r = run_game(net, game, args.steps, args.threads, args.seed)
            rows.append(r)
            print(f"{net} {game:<15} dense {r['net_s']['dense']:.2f}s reuse {r['net_s']['reuse']:.2f}s "
                  f"{r['speedup']:.2f}x nodes {r['node_fraction']:.3f} episodes {r['episodes']} "
                  f"mismatches {r['action_mismatches']}", flush=True)
            # written after every game, so a run cut short keeps what it measured
            report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            (out / f"atari_train_{net}.json").write_text(json.dumps({**report, "nets": {net: rows}}, indent=1))
            (out / f"atari_train_{net}.md").write_text(tables(net, rows))
        plot(net, rows, out / f"atari_train_{net}.png")
        print(tables(net, rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
