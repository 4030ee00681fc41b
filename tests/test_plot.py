"""r1jax.plotting: what the figure draws, checked through matplotlib against the metrics rows and
a NumPy reference of the centred moving average; the PNG (and its command-line path)."""

import json

import matplotlib.image
import numpy as np
import pytest
from absl import flags

from r1jax import plotting

REWARD = [0.1, 0.4, None, 0.3, 0.8, 0.6, 0.9, 1.2, 1.0, 1.4, 1.3, 1.7]  # None: a NaN step
LENGTH = [20, 24, 22, 30, 28, 35, 33, 40, 38, 45, 44, 50]


def make_rows() -> list[dict]:
    rows = [{"step": 0, "eval/pass@1": 0.25, "eval/completion_len": 21.5}]
    for s in range(1, 13):
        rows.append(
            {
                "step": s,
                "train/reward": REWARD[s - 1],
                "train/accuracy": s / 20,
                "train/completion_len": LENGTH[s - 1],
                "rewards/accuracy": s / 20,
                "rewards/format": min(1.0, s / 6),
                "rewards/count/timeouts": 0.0,
                "time/step_s": 1.0,
            }
        )
    rows[6].update({"eval/pass@1": 0.5, "eval/completion_len": 30.0})
    rows[12].update({"eval/pass@1": 0.75, "eval/completion_len": 41.0})
    return rows


def centred_mean_ref(y, window):
    """The mean of y[i - h : i + h + 1] clipped to the array, point by point."""
    h = window // 2
    return np.array([np.mean(y[max(i - h, 0) : i + h + 1]) for i in range(len(y))])


def lines(ax) -> dict:
    return {line.get_gid(): line for line in ax.get_lines()}


def test_figure_axes_smoothing_eval_and_components():
    rows = make_rows()
    fig = plotting.figure(rows, "run", smooth=5)
    axes = fig.axes
    assert [(a.get_title(), a.get_xlabel(), a.get_ylabel()) for a in axes] == [
        ("reward", "step", "reward per completion (weighted sum)"),
        ("accuracy", "step", "fraction correct"),
        ("completion length", "step", "tokens"),
        ("reward components", "step", "reward per completion (unweighted)"),
    ]
    assert "centred moving average over 5 logged points" in fig.get_suptitle()

    # Each training series: the raw points (nulls dropped) and their smoothed line.
    for ax, key in zip(axes, ["train/reward", "train/accuracy", "train/completion_len"]):
        got = lines(ax)
        steps = [r["step"] for r in rows if r.get(key) is not None]
        raw = np.array([r[key] for r in rows if r.get(key) is not None], float)
        np.testing.assert_array_equal(got[f"raw:{key}"].get_xdata(), steps)
        np.testing.assert_array_equal(got[f"raw:{key}"].get_ydata(), raw)
        np.testing.assert_array_equal(got[f"smoothed:{key}"].get_xdata(), steps)
        np.testing.assert_allclose(
            got[f"smoothed:{key}"].get_ydata(), centred_mean_ref(raw, 5), rtol=1e-12
        )
        assert (got[f"raw:{key}"].get_alpha(), got[f"smoothed:{key}"].get_alpha()) == (0.3, None)
        assert got[f"smoothed:{key}"].get_label() == key
    assert len(lines(axes[0])["raw:train/reward"].get_xdata()) == 11  # step 3's null dropped
    # Hand-computed: the window is in logged points, clipped at the ends (step 3 is missing).
    np.testing.assert_allclose(
        lines(axes[0])["smoothed:train/reward"].get_ydata()[:2],
        [(0.1 + 0.4 + 0.3) / 3, (0.1 + 0.4 + 0.3 + 0.8) / 4],
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        lines(axes[2])["smoothed:train/completion_len"].get_ydata()[-1], (45 + 44 + 50) / 3
    )

    # Held-out evaluation: as logged, with markers.
    for ax, key, want in [
        (axes[1], "eval/pass@1", [0.25, 0.5, 0.75]),
        (axes[2], "eval/completion_len", [21.5, 30.0, 41.0]),
    ]:
        line = lines(ax)[f"eval:{key}"]
        assert (list(line.get_xdata()), list(line.get_ydata())) == ([0, 6, 12], want)
        assert (line.get_marker(), line.get_label()) == ("o", key)

    # Reward components: every rewards/<label> but the counters, labelled by <label>.
    comp = lines(axes[3])
    assert sorted(comp) == [
        "raw:rewards/accuracy",
        "raw:rewards/format",
        "smoothed:rewards/accuracy",
        "smoothed:rewards/format",
    ]
    assert [t.get_text() for t in axes[3].get_legend().get_texts()] == ["accuracy", "format"]
    fmt = np.array([min(1.0, s / 6) for s in range(1, 13)])
    np.testing.assert_allclose(
        comp["smoothed:rewards/format"].get_ydata(), centred_mean_ref(fmt, 5), rtol=1e-12
    )


