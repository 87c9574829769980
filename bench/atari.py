"""Reproduce the seed paper's Atari inference timings (Khachatourian 2019) and go past them.

Env: gymnasium + ale-py, `ALE/<Game>-v5`, frameskip 4, sticky actions 0.25 (seeded: runs repeat
exactly), minimal action set. Preprocessing: the seed's red channel subsampled by striding (D2:
105x80, D4: 53x40), or `--color gray`. The policy is the seed's net, Conv(1,n1,3) - ReLU -
Conv(n1,n2,3) - ReLU - Linear - Softmax (weights seeded, untrained: timing does not depend on
them); actions are sampled from onnxruntime's output with a seeded generator, so every method
sees the same frames.

`dqn` is a Nature-DQN on a stack of the last 4 grayscale 84x84 frames (nearest-neighbour
subsampled), acting epsilon-greedy (0.1) on its Q-values; there `auto_stack` is auto with
frame-stack reuse declared (per-channel partials of the first conv), to show what it buys.

Per step, in a random order: onnxruntime (`base`, dense) and reuserun with rect (the seed's
method), rects, tiles and auto, all with the same thread count. Every output is checked against
onnxruntime. Network time is summed per method; end-to-end time adds the shared env + preprocess
time. Writes markdown tables in the seed's format (per game, Mean row), JSON and a PNG.

    python bench/atari.py --steps 1000                               # D2 80/160, D4 20/40, DQN
    python bench/atari.py --nets d2-80-160 --steps 3000              # one config, the seed's length
    python bench/atari.py --games Pong,Breakout --steps 300          # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import reuserun
from reuserun import zoo
from reuserun.bench import ort_session
from reuserun.streams import atari_preprocess, make_atari_env

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plots import per_game_bars  # noqa: E402

SEED_GAMES = ["Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout",
              "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Gopher", "Hero", "Kangaroo",
              "Krull", "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert", "RoadRunner", "Seaquest",
              "YarsRevenge"]
NETS = {f"d{d}-{n1}-{n2}": (d, n1, n2) for d in (2, 4) for n1, n2 in ((20, 40), (40, 80), (80, 160))}
NETS["dqn"] = (None, 4, 84)  # Nature-DQN: a stack of the last 4 frames, 84x84 grayscale
SIZES = {2: (105, 80), 4: (53, 40)}
METHODS = {"reuse_rect": "rect", "reuse_rects": "rects", "reuse_tiles": "tiles", "auto": "auto"}
# the seed paper's published means (seconds for 3000 steps, inference, CPU): base, reuse
SEED_MEANS = {"d4-20-40": (3.3, 2.6), "d4-40-80": (6.6, 3.9), "d2-80-160": (None, None)}


def _policy(net: str, actions: int, seed: int):
    """(model, input name, preprocess(obs) -> frame, stack depth) for a net name."""
    if net == "dqn":
        _, k, size = NETS[net]
        return zoo.nature_dqn(k, size, actions, seed), "frames", k, (size, size)
    d, n1, n2 = NETS[net]
    h, w = SIZES[d]
    return zoo.atari_policy(n1, n2, h, w, actions=actions, seed=seed), "frame", 1, (h, w)


def run_game(net: str, game: str, steps: int, threads: int, color: str, seed: int) -> dict:
    env = make_atari_env(game)
    model, name, k, (h, w) = _policy(net, int(env.action_space.n), seed)
    color = "gray" if net == "dqn" else color
    base = ort_session(model.SerializeToString(), threads)
    methods = dict(METHODS)
    sessions = {m: reuserun.InferenceSession(model, policy=p, threads=threads) for m, p in methods.items()}
    if k > 1:  # the same auto policy with frame-stack reuse declared, to show what it buys
        sessions["auto_stack"] = reuserun.InferenceSession(model, threads=threads, frame_stack=True)
    names = ["base", *sessions]
    net_time = {m: 0.0 for m in names}
    macs = {m: 0.0 for m in sessions}
    max_err = 0.0
    env_time = 0.0
    rng = np.random.default_rng(seed)
    order_rng = np.random.default_rng(seed + 1)
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    stack = [atari_preprocess(obs, 1, h, w, color)] * k
    frame = np.concatenate(stack, axis=1)
    env_time += time.perf_counter() - t0
    for _ in range(steps):
        outs = {}
        for i in order_rng.permutation(len(names)).tolist():
            m = names[i]
            t0 = time.perf_counter()
            if m == "base":
                outs[m] = base.run(None, {name: frame})[0]
            else:
                outs[m] = sessions[m].run(None, {name: frame})[0]
            net_time[m] += time.perf_counter() - t0
        for m, s in sessions.items():
            macs[m] += s.stats["mac_fraction"]
            max_err = max(max_err, float(np.abs(outs[m] - outs["base"]).max()))
        if k == 1:
            probs = outs["base"][0].astype(np.float64)
            action = int(rng.choice(len(probs), p=probs / probs.sum()))
        else:  # epsilon-greedy on the Q-values, as DQN acts
            action = int(rng.integers(len(outs["base"][0]))) if rng.random() < 0.1 else int(outs["base"][0].argmax())
        t0 = time.perf_counter()
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            obs, _ = env.reset()
            stack = [atari_preprocess(obs, 1, h, w, color)] * k
        stack = stack[1:] + [atari_preprocess(obs, 1, h, w, color)]
        frame = np.concatenate(stack, axis=1)
        env_time += time.perf_counter() - t0
    env.close()
    if max_err > 1e-4:
        raise AssertionError(f"{game}: reuserun differs from onnxruntime by {max_err}")
    return {"game": game, "steps": steps, "env_s": env_time, "net_s": net_time,
            "mac_fraction": {m: v / steps for m, v in macs.items()}, "max_abs_err": max_err}


def tables(net: str, rows: list[dict]) -> str:
    methods = [m for m in rows[0]["mac_fraction"]]
    names = ["base", *methods]
    steps = rows[0]["steps"]
    out = [f"### {net}: network time, seconds for {steps} steps (mean mac_fraction in brackets)", "",
           "| game | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in rows:
        cells = [f"{r['net_s']['base']:.2f}"] + [f"{r['net_s'][m]:.2f} ({r['mac_fraction'][m]:.3f})" for m in methods]
        out.append(f"| {r['game']} | " + " | ".join(cells) + " |")
    mean = {m: np.mean([r["net_s"][m] for r in rows]) for m in names}
    mf = {m: np.mean([r["mac_fraction"][m] for r in rows]) for m in methods}
    cells = [f"{mean['base']:.2f}"] + [f"{mean[m]:.2f} ({mf[m]:.3f})" for m in methods]
    out.append("| **Mean** | " + " | ".join(cells) + " |")
    total = {m: sum(r["net_s"][m] for r in rows) for m in names}
    out += ["", "Speedup over onnxruntime, total network time over the games: " +
            ", ".join(f"{m} {total['base'] / total[m]:.2f}x (ideal {1 / mf[m]:.1f}x)" for m in methods),
            "", f"End-to-end (env + preprocessing + network), seconds for {steps} steps, mean over games: " +
            ", ".join(f"{m} {np.mean([r['env_s'] + r['net_s'][m] for r in rows]):.2f}" for m in names),
            "", "Slowest game under auto, relative to onnxruntime: " +
            min((f"{r['game']} {r['net_s']['base'] / r['net_s']['auto']:.2f}x" for r in rows),
                key=lambda s: float(s.split()[-1][:-1]))]
    return "\n".join(out) + "\n"


def plot(net: str, rows: list[dict], path: Path) -> None:
    per_game_bars([r["game"] for r in rows],
                  {m: [r["net_s"]["base"] / r["net_s"][m] for r in rows] for m in METHODS}, path,
                  "speedup over onnxruntime", f"{net}: network time speedup per game")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default="d2-80-160,d4-20-40,dqn", help=f"comma list of {sorted(NETS)}")
    p.add_argument("--games", default=",".join(SEED_GAMES))
    p.add_argument("--steps", type=int, default=1000, help="steps per game (the seed used 3000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--color", choices=["red", "gray"], default="red")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"env": "ALE v5, frameskip 4, sticky actions 0.25, minimal actions", "steps": args.steps,
              "threads": args.threads, "color": args.color, "cpu": f"{os.cpu_count()} cores", "nets": {}}
    text = []
    for net in args.nets.split(","):
        rows = []
        for game in args.games.split(","):
            r = run_game(net, game, args.steps, args.threads, args.color, args.seed)
            rows.append(r)
            print(f"{net} {game:<15} base {r['net_s']['base']:.2f}s " +
                  " ".join(f"{m} {r['net_s'][m]:.2f}s ({r['mac_fraction'][m]:.3f})" for m in r["mac_fraction"]),
                  flush=True)
        report["nets"][net] = rows
        text.append(tables(net, rows))
        plot(net, rows, out / f"atari_{net}.png")
        print(text[-1], flush=True)
    (out / "atari.json").write_text(json.dumps(report, indent=1))
    (out / "atari.md").write_text("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
