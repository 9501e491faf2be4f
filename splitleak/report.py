"""Pictures and pages a person reads: `splitleak report` (one run, or a sweep), `splitleak compare`.

A report is one HTML page, RUN_DIR/report.html, with the PNGs it shows beside it (report-*.png); it opens
offline (no script, no font or style from elsewhere). The plots are matplotlib's.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from splitleak.names import ATTACK_NAMES


__all__ = [
    "PLOTTED",
    "compare_runs",
    "plot_points",
    "plot_strength",
    "plot_task",
    "write_report",
    "write_run_report",
    "write_sweep_report",
]

# The series a sweep plot shows: the attacker's verdict and the best snapshot beside it (a privacy tool
# shows the stronger figure: under label DP that is cross_kmeans's), then the single attacks that matter.
PLOTTED = (
    "leakage.train",
    "leakage.best_snapshot",
    "leakage.inference",
    "distance.grad.train",
    "kmeans_seeded.grad.train",
    "norm.grad.train",
    "direction.grad.train",
    "distance.smashed.train",
    "kmeans_seeded.smashed.train",
    "cross_kmeans.both.train",
    "kmeans_seeded.smashed.infer",
    "train_knn.smashed.infer",
)
STRENGTH_LABEL = {"epsilon": "ε (smaller is stronger)", "fraction": "fraction zeroed", "scale": "Marvell scale s"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# tab20's shades for the single attacks: the dark ones first, then the light; not purple, red or grey,
# which the best inference attack, the leak threshold and the task accuracy wear.
_ATTACK_SHADES = (0, 2, 4, 10, 12, 16, 18, 1, 3, 5, 11, 13, 17, 19)
# One line style per channel: gradients solid, smashed data dashed, both channels (cross_kmeans) dash-dot.
_CHANNEL_LINE = {"grad": "-", "smashed": "--", "both": "-."}


def attack_colour(attack: str):
    """Returns one attack's colour, the same in every plot (an unregistered name takes the last shade)."""
    from matplotlib import colormaps

    index = ATTACK_NAMES.index(attack) if attack in ATTACK_NAMES else len(_ATTACK_SHADES) - 1
    return colormaps["tab20"](_ATTACK_SHADES[index % len(_ATTACK_SHADES)])


def _style(key: str) -> dict:
    if key == "leakage.train":
        return {"linewidth": 3, "color": "black", "linestyle": "-", "label": "cumulative attacker (training labels)"}
    if key == "leakage.best_snapshot":
        return {
            "linewidth": 1.5,
            "color": "black",
            "linestyle": (0, (4, 2)),
            "label": "best single snapshot (picked with ground truth)",
        }
    if key == "leakage.inference":
        return {"linewidth": 2, "color": "tab:purple", "linestyle": ":", "label": "best inference attack"}
    if key == "test_accuracy":
        return {"linewidth": 2, "color": "grey", "linestyle": "-.", "label": "task test accuracy"}
    attack, data, phase = key.split(".")
    return {
        "color": attack_colour(attack),
        "linewidth": 1.2,
        "linestyle": ":" if phase == "infer" else _CHANNEL_LINE.get(data, "-."),
        "label": f"{attack} / {data} / {phase}",
    }


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


# -- one run --------------------------------------------------------------------------------------


def _run_records(run_dir: Path) -> tuple[list[dict], dict]:
    from splitleak.inspect import _load

    records, summary = _load(run_dir)
    return [r for r in records if not r.get("duplicate")], summary or {}