def test_smooth_window_one_is_raw_and_even_is_refused():
    y = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    np.testing.assert_array_equal(plotting.moving_average(y, 1), y)
    np.testing.assert_allclose(plotting.moving_average(y, 3), [2.0, 8 / 3, 2.0, 10 / 3, 3.0])
    with pytest.raises(ValueError, match="smooth=4"):
        plotting.figure(make_rows(), smooth=4)


def test_png_written_from_the_command_line_flags(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_rows()))
    fv = flags.FlagValues()
    plotting.define_flags(fv)
    fv(["r1jax-plot", f"--workdir={tmp_path}", "--smooth=3"])
    out = plotting.plot_from_flags(fv)
    assert out == str(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(out).shape == (700, 1000, 4)  # 10 x 7 inches at 100 dpi
    with pytest.raises(flags.IllegalFlagValueError, match="odd window"):
        fv(["r1jax-plot", f"--workdir={tmp_path}", "--smooth=2"])


def test_runs_compared_key_by_key_with_a_log_axis_for_a_wide_gap(tmp_path):
    """--also: one panel per key, one line per run (named by its directory) holding exactly the
    logged points; a gap spanning fp32 (1e-7) and bf16 (1e-3) levels goes on a log axis."""
    a, b = tmp_path / "fp32", tmp_path / "bf16"
    for wd, gap in ((a, 1e-7), (b, 1e-3)):
        wd.mkdir()
        rows = [{**r, "train/sampler_logp_gap": gap * r["step"]} for r in make_rows()[1:]]
        rows = make_rows()[:1] + rows
        (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fv = flags.FlagValues()
    plotting.define_flags(fv)
    keys = "train/reward,eval/pass@1,train/sampler_logp_gap"
    fv(["r1jax-plot", f"--workdir={a}", f"--also={b}", f"--keys={keys}"])
    out = plotting.plot_from_flags(fv)
    assert out == str(a / "compare.png") and matplotlib.image.imread(out).shape[1] == 1000
    fig = plotting.compare_figure(
        {"fp32": plotting.read_metrics(a), "bf16": plotting.read_metrics(b)}, keys.split(",")
    )
    reward, pass1, gap, spare = fig.axes
    assert [ax.get_title() for ax in (reward, pass1, gap)] == keys.split(",")
    assert not spare.axison  # 3 keys on a 2 x 2 grid
    assert sorted(lines(reward)) == ["bf16:train/reward", "fp32:train/reward"]
    line = lines(reward)["fp32:train/reward"]
    steps = [s for s in range(1, 13) if REWARD[s - 1] is not None]
    assert list(line.get_xdata()) == steps  # the null step dropped
    assert list(line.get_ydata()) == [r for r in REWARD if r is not None]
    ev = lines(pass1)["bf16:eval/pass@1"]
    assert (list(ev.get_ydata()), ev.get_marker()) == ([0.25, 0.5, 0.75], "o")
    np.testing.assert_allclose(lines(gap)["bf16:train/sampler_logp_gap"].get_ydata()[-1], 12e-3)
    assert gap.get_yscale() == "log" and reward.get_yscale() == "linear"
    assert [t.get_text() for t in gap.get_legend().get_texts()] == ["fp32", "bf16"]
