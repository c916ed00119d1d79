"""The benchmark harnesses' command lines: both trainers must be asked for the same run."""

from pathlib import Path

from benchmarks.speed_vs_official import official_cmd, ours_cmd, run_settings


def test_speed_runs_give_both_trainers_the_same_networks_batch_and_gamma():
    s = run_settings(1024, "config-f", batch_gpu=4)
    official = dict(a[2:].split("=", 1) for a in official_cmd(Path("o"), Path("d.zip"), Path("out"), s, "fixed", 4, 2)
                    if a.startswith("--"))
    ours = dict(a.split("=", 1) for a in ours_cmd(Path("d"), Path("out"), "r", 1024, s, "fixed", 4, 2, [])
                if "=" in a and not a.startswith("-"))
    assert (official["cbase"], official["map-depth"], official["batch"]) == ("32768", "8", "8")
    assert (ours["channel_base"], ours["map_layers"], ours["batch"]) == ("32768", "8", "8")
    assert float(official["gamma"]) == float(ours["r1_gamma"]) == 0.0002 * 1024 ** 2 / 4
    assert official["glr"] == ours["glr"] and official["p"] == ours["aug_p"]
    # the parity settings are what the earlier figures ran
    assert run_settings(64, "parity", None) == {"batch": 32, "cbase": 16384, "map": 2, "lr": 0.0025,
                                                "gamma": 0.0002 * 64 * 64 / 32}