def plot_rounds(records: list[dict], summary: dict, path: Path) -> Path | None:
    """Draws every attack's accuracy round by round: the cumulative attacker on every sample seen so far,
    the per-round attacks on their batch; the leak threshold, the time to leak and the epoch ends marked."""
    rounds = [r for r in records if r.get("type") == "round"]
    series: dict[str, list[tuple[int, float]]] = {}
    for record in rounds:
        for entry in record.get("attacks", []):
            if entry.get("accuracy") is not None:
                key = f"{entry['attack']} / {entry['data']}" + (" (infer)" if entry.get("phase") == "infer" else "")
                series.setdefault(key, []).append((record["round"], entry["accuracy"]))
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.8))
    last_epoch = None
    for record in rounds:
        if record.get("phase") == "train" and record.get("epoch") != last_epoch and last_epoch is not None:
            ax.axvline(record["round"] - 0.5, color="0.85", linewidth=0.8, zorder=0)
        if record.get("phase") == "infer" and last_epoch != "infer":
            ax.axvline(record["round"] - 0.5, color="0.6", linewidth=1, zorder=0)
            ax.text(record["round"], 0.02, " inference", fontsize=8, color="0.4")
            last_epoch = "infer"
            continue
        if last_epoch != "infer":
            last_epoch = record.get("epoch")
    for key, points in sorted(series.items(), key=lambda kv: kv[0] != "cumulative / both"):
        xs, ys = zip(*points)
        if key == "cumulative / both":
            ax.plot(
                xs, ys, color="black", linewidth=2.5, zorder=5, label="cumulative attacker (every sample seen so far)"
            )
        else:
            ax.plot(xs, ys, linewidth=0.9, alpha=0.7, label=f"{key} (on the batch)")
    ttl = summary.get("time_to_leak") or {}
    threshold = ttl.get("threshold")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"leak threshold {threshold:g}")
        leak = ttl.get("cumulative/both/train")
        if leak:
            ax.axvline(leak["round"], color="tab:red", linewidth=1)
            ax.annotate(
                f"cumulative ≥ {threshold:g}\nat round {leak['round']}",
                (leak["round"], threshold),
                xytext=(8, -30),
                textcoords="offset points",
                fontsize=8,
                color="tab:red",
            )
    ax.set_xlabel("round (grey lines: epoch ends)")
    ax.set_ylabel("attack accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("attack accuracy round by round")
    return _save(fig, path)


def plot_epochs(summary: dict, path: Path) -> Path | None:
    """Draws every epoch-end attack's accuracy per epoch, and the inference-phase attacks after them."""
    rows = [r for r in summary.get("attacks", []) if r.get("accuracy") is not None]
    if not rows:
        return None
    plt = _pyplot()
    train_epochs = sorted({r["epoch"] for r in rows if r["phase"] == "train"})
    infer_x = (train_epochs[-1] + 1) if train_epochs else 0
    fig, ax = plt.subplots(figsize=(10, 4.8))
    keys = sorted({(r["attack"], r["data"], r["phase"]) for r in rows}, key=lambda k: (k[0] != "cumulative", k))
    # One colour per attack, one line style per channel: an attack's gradient, smashed and inference
    # figures read as one family, and 16 series do not run out of a 10-colour cycle into look-alikes.
    for attack, data, phase in keys:
        points = sorted(
            (r["epoch"], r["accuracy"])
            for r in rows
            if (r["attack"], r["data"], r["phase"]) == (attack, data, phase) and r["epoch"] is not None
        )
        if attack == "cumulative":
            style = {"color": "black", "linewidth": 3, "zorder": 5, "label": "cumulative attacker"}
        else:
            style = {
                "color": attack_colour(attack),
                "linewidth": 1.3,
                "linestyle": _CHANNEL_LINE.get(data, "-."),
                "label": f"{attack} / {data}",
            }
        if phase == "infer":
            value = next(r["accuracy"] for r in rows if (r["attack"], r["data"], r["phase"]) == (attack, data, phase))
            ax.plot(
                [infer_x],
                [value],
                marker="D",
                linestyle="none",
                color=style["color"],
                label=f"{attack} / {data} (inference)",
            )
            continue
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=4, **style)
    ticks = [*train_epochs, infer_x]
    ax.set_xticks(ticks, [str(e) for e in train_epochs] + ["inference"])
    threshold = (summary.get("time_to_leak") or {}).get("threshold")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"leak threshold {threshold:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("attack accuracy on all training (or test) samples")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("attack accuracy at every epoch end")
    return _save(fig, path)


