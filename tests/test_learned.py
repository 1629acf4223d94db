"""The learned router: its Gymnasium environment is the simulator (same arrivals, same outcomes,
rewards that add up to the run's on-time correct count), its masks, the export to numpy arrays
(the same decisions as the torch network), the ``learned`` policy in a simulation, and a short
training run of the command (no assertion on quality)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium", reason="the rl extra (gymnasium) is not installed")
pytest.importorskip("sb3_contrib", reason="the rl extra (sb3-contrib) is not installed")

from learn.config import TrainConfig, scaled_arrivals, training_scenarios  # noqa: E402
from learn.env import RewardWeights, RoutingEnv  # noqa: E402
from policies.learned import PolicyArrays  # noqa: E402
from sim.runner import prepare, run_once  # noqa: E402
from traces.errors import InputError  # noqa: E402
from traces.scenario import scenario_from_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "traces" / "data" / "digits-cpu"
DEPLOYMENTS = [("small", "cnn-small-kd/fp32/cpu"), ("medium", "mobilenet_v2/int8/cpu"), ("large", "resnet18/int8/cpu")]


def raw_scenario(rate_rps=300.0, duration_s=2.0, deadlines=(10.0, 40.0), replicas=(1, 1, 1), policy=None) -> dict:
    return {"seed": 1, "duration_s": duration_s, "warmup_s": 0.5, "bundle": str(BUNDLE),
            "arrivals": {"kind": "poisson", "rate_rps": rate_rps},
            "requests": {"deadline_ms": list(deadlines), "weights": [1.0 / len(deadlines)] * len(deadlines)},
            "deployments": [{"name": n, "variant": v, "replicas": r, "max_batch_size": 8, "batch_wait_timeout_ms": 1.0}
                            for (n, v), r in zip(DEPLOYMENTS, replicas)],
            "policy": policy or {"name": "planner"}}


def prepared(**kw):
    return prepare(scenario_from_dict(raw_scenario(**kw), base_dir=REPO))


def test_check_env_passes():
    from gymnasium.utils.env_checker import check_env

    env = RoutingEnv([prepared()], taus=(0.8, 0.95))
    check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("route,baseline", [("large", False), ("small@0.95>large", False), ("large", True)])
def test_an_episode_is_the_simulated_run_and_its_return_counts_ontime_correct_requests(route, baseline):
    """A constant action replays ``simulate run`` of the static policy on the same seed: one step
    per arrival, and the return is the run's on-time correct count minus the priced replica time
    (minus, with the baseline, the count of requests the fastest variant gets right)."""
    cost = 3.0
    env = RoutingEnv([prepared()], taus=(0.8, 0.95), reward=RewardWeights(1.0, cost, baseline))
    action = env.route_labels.index(route)
    obs, info = env.reset(seed=0, options={"episode_seed": 5})
    steps, total, done = 0, 0.0, False
    while not done:
        obs, reward, done, truncated, info = env.step(action)
        steps, total = steps + 1, total + reward
        assert not truncated
    if ">" in route:
        static = {"name": "static", "cascade": ["small", "large"], "threshold": 0.95}
    else:
        static = {"name": "static", "deployment": route}
    _, requests, summary = run_once(prepared(policy=static), 5)
    table = requests.to_pandas()
    assert steps == len(table)
    served = ~table["dropped"]
    used_s = sum(((table[f"hop{k}_finish_s"] - table[f"hop{k}_start_s"]) / table[f"hop{k}_batch_size"].astype(float))
                 .where(served, 0.0).fillna(0.0) for k in range(2 if ">" in route else 1) if f"hop{k}_start_s" in table)
    ontime_correct = int((table["hit"] & table["correct"].fillna(False)).sum())
    assert info["ontime_correct"] == ontime_correct
    expected = ontime_correct - cost * float(used_s.sum())
    if baseline:
        table_p = prepared().predictions
        fast_right = dict(zip(table_p.sample_ids, table_p.correct["cnn-small-kd/fp32/cpu"]))
        expected -= sum(fast_right[s] for s in table["sample_id"])
    assert total == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_masks_routes_that_cannot_meet_the_deadline_and_keep_the_fastest():
    env = RoutingEnv([prepared(deadlines=(0.01,))], taus=(0.9,))
    _, info = env.reset(seed=0)
    mask = info["action_mask"]
    assert mask.sum() == 1 and env.route_labels[int(np.argmax(mask))] == "small"  # the fastest alone
    env.close()
    env = RoutingEnv([prepared(deadlines=(1000.0,))], taus=(0.9,))
    _, info = env.reset(seed=0)
    assert info["action_mask"].all()
    env.close()


def test_masks_routes_through_a_deployment_without_replicas():
    env = RoutingEnv([prepared(replicas=(1, 0, 1))], taus=(0.9,))
    _, info = env.reset(seed=0)
    for label, ok in zip(env.route_labels, info["action_mask"]):
        assert ok == ("medium" not in label), label
    env.close()


def first_observations(env: RoutingEnv, n: int, seed: int = 3) -> np.ndarray:
    """The first n + 1 observations of an episode that always takes route 0."""
    obs, _ = env.reset(seed=seed)
    return np.array([obs] + [env.step(0)[0] for _ in range(n)])


def test_reset_abandons_an_episode_and_a_seed_gives_the_same_episode():
    env = RoutingEnv([prepared()], taus=(0.9,))
    first = first_observations(env, 50)
    again = first_observations(env, 50)  # the first episode is abandoned mid-run
    np.testing.assert_array_equal(first, again)
    env.close()


def test_scaled_arrivals_scale_every_kind_and_refuse_an_unknown_one():
    assert scaled_arrivals({"kind": "poisson", "rate_rps": 100.0}, 1.5, "x")["rate_rps"] == 150.0
    bursty = {"kind": "bursty", "rates_rps": [1.0, 2.0], "mean_dwell_s": [1, 1]}
    assert scaled_arrivals(bursty, 2, "x")["rates_rps"] == [2.0, 4.0]
    assert scaled_arrivals({"kind": "replay", "path": "t"}, 0.5, "x")["rate_scale"] == 0.5
    with pytest.raises(InputError):
        scaled_arrivals({"kind": "other"}, 2.0, "x")


def _write_toml(path: Path, raw: dict) -> None:
    lines = [f"seed = {raw['seed']}", f"duration_s = {raw['duration_s']}", f"warmup_s = {raw['warmup_s']}",
             f"bundle = {str(raw['bundle'])!r}".replace("'", '"'), "[arrivals]", 'kind = "poisson"',
             f"rate_rps = {raw['arrivals']['rate_rps']}", "[requests]",
             f"deadline_ms = {raw['requests']['deadline_ms']}", f"weights = {raw['requests']['weights']}"]
    for d in raw["deployments"]:
        lines += ["[[deployments]]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in d.items()]
    lines += ["[policy]", 'name = "planner"']
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learned")
    scenario = folder / "train.toml"
    _write_toml(scenario, raw_scenario(rate_rps=400.0, duration_s=2.0))
    out = folder / "router.npz"
    scratch = folder / "tmp"  # the run's system temp dir: training must leave no litter in it
    scratch.mkdir()
    done = subprocess.run([sys.executable, "-m", "learn", "train", str(scenario), "--out", str(out), "--steps", "2048",
                           "--envs", "2", "--rollout-steps", "512", "--batch-size", "256", "--episode-s", "1.0"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    # torch keeps one per-user compile cache there (torchinductor_USER), reused by every run; nothing else
    assert [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_")] == []
    return scenario, out, done


def test_training_smoke_run_saves_a_policy_and_refuses_to_overwrite_it(smoke):
    scenario, out, done = smoke
    assert out.is_file() and "saved" in done.stdout
    arrays = PolicyArrays.load(out)
    assert [d["name"] for d in arrays.meta["deployments"]] == [n for n, _ in DEPLOYMENTS]
    assert arrays.meta["difficulty"]["fast_variant"] == "cnn-small-kd/fp32/cpu"  # the bundle has features
    before = out.read_bytes()
    again = subprocess.run([sys.executable, "-m", "learn", "train", str(scenario), "--out", str(out), "--steps", "10"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "exists" in again.stderr
    assert out.read_bytes() == before


def test_the_numpy_policy_takes_the_torch_networks_decisions(smoke, tmp_path):
    """The exported arrays score routes as the trained torch actor does."""
    from learn.train import make_model

    config = TrainConfig(scenarios=(str(smoke[0]),), steps=256, envs=1, rollout_steps=256, batch_size=128,
                         episode_s=1.0)
    model, normalised, probe, difficulty, meta = make_model(config, log=lambda _line: None)
    model.learn(256)
    from learn.train import export

    arrays = export(model, normalised, probe, config, difficulty, meta, 0.0)
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(64, probe.observation_space.shape[0])) * 3 + normalised.obs_rms.mean
    import torch

    with torch.no_grad():
        obs = torch.as_tensor(normalised.normalize_obs(raw), dtype=torch.float32)
        logits = model.policy.action_net(model.policy.mlp_extractor.forward_actor(model.policy.extract_features(obs)))
    ours = np.array([arrays.scores(o) for o in raw])
    np.testing.assert_allclose(ours, logits.numpy(), rtol=1e-4, atol=1e-4)
    normalised.close()


def test_the_learned_policy_runs_in_a_simulation_and_reports_its_routes(smoke, tmp_path):
    _, out, _ = smoke
    raw = raw_scenario(policy={"name": "learned", "path": out.name}, duration_s=3.0)
    scenario = scenario_from_dict(raw, base_dir=out.parent)  # path relative to the scenario
    _, requests, summary = run_once(prepare(scenario), 2)
    report = summary["policy"]
    assert sum(report["choices"].values()) == len(requests.to_pandas())
    assert 0.0 <= report["route_entropy_bits"] <= np.log2(len(PolicyArrays.load(out).meta["routes"]))


def test_the_learned_policy_refuses_other_deployments_and_bad_files(smoke, tmp_path):
    _, out, _ = smoke
    other = raw_scenario(policy={"name": "learned", "path": str(out)})
    other["deployments"][2]["variant"] = "resnet18/fp32/cpu"
    with pytest.raises(InputError, match="trained on deployments"):
        run_once(prepare(scenario_from_dict(other, base_dir=REPO)), 1)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    for path in (tmp_path / "missing.npz", bad):
        with pytest.raises(InputError, match="policy.path"):
            run_once(prepare(scenario_from_dict(raw_scenario(policy={"name": "learned", "path": str(path)}),
                                                base_dir=REPO)), 1)
    with pytest.raises(InputError, match="exists"):
        PolicyArrays.load(out).save(out)


def test_training_scenarios_must_share_deployments(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    _write_toml(a, raw_scenario())
    other = raw_scenario()
    other["deployments"][0]["variant"] = "cnn-small/fp32/cpu"
    _write_toml(b, other)
    assert len(training_scenarios(TrainConfig(scenarios=(str(a),), load_scales=(0.5, 1.0)))) == 2
    with pytest.raises(InputError, match="same bundle and deployments"):
        training_scenarios(TrainConfig(scenarios=(str(a), str(b))))


@pytest.mark.parametrize("name", ["digits", "sst2"])
def test_the_shipped_routers_run_on_their_systems_without_collapsing(name):
    """Each bundle's trained router (examples/learned/) matches its scenario and spreads its
    requests over several routes (the Adaptive Router seed's PPO sent all of them to one)."""
    from traces.scenario import load_scenario

    scenario = load_scenario(REPO / "examples" / "learned" / f"{name}.toml", ["duration_s=5", "warmup_s=1"])
    _, requests, summary = run_once(prepare(scenario), 1)
    assert sum(summary["policy"]["choices"].values()) == len(requests.to_pandas())
    assert summary["policy"]["route_entropy_bits"] > 0.5
    assert summary["ontime_accuracy"] > 0.5


def test_the_shipped_router_routes_around_a_dead_deployment():
    """Every replica of `large` crashed for 2 s: the mask keeps the router off it (no batch starts
    there while it is down) and every arrival still ends exactly once."""
    from traces.scenario import load_scenario

    scenario = load_scenario(REPO / "examples" / "learned" / "digits.toml",
                             ["duration_s=4", "warmup_s=0",
                              'faults=[{deployment = "large", replica = 0, at_s = 1.0, down_s = 2.0}]'])
    _, requests, summary = run_once(prepare(scenario), 3)
    table = requests.to_pandas()
    assert table["id"].is_unique
    started_on_large = 0
    for k in range(int(table["hops"].max())):
        on = (table[f"hop{k}_deployment"] == "large") & table[f"hop{k}_start_s"].between(1.0, 3.0, inclusive="left")
        started_on_large += int(on.sum())
    assert started_on_large == 0
    assert summary["completed"] + summary["dropped"] == summary["requests"] == len(table)
    assert sum(summary["policy"]["choices"].values()) == len(table)
    routes = table.loc[table["arrival_s"].between(1.2, 2.8), "route"]
    assert routes.size > 100 and not routes.str.contains("large").any()


def test_rewards_survive_the_log_freeing_slots_mid_run(monkeypatch):
    """A run longer than the request log's ring retires ended requests mid-run; their rewards are
    read first, so the return still equals the run's count (a ring of 1,024 slots, 3,000 arrivals)."""
    import sim.core.records as records

    monkeypatch.setattr(records, "MIN_CAPACITY", 1 << 10)
    env = RoutingEnv([prepared(rate_rps=600.0, duration_s=5.0)], taus=(0.9,), reward=RewardWeights(1.0, 0.0, False))
    env.reset(seed=0, options={"episode_seed": 4})
    total, done, steps = 0.0, False, 0
    while not done:
        _, reward, done, _, info = env.step(env.route_labels.index("large"))
        total, steps = total + reward, steps + 1
    assert steps > 2 * 1024
    static = {"name": "static", "deployment": "large"}
    _, requests, _ = run_once(prepared(rate_rps=600.0, duration_s=5.0, policy=static), 4)
    table = requests.to_pandas()
    assert total == info["ontime_correct"] == int((table["hit"] & table["correct"].fillna(False)).sum())


def test_a_failed_episode_leaves_the_environment_usable():
    """An error inside the simulation reaches the caller; the next reset replays a clean episode."""
    env = RoutingEnv([prepared()], taus=(0.9,))
    clean = first_observations(env, 20)
    env.reset(seed=3)
    broken = env._observer.observe
    env._observer.observe = lambda request, view: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        env.step(0)
    env._observer.observe = broken
    np.testing.assert_array_equal(first_observations(env, 20), clean)
    env.close()
