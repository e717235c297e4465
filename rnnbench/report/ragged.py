"""The report's "Ragged batches" section: what variable-length batches cost each backend, per
valid token, and packing against padding with a mask for torch.nn's RNNs."""
from __future__ import annotations

from .. import results
from ..suites import SETTINGS
from .figures import Figures, groups, suptitle
from .sections import Section, why_absent

PACKED, PADDED = "torch_cudnn", "torch_cudnn_padded"  # the two ways torch.nn takes a ragged batch
SHAPE = ["device", "dtype", "layers", "batch", "seq_len", "input_size", "hidden"]


def _distributions(frame) -> list:
    """The length distributions present, ``full`` first."""
    return sorted(frame["lengths"].unique(), key=lambda name: (name != "full", name))


def ragged_section(df, figs: Figures, label_run: bool) -> Section:
    """Per backend, time per valid token for each length distribution at the shape measured with the
    most ragged timings, and torch_cudnn packed against padded with a mask."""
    import pandas as pd

    s = Section("Ragged batches")
    speed = results.speed_rows(df)
    speed = speed[speed["tokens_per_s"].notna()]
    if speed.empty:
        s.no_data(why_absent(df, "no finished timing that can be ranked"))
        return s
    if (speed["lengths"] == "full").all():  # not missing data: these runs measured full-length batches only
        s.no_data("not measured: every timing here is of full-length batches; ragged ones are measured with "
                  "rnnbench run --lengths uniform:MIN,zipf:A (or --suite ragged)")
        return s
    shape = speed[speed["lengths"] != "full"].groupby(SHAPE).size().idxmax()
    at = speed[(speed[SHAPE] == pd.Series(shape, index=SHAPE)).all(axis=1)].copy()
    at["us_per_valid_token"] = 1e6 / at["tokens_per_s"].astype(float)  # median time / valid tokens per call
    order = _distributions(at)
    means = at.groupby("lengths")["length_mean"].median()
    s.text(f"At {', '.join(f'{results.SHAPE_NAMES.get(k, k)}={v}' for k, v in zip(SHAPE, shape))}: microseconds "
           "per valid token (the median time of a call over the sum of its rows' lengths; B*T for full). A backend "
           "that skips the padding keeps its figure as rows get shorter; one that computes the padding grows by "
           "T over the mean length. Mean length of each batch: "
           + ", ".join(f"{name} {means.get(name, float('nan')):.4g}" for name in order) + ". The lengths are drawn "
           "once per configuration from its seed, so every backend ran the same batch.")
    per_token = at.pivot_table(index=["cell", "mode", "model", "backend"], columns="lengths",
                               values="us_per_valid_token", aggfunc="median")
    s.table(per_token.reindex(columns=[c for c in order if c in per_token]).reset_index())
    _per_token_figures(s, at, order, figs, label_run)
    _packed_vs_padded(s, at, order)
    return s


def _per_token_figures(s: Section, at, order, figs: Figures, label_run: bool) -> None:
    import seaborn as sns

    for title, slug, sub in groups(at, ("cell",), label_run):
        g = sns.catplot(data=sub, kind="bar", x="lengths", y="us_per_valid_token", hue="backend", col="mode",
                        row="model", order=order, hue_order=figs.order(sub), palette=figs.palette,
                        estimator="median", errorbar=None, height=2.6, aspect=1.4, sharey=False)
        g.set(yscale="log")
        g.set_axis_labels("length distribution", "µs per valid token")
        g.set_titles("{row_name} · {col_name}")
        suptitle(g, f"Time per valid token, {title}")
        s.figure(figs.save(g.figure, f"ragged_{slug}"), f"Time per valid token by length distribution, {title}")


def _packed_vs_padded(s: Section, at, order) -> None:
    import numpy as np
    import pandas as pd

    pair = at[at["backend"].isin([PACKED, PADDED]) & (at["model"] == results.DIRECTIONS[False])]
    if pair["backend"].nunique() < 2:
        s.text(f"Packed vs padded: no data ({PACKED} and {PADDED} were not both timed at this shape).")
        return
    rows = []
    for (cell, mode, lengths), sub in pair.groupby(["cell", "mode", "lengths"], sort=False):
        by = {b: results.round_medians(r) for b, r in sub.groupby("backend")}  # {round: median s}
        if len(by) < 2:
            continue
        change = results.compare_paired_rounds(by[PACKED], by[PADDED])  # measured in the same rounds
        rows.append({"cell": cell, "mode": mode, "lengths": lengths,
                     "packed ms": float(np.median(list(by[PACKED].values()))) * 1e3,
                     "padded ms": float(np.median(list(by[PADDED].values()))) * 1e3,
                     "rounds": len(set(by[PACKED]) & set(by[PADDED])), "padded / packed": change.ratio, "p": change.p,
                     "change": change.verdict})
    table = pd.DataFrame(rows)
    table["lengths"] = pd.Categorical(table["lengths"], order)
    s.text(f"Packed ({PACKED}: pack_padded_sequence, then pad_packed_sequence) against padded with a mask "
           f"({PADDED}: the whole padded batch through torch.nn, y masked, the final state gathered at len-1), "
           "unidirectional (a padded reverse direction would start in the padding). Times are medians over "
           "rounds; above 1, padding costs more. Flagged when a paired signed-rank test over the rounds both "
           f"were measured in gives p < {SETTINGS.p_threshold}; 'too few rounds' below 8 (rnnbench run --rounds 8).")
    s.table(table.sort_values(["cell", "mode", "lengths"]))