def _recall_rows(records: list[dict]) -> list[tuple[str, dict]]:
    """Returns (name, per-class recall) of the cumulative attacker at the last epoch and of the best
    inference-phase attack."""
    epochs = [r for r in records if r.get("type") == "epoch"]
    out = []
    train = [r for r in epochs if r.get("phase") != "infer"]
    if train:
        entry = next((e for e in train[-1].get("attacks", []) if e["attack"] == "cumulative"), None)
        if entry and entry.get("recall"):
            out.append((f"cumulative attacker, epoch {train[-1]['epoch']}", entry["recall"]))
    infer = [r for r in epochs if r.get("phase") == "infer"]
    if infer:
        scored = [e for e in infer[-1].get("attacks", []) if e.get("recall") and e["attack"] != "random"]
        if scored:
            best = max(scored, key=lambda e: e.get("accuracy") or 0)
            out.append((f"{best['attack']} / {best['data']} at inference", best["recall"]))
    return out


def plot_recall(recalls: list[tuple[str, dict]], path: Path) -> Path | None:
    if not recalls:
        return None
    plt = _pyplot()
    classes = sorted({int(c) for _, recall in recalls for c in recall})
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(classes) + 3), 3.8))
    width = 0.8 / len(recalls)
    for i, (name, recall) in enumerate(recalls):
        xs = [c + (i - (len(recalls) - 1) / 2) * width for c in classes]
        ax.bar(xs, [recall.get(str(c), 0.0) for c in classes], width=width, label=name)
    ax.set_xticks(classes, [str(c) for c in classes])
    ax.set_xlabel("class")
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(recalls))
    ax.set_title("per-class recall")
    return _save(fig, path)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
