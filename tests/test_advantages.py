"""group_advantages against hand-computed numbers and an independent per-group NumPy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.rl.advantages import group_advantages


def ref_advantages(rewards, G, scale="group", eps=1e-4, baseline="mean"):
    """Plain loops: the TRL formula (r - mean) / (std_ddof1 + eps), NaN = excluded -> 0."""
    r = np.asarray(rewards, np.float64)
    out = np.zeros_like(r)
    valid_all = r[~np.isnan(r)]
    batch_std = np.std(valid_all, ddof=1) if valid_all.size > 1 else 0.0
    for b in range(len(r) // G):
        g = r[b * G : (b + 1) * G]
        idx = [i for i in range(G) if not np.isnan(g[i])]
        vals = g[idx]
        if len(idx) < 2 or vals.max() == vals.min():
            continue
        std = {"group": np.std(vals, ddof=1), "batch": batch_std, "none": None}[scale]
        for i in idx:
            others = [g[j] for j in idx if j != i]
            base = np.mean(vals) if baseline == "mean" else np.mean(others)
            a = g[i] - base
            out[b * G + i] = a if std is None else a / (std + eps)
    return out


def test_hand_values_with_invalid_item():
    # Group [1, NaN, 0, 1]: valid mean 2/3, ddof=1 std sqrt(1/3); the NaN item gets 0.
    adv, stats = group_advantages(np.array([1.0, np.nan, 0.0, 1.0]), 4)
    s = np.sqrt(1 / 3) + 1e-4
    np.testing.assert_allclose(adv, [(1 / 3) / s, 0.0, (-2 / 3) / s, (1 / 3) / s], rtol=1e-6)
    assert adv.dtype == np.float32
    np.testing.assert_allclose(stats["frac_valid"], 0.75)
    np.testing.assert_allclose(stats["reward_mean"], 2 / 3, rtol=1e-6)


def test_equal_rewards_give_exact_zero():
    # 0.1 repeated 7 times: the float32 mean is not exactly 0.1, yet advantages must be exactly 0.
    rewards = np.concatenate([np.full(7, 0.1, np.float32), np.array([0, 1, 1, 0, 1, 0, 0.5])])
    adv, stats = group_advantages(rewards, 7)
    assert np.all(adv[:7] == 0.0) and not np.isnan(adv).any()
    np.testing.assert_allclose(adv[7:], ref_advantages(rewards, 7)[7:], rtol=1e-6)
    np.testing.assert_allclose(stats["frac_zero_std"], 0.5)


def test_degenerate_groups_are_zero():
    # Singleton groups, an all-invalid group, and a group with one valid reward: no signal.
    adv, _ = group_advantages(np.array([3.0, -1.0]), 1)
    np.testing.assert_array_equal(adv, [0.0, 0.0])
    adv, stats = group_advantages(np.array([np.nan, np.nan, np.nan, 2.0, 1.0, 0.0]), 3)
    np.testing.assert_array_equal(adv[:3], 0.0)
    np.testing.assert_allclose(adv[3:], [1 / (1 + 1e-4), 0.0, -1 / (1 + 1e-4)], rtol=1e-6)
    np.testing.assert_allclose(stats["frac_zero_std"], 0.5)
    adv, _ = group_advantages(np.array([np.nan, 5.0, np.nan]), 3)
    np.testing.assert_array_equal(adv, 0.0)


def test_loo_baseline_hand_values():
    # [1, 0, 0, 1]: b_i = mean of the other three -> 1 - 1/3 = 2/3 and 0 - 2/3 = -2/3.
    adv, _ = group_advantages(np.array([1.0, 0.0, 0.0, 1.0]), 4, baseline="loo", scale="none")
    np.testing.assert_allclose(adv, [2 / 3, -2 / 3, -2 / 3, 2 / 3], rtol=1e-6)
    # With an invalid item the leave-one-out mean uses only the other *valid* rewards.
    adv, _ = group_advantages(np.array([1.0, np.nan, 0.0, 0.0]), 4, baseline="loo", scale="none")
    np.testing.assert_allclose(adv, [1.0, 0.0, -0.5, -0.5], rtol=1e-6)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("baseline", ["mean", "loo"])
def test_against_numpy_loop(scale, baseline):
    rng = np.random.default_rng(1)
    rewards = rng.choice([0.0, 0.5, 1.0, np.nan], size=48, p=[0.4, 0.2, 0.3, 0.1]).astype(
        np.float32
    )
    rewards[:8] = 1.0  # one flat group
    got, _ = group_advantages(rewards, 8, scale=scale, baseline=baseline)
    want = ref_advantages(rewards, 8, scale=scale, baseline=baseline)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_jnp_and_jit_match_numpy():
    rng = np.random.default_rng(2)
    rewards = rng.choice([0.0, 1.0, np.nan], size=32, p=[0.5, 0.4, 0.1]).astype(np.float32)
    valid = rng.random(32) > 0.1
    want, want_stats = group_advantages(rewards, 4, valid_N=valid)
    fn = jax.jit(lambda r, v: group_advantages(r, 4, valid_N=v))
    got, got_stats = fn(jnp.asarray(rewards), jnp.asarray(valid))
    assert isinstance(got, jax.Array)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)
    for k in want_stats:
        np.testing.assert_allclose(float(got_stats[k]), float(want_stats[k]), rtol=1e-6)
    # valid_N=False behaves exactly like a NaN reward.
    masked = np.where(valid, rewards, np.nan)
    np.testing.assert_allclose(want, ref_advantages(masked, 4), rtol=1e-5, atol=1e-6)


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="rewards_N"):
        group_advantages(np.zeros(6), 4)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(np.zeros(4), 4, scale="std")
    with pytest.raises(ValueError, match="baseline"):
        group_advantages(np.zeros(4), 4, baseline="median")
    with pytest.raises(ValueError, match="valid_N"):
        group_advantages(np.zeros(4), 4, valid_N=np.ones(3, bool))
