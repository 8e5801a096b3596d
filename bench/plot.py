"""
The pictures, drawn from the recovery section's raw numbers:

  - C{restart.png}: successful and failed calls per second across a
    server restart under load, for every pool, on one time axis (the
    server is told to stop at 0);
  - C{reconnect_jitter.png}: when each pool calls C{connect()} across a
    longer outage with C{cp_max=50}.

matplotlib is optional (the C{bench} extra): without it, no picture is
drawn and the tables say everything.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

from bench._common import ADBAPI, ADBAPI_RECONNECT, OURS, OURS_WAIT, Report

__all__ = ["draw"]

#: how each pool is drawn: (label, colour, line style)
STYLES = {
    ADBAPI.key: ("adbapi.ConnectionPool", "#d62728", "-"),
    ADBAPI_RECONNECT.key: ("adbapi.ConnectionPool(cp_reconnect=True)", "#ff7f0e", "--"),
    OURS.key: ("ReconnectingConnectionPool (FailFast)", "#1f77b4", "-"),
    OURS_WAIT.key: ("ReconnectingConnectionPool (WaitForDatabase)", "#2ca02c", "-"),
}


def draw(report: Report, out: str) -> List[str]:
    """
    Draw the pictures a section's numbers call for, into C{out}.

    @return: the paths written (none for sections without pictures, or
        without matplotlib).
    """
    if report.name != "recovery":
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: no pictures (pip install matplotlib)", flush=True)
        return []
    written = []
    load = report.data.get("restart_under_load", {})
    key = "postgres" if "postgres" in load else next(iter(load), None)
    if key is not None:
        written.append(_restart(load[key], key, report.data.get("load_settings", {}), os.path.join(out, "restart.png")))
    if report.data.get("jitter"):
        written.append(_jitter(report.data["jitter"], os.path.join(out, "reconnect_jitter.png")))
    return written


def _shade_outage(axes: Any, down: List[float]) -> None:
    for ax in axes:
        ax.axvspan(down[0], down[1], color="0.85", zorder=0, lw=0)


def _restart(runs: Dict[str, Any], database: str, setup: Dict[str, Any], path: str) -> str:
    import matplotlib.pyplot as plt

    fig, (ok_ax, failed_ax) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    downs = []
    for key, (label, colour, style) in STYLES.items():
        run = runs.get(key)
        if run is None:
            continue
        timeline = run["timeline"]
        ok_ax.step(timeline["t"], timeline["ok_per_s"], where="post", color=colour, ls=style, lw=1.6, label=label)
        failed_ax.step(timeline["t"], timeline["failed_per_s"], where="post", color=colour, ls=style, lw=1.6, label=label)
        downs.append(run["down"])
    if downs:
        down = [sorted(d[0] for d in downs)[len(downs) // 2], sorted(d[1] for d in downs)[len(downs) // 2]]
        _shade_outage((ok_ax, failed_ax), down)
        ok_ax.text((down[0] + down[1]) / 2, 0.97, "server down", transform=ok_ax.get_xaxis_transform(), ha="center", va="top", color="0.35")
    stuck = runs.get(ADBAPI.key)
    if stuck is not None and stuck.get("failed_after_back"):
        failed_ax.annotate(
            "adbapi.ConnectionPool: every call fails after the restart",
            xy=(stuck["down"][1] + 0.3, max(stuck["timeline"]["failed_per_s"]) * 0.75),
            fontsize=8,
            color=STYLES[ADBAPI.key][1],
        )
    name = {"postgres": "PostgreSQL", "mariadb": "MariaDB"}.get(database, database)
    ok_ax.set_title(
        "%s restarts under load: calls per second, each pool on its own run\n"
        "(%s callers, cp_max=%s, server down %s s; a caller waits %s ms after a failure)"
        % (
            name,
            setup.get("callers", "?"),
            setup.get("cp_max", "?"),
            setup.get("outage", "?"),
            round(setup.get("error_pause", 0) * 1000),
        ),
        fontsize=10,
    )
    ok_ax.set_ylabel("successful calls/s")
    failed_ax.set_ylabel("failed calls/s")
    failed_ax.set_xlabel("seconds since the server was told to stop (%d ms bins)" % round(runs[next(iter(runs))]["timeline"]["bin"] * 1000))
    ok_ax.set_ylim(bottom=0)
    failed_ax.set_ylim(bottom=0)
    ok_ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    for ax in (ok_ax, failed_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _jitter(data: Dict[str, Any], path: str) -> str:
    import matplotlib.pyplot as plt

    pools = data["pools"]
    keys = [k for k in (OURS_WAIT.key, OURS.key, ADBAPI_RECONNECT.key) if k in pools]
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, 1.9 * len(keys) + 1), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        run = pools[key]
        label, colour, _ = STYLES[key]
        bins = run["attempt_bins"]
        width = bins["width"]
        edges = [bins["start"] + i * width for i in range(len(bins["counts"]))]
        ax.bar(edges, bins["counts"], width=width, align="edge", color=colour)
        _shade_outage([ax], run["down"])
        ax.set_ylabel("connects\nper %d ms" % round(width * 1000))
        ax.set_title("%s: %d connect() calls" % (label, run["attempts_total"]), fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    axes[0, 0].text(
        sum(pools[keys[0]]["down"]) / 2, 0.95, "server down", transform=axes[0, 0].get_xaxis_transform(), ha="center", va="top", color="0.35"
    )
    axes[-1, 0].set_xlabel("seconds since the server was told to stop")
    fig.suptitle("When each pool calls connect(), cp_max=%d, %d callers" % (data["cp_max"], data["cp_max"]), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