.verdict { border: 2px solid #222; padding: 0.8em 1.2em; background: #f6f6f6; }
.headline { font-size: 1.15em; font-weight: bold; }
table { border-collapse: collapse; margin: 0.6em 0; }
td, th { padding: 0.2em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
td:first-child, th:first-child { text-align: left; }
tr.main td { font-weight: bold; }
img { max-width: 100%; }
.note { color: #555; font-size: 0.9em; }
"""


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _table(header: list[str], rows: list[list], *, main: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        f"<tr{' class=main' if i in main else ''}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _img(path: Path | None, alt: str) -> str:
    return f'<img src="{html.escape(path.name)}" alt="{html.escape(alt)}">' if path else ""


def _epoch_html(records: list[dict]) -> str:
    """Returns the epoch table as HTML: attacks as rows, epochs (at most 15, thinned evenly) and the
    inference pass as columns; AUC beside the accuracy on binary tasks."""
    from splitleak.inspect import epoch_matrix, thin

    order, epochs, has_infer, cells = epoch_matrix(records)
    shown = thin(epochs, 15)
    columns: list = list(shown) + (["infer"] if has_infer else [])
    binary = any(e.get("auc") is not None for row in cells.values() for e in row.values())

    def cell(entry: dict | None) -> str:
        if entry is None:
            return ""
        text = _fmt(entry.get("accuracy"))
        return text + (f" (AUC {_fmt(entry['auc'])})" if binary and entry.get("auc") is not None else "")

    header = ["attack", *[f"epoch {c}" if c != "infer" else "inference" for c in columns]]
    rows = [[key, *[cell(cells[key].get(c)) for c in columns]] for key in order]
    note = (
        f'<p class="note">Epochs {", ".join(map(str, shown))} of {len(epochs)}.</p>' if len(shown) < len(epochs) else ""
    )
    return _table(header, rows, main={order.index("cumulative")} if "cumulative" in order else set()) + note


def write_run_report(run_dir: Path) -> Path:
    """Writes RUN_DIR/report.html (and its report-*.png) for one run; returns the page's path."""
    from splitleak.inspect import privacy_budget

    run_dir = Path(run_dir)
    records, summary = _run_records(run_dir)
    hello = next((r for r in records if r.get("type") == "hello"), {})
    task = summary.get("task") or {}
    defense = summary.get("defense") or {}
    leakage = summary.get("leakage") or {}
    leak = (summary.get("time_to_leak") or {}).get("cumulative/both/train")
    threshold = (summary.get("time_to_leak") or {}).get("threshold")
    body = [f"<h1>splitleak run {html.escape(str(summary.get('run_id') or hello.get('run_id', '?')))}</h1>"]
    verdict = [
        ["defense", defense.get("name", "none")],
        ["ε, δ", "–" if defense.get("epsilon") is None else ", ".join(privacy_budget(defense))],
        ["task test accuracy", f"{_fmt(task.get('test_accuracy'))} on {task.get('test_samples', '–')} samples"],
        [
            "training labels leaked (cumulative attacker, last epoch)",
            _fmt((leakage.get("train") or {}).get("accuracy")),
        ],
        [
            "test labels leaked (best inference attack)",
            f"{_fmt((leakage.get('inference') or {}).get('accuracy'))} "
            f"({(leakage.get('inference') or {}).get('attack', '–')})",
        ],
        [
            f"time to leak (cumulative ≥ {threshold:g})" if threshold is not None else "time to leak",
            f"round {leak['round']} (epoch {leak['epoch']})" if leak else "never",
        ],
        [
            "data, cut shape, classes",
            f"{summary.get('dataset')}, {summary.get('cut_shape')}, {summary.get('num_classes')}",
        ],
        ["rounds observed", (summary.get("adversary") or {}).get("rounds_observed", "–")],
    ]
    if task.get("failure"):
        verdict.append(["training stopped", task["failure"]])
    body.append(
        '<div class="verdict"><p class="headline">'
        + html.escape(summary.get("headline") or "no summary: the run has not finished")
        + "</p>"
        + _table(["", ""], verdict)
        + "</div>"
    )
    if not (summary.get("adversary") or {}).get("scored", True):
        body.append('<p class="note">No ground truth was configured: predictions are logged unscored.</p>')
    rounds_png = plot_rounds(records, summary, run_dir / "report-rounds.png")
    epochs_png = plot_epochs(summary, run_dir / "report-epochs.png")
    recalls = _recall_rows(records)
    recall_png = plot_recall(recalls, run_dir / "report-recall.png")
    body += ["<h2>Attack accuracy round by round</h2>", _img(rounds_png, "attack accuracy per round")]
    body.append(
        '<p class="note">The cumulative attacker scores every training sample seen so far; a per-round attack '
        "scores its batch. Grey lines: epoch ends.</p>"
    )
    body += ["<h2>At every epoch end</h2>", _img(epochs_png, "attack accuracy per epoch")]
    body.append(_epoch_html(records))
    if recalls:
        classes = sorted({int(c) for _, recall in recalls for c in recall})
        body += ["<h2>Per-class recall</h2>", _img(recall_png, "per-class recall")]
        body.append(
            _table(["", *map(str, classes)], [[name, *(_fmt(r.get(str(c))) for c in classes)] for name, r in recalls])
        )
    body.append(
        f'<p class="note">Written by <code>splitleak report {html.escape(str(run_dir))}</code> from '
        "attack_log.jsonl and summary.json.</p>"
    )
    out = run_dir / "report.html"
    out.write_text(_page(f"splitleak run {summary.get('run_id', '')}", body))
    return out


# -- sweeps ---------------------------------------------------------------------------------------


def _strength_order(point: dict) -> float:
    """Returns a sort key from the weakest defense (no defense) to the strongest."""
    from splitleak.sweep import STRENGTH_KEY

    if point.get("strength") is None:
        return float("-inf")
    return -point["strength"] if STRENGTH_KEY.get(point["defense"]) == "epsilon" else point["strength"]


def _mean(point: dict, key: str):
    figure = point["figures"].get(key)
    return None if figure is None else figure["mean"]


def _errors(points: list[dict], key: str) -> list[list[float]]:
    lo, hi = [], []
    for p in points:
        s = p["figures"].get(key)
        lo.append(s["mean"] - s["ci95"][0] if s and s.get("ci95") else 0.0)
        hi.append(s["ci95"][1] - s["mean"] if s and s.get("ci95") else 0.0)
    return [lo, hi]


def _diverged_note(points: list[dict]) -> str:
    failed = [p for p in points if p.get("failures")]
    return "; ".join(
        f"{p.get('name', p['point'])}: {p['failures']} of {len(p['seeds'])} seeds diverged" for p in failed
    )


def plot_points(points: list[dict], path: Path, *, title: str) -> Path:
    """Draws attack accuracy (mean and 95% interval over seeds) and task accuracy at every point of any grid,
    the points side by side in grid order; points whose runs diverged are marked."""
    plt = _pyplot()
    xs = list(range(len(points)))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(points) + 4), 5.2))
    for key in ("test_accuracy", *PLOTTED):
        means = [_mean(p, key) for p in points]
        if all(m is None for m in means):
            continue
        ax.errorbar(
            xs,
            [math.nan if m is None else m for m in means],
            yerr=_errors(points, key),
            marker="o",
            capsize=3,
            **_style(key),
        )
    for x, p in zip(xs, points):
        if p.get("failures"):
            ax.plot([x], [0.02], marker="x", color="tab:red", markersize=10, linestyle="none")
            ax.annotate(
                "diverged",
                (x, 0.02),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color="tab:red",
            )
    ax.set_xticks(xs, [p.get("name", p["point"]) for p in points], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (mean, 95% interval over seeds)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def plot_strength(points: list[dict], path: Path, *, title: str) -> Path | None:
    """Draws attack accuracy and task accuracy against a defense's strength (the no-defense baseline at the
    left, apart); ε on the axis where the defense has one; diverged points marked at the bottom."""
    from splitleak.sweep import STRENGTH_KEY

    defended = [p for p in points if p.get("strength") is not None]
    if not defended or len({p["defense"] for p in defended}) != 1:
        return None
    kind = STRENGTH_KEY[defended[0]["defense"]]
    defended.sort(key=_strength_order)
    baseline = [p for p in points if p.get("strength") is None]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.2))
    strengths = [p["strength"] for p in defended]
    log_scale = min(strengths) > 0 and max(strengths) / min(strengths) >= 20
    if log_scale:
        ax.set_xscale("log")
    if kind == "epsilon":
        ax.invert_xaxis()  # left to right: weaker to stronger
    for key in ("test_accuracy", *PLOTTED):
        means = [_mean(p, key) for p in defended]
        if all(m is None for m in means):
            continue
        style = _style(key)
        ax.errorbar(
            strengths,
            [math.nan if m is None else m for m in means],
            yerr=_errors(defended, key),
            marker="o",
            capsize=3,
            **style,
        )
        if baseline and _mean(baseline[0], key) is not None:
            ax.axhline(_mean(baseline[0], key), color=style.get("color", "0.5"), linewidth=0.6, linestyle=(0, (1, 3)))
    for p in defended:
        if p.get("failures"):
            ax.plot([p["strength"]], [0.02], marker="x", color="tab:red", markersize=10, linestyle="none")
            ax.annotate(
                f"diverged ({p['failures']}/{len(p['seeds'])})",
                (p["strength"], 0.02),
                xytext=(0, 8),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color="tab:red",
            )
    ax.set_xlabel(STRENGTH_LABEL.get(kind, kind) + (" (log scale)" if log_scale else ""))
    ax.set_ylabel("accuracy (mean, 95% interval over seeds)")
    ax.set_ylim(0, 1.05)
    note = " — dotted: no defense" if baseline else ""
    ax.set_title(f"{title}{note}")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def _label_offsets(xs: list[float], span: float) -> list[int]:
    """Returns vertical label offsets (points) so that labels of nearby x do not overlap."""
    offsets, last_x, level = [], None, 0
    for x in xs:
        level = level + 1 if last_x is not None and abs(x - last_x) < 0.04 * span else 0
        offsets.append(8 + 11 * (level % 4))
        last_x = x
    return offsets


def plot_task(points: list[dict], path: Path, *, title: str) -> Path | None:
    """Draws attack accuracy against task accuracy, one marker per point and series (no lines: the points
    are not ordered on this axis), the cumulative attacker's labelled with the strength; diverged points
    listed beneath."""
    shown = [p for p in points if _mean(p, "test_accuracy") is not None]
    if not shown:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.2))
    for key in PLOTTED:
        pairs = [(_mean(p, "test_accuracy"), _mean(p, key)) for p in shown if _mean(p, key) is not None]
        if not pairs:
            continue
        style = _style(key)
        xs, ys = zip(*pairs)
        ax.plot(
            xs,
            ys,
            marker="o" if key != "leakage.train" else "s",
            markersize=4 if key != "leakage.train" else 8,
            linestyle="none",
            color=style.get("color"),
            label=style["label"],
        )
    labelled = sorted(
        (
            (_mean(p, "test_accuracy"), _mean(p, "leakage.train"), p)
            for p in shown
            if _mean(p, "leakage.train") is not None
        ),
        key=lambda t: t[0],
    )
    if labelled:
        span = max(1e-9, labelled[-1][0] - labelled[0][0])
        for (x, y, p), dy in zip(labelled, _label_offsets([t[0] for t in labelled], span)):
            ax.annotate(
                "none" if p.get("strength") is None else f"{p['strength']:g}",
                (x, y),
                xytext=(0, dy),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.5} if dy > 8 else None,
            )
    note = _diverged_note(points)
    ax.set_xlabel("task test accuracy (mean over seeds)" + (f"\nnot shown: {note}" if note else ""))
    ax.set_ylabel("attack accuracy (mean over seeds)")
    ax.set_ylim(0, 1.1)
    ax.set_title(f"{title}\n(labels above the squares: the defense's strength)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def plot_epochs_per_point(points: list[dict], path: Path, *, title: str) -> Path | None:
    """Draws the cumulative attacker's accuracy at every epoch, one line per point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.8))
    drawn = False
    for p in sorted(points, key=_strength_order):
        epochs = sorted(
            int(k.removeprefix("cumulative.epoch")) for k in p["figures"] if k.startswith("cumulative.epoch")
        )
        if not epochs:
            continue
        ys = [p["figures"][f"cumulative.epoch{e}"]["mean"] for e in epochs]
        ax.plot(epochs, ys, marker="o", markersize=3, label=p.get("name", p["point"]))
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cumulative attacker accuracy (mean over seeds)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def write_sweep_report(sweep_dir: Path) -> Path:
    """Writes SWEEP_DIR/report.html (and its report-*.png) from sweep.json; returns the page's path."""
    sweep_dir = Path(sweep_dir)
    data = json.loads((sweep_dir / "sweep.json").read_text())
    points, runs = data["points"], data["runs"]
    title = data.get("title") or sweep_dir.name
    images = [
        plot_strength(points, sweep_dir / "report-strength.png", title=title),
        plot_task(points, sweep_dir / "report-task.png", title=title),
        plot_points(points, sweep_dir / "report-points.png", title=title),
        plot_epochs_per_point(
            points, sweep_dir / "report-epochs.png", title=f"{title}: the cumulative attacker per epoch"
        ),
    ]
    body = [f"<h1>splitleak sweep {html.escape(title)}</h1>"]
    body.append(
        f"<p>{len(points)} points × seeds {html.escape(str(sorted({r['seed'] for r in runs})))}: {len(runs)} runs. "
        "Figures are means over seeds with the half-width of the 95% t-interval.</p>"
    )
    note = _diverged_note(points)
    if note:
        body.append(
            '<p class="note">Diverged runs (training stopped; their leakage is not averaged in): '
            f"{html.escape(note)}</p>"
        )
    columns = [
        ("test_accuracy", "task"),
        ("leakage.train", "leaked (cumulative)"),
        ("leakage.inference", "leaked (inference)"),
        ("epsilon", "ε spent"),
    ]

    from splitleak.sweep import format_interval

    def cell(p, key):
        return format_interval(p["figures"].get(key))

    body.append(
        _table(
            ["point", *[name for _, name in columns], "diverged"],
            [
                [
                    p.get("name", p["point"]),
                    *[cell(p, key) for key, _ in columns],
                    f"{p.get('failures', 0)}/{len(p['seeds'])}",
                ]
                for p in points
            ],
        )
    )
    captions = {
        "report-strength.png": "Attack and task accuracy against the defense's strength",
        "report-task.png": "Attack accuracy against task accuracy: the privacy–utility trade-off",
        "report-points.png": "Every point side by side",
        "report-epochs.png": "The cumulative attacker at every epoch",
    }
    for image in images:
        if image is not None:
            body += [f"<h2>{captions[image.name]}</h2>", _img(image, captions[image.name])]
    body.append(
        f'<p class="note">Written by <code>splitleak report {html.escape(str(sweep_dir))}</code> from sweep.json; '
        "every run's own report: <code>splitleak report RUN_DIR</code> on its directory.</p>"
    )
    out = sweep_dir / "report.html"
    out.write_text(_page(f"splitleak sweep {title}", body))
    return out


def write_report(path: Path) -> Path:
    """Writes the report of a run dir or a sweep dir; returns the page's path."""
    path = Path(path)
    if (path / "sweep.json").exists():
        return write_sweep_report(path)
    if (path / "attack_log.jsonl").exists():
        return write_run_report(path)
    raise FileNotFoundError(f"{path} holds neither a run (attack_log.jsonl) nor a sweep (sweep.json)")


# -- comparing runs -------------------------------------------------------------------------------


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


# Keys that differ between any two runs without making them different experiments.
_INCIDENTAL = (
    "run.dir",
    "run.id",
    "label_party.port",
    "adversary.port",
    "adversary.known_labels",
    "adversary.upstream",
    "feature_party.label_party_address",
    "feature_party.progress",
    "run.log_level",
)


def _run_dirs(paths: list[Path]) -> list[Path]:
    dirs = []
    for path in paths:
        path = Path(path)
        if (path / "sweep.json").exists():
            dirs += [Path(r["run_dir"]) for r in json.loads((path / "sweep.json").read_text())["runs"]]
        elif (path / "attack_log.jsonl").exists():
            dirs.append(path)
        else:
            raise FileNotFoundError(f"{path} holds neither a run (attack_log.jsonl) nor a sweep (sweep.json)")
    return dirs


def compare_runs(paths: list[Path]) -> tuple[list[str], list[dict]]:
    """Returns (the config keys on which the runs differ, one row per run: its directory, those keys'
    values, task accuracy, leakage and time to leak, and its cumulative accuracy per epoch)."""
    import yaml

    dirs = _run_dirs(paths)
    configs, rows = [], []
    for run_dir in dirs:
        config_path = run_dir / "config.yaml"
        configs.append(_flat(yaml.safe_load(config_path.read_text())) if config_path.exists() else {})
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        leakage = summary.get("leakage") or {}
        rows.append(
            {
                "run": str(run_dir),
                "task": (summary.get("task") or {}).get("test_accuracy"),
                "leaked.train": (leakage.get("train") or {}).get("accuracy"),
                "leaked.inference": (leakage.get("inference") or {}).get("accuracy"),
                "time_to_leak": ((leakage.get("time_to_leak") or {}).get("round")),
                "failure": (summary.get("task") or {}).get("failure"),
                "per_epoch": [e.get("accuracy") for e in leakage.get("per_epoch", [])],
            }
        )
    keys = sorted({k for c in configs for k in c})
    differing = [
        k
        for k in keys
        if not k.startswith(_INCIDENTAL) and len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1
    ]
    for row, config in zip(rows, configs):
        row["settings"] = {k: config.get(k) for k in differing}
    return differing, rows


def plot_compare(rows: list[dict], path: Path) -> Path:
    """Draws the runs side by side: the cumulative attacker per epoch, and task accuracy against leakage."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, row in enumerate(rows):
        label = f"{i + 1}: " + (", ".join(f"{k.split('.')[-1]}={v}" for k, v in row["settings"].items()) or row["run"])
        if row["per_epoch"]:
            left.plot(range(len(row["per_epoch"])), row["per_epoch"], marker="o", markersize=3, label=label[:60])
        if row["task"] is not None and row["leaked.train"] is not None:
            right.plot([row["task"]], [row["leaked.train"]], marker="s", linestyle="none")
            right.annotate(
                str(i + 1), (row["task"], row["leaked.train"]), xytext=(4, 4), textcoords="offset points", fontsize=8
            )
    left.set_xlabel("epoch")
    left.set_ylabel("cumulative attacker accuracy")
    left.set_ylim(0, 1.05)
    left.legend(fontsize=7)
    right.set_xlabel("task test accuracy")
    right.set_ylabel("training labels leaked (cumulative)")
    right.set_ylim(0, 1.05)
    right.set_title("each run (numbers as on the left)")
    return _save(fig, path)
