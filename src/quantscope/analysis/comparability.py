"""Whether two sides of a comparison were generated under the same conditions.

A comparison of accuracy means something only when both sides share the token cap, the
thinking mode, the sampling, the chat template (`settings.COMPARABLE`, `COMPARABLE_SERVED`)
and, item by item, the prompt and target (the rows' `prompt_sha`: another dataset revision, a
changed prompt template or another option shuffle all change it). The model, engine and engine
options are what a comparison compares, so they may differ.

A settings study (one model under different sampling, e.g. temperature 0.6 vs 1.0, stored as one
variant name per setting) compares exactly what the rule above forbids: it is allowed explicitly
(`settings_study`), between variants of the same model only, and labelled as such.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from quantscope.analysis.metrics import Results
from quantscope.store.rows import RunRecord
from quantscope.store.settings import COMPARABLE, COMPARABLE_SERVED, OutputSettings, differences


def run_settings(runs: Sequence[RunRecord]) -> dict[str, OutputSettings]:
    """spec hash -> its output settings (rebuilt from the run's columns for runs stored before the
    full settings were recorded: cap, thinking and sampling are known, the rest is not)."""
    found = {}
    for run in runs:
        if run.settings_json is not None:
            found[run.spec_hash] = OutputSettings.from_json(run.settings_json)
        else:
            found[run.spec_hash] = OutputSettings(
                engine=run.engine,
                model=run.model_path,
                task=run.task,
                thinking=run.thinking_mode,
                temperature=run.temperature,
                top_p=run.top_p,
                top_k=run.top_k,
                max_tokens=run.max_tokens,
                seed=run.seed,
            )
    return found


def setting_mismatches(
    rows: Results, other: Results, settings: Mapping[str, OutputSettings], *, settings_study: bool = False
) -> list[str]:
    """What makes `rows` (one variant, one task) and `other` (the side it is compared with)
    incomparable: differing comparable settings (none in a settings study) and items whose
    prompt or target differ. Each entry names the setting and both values."""
    problems: list[str] = []
    if not settings_study:
        for ours in _distinct(rows, settings):
            for theirs in _distinct(other, settings):
                problems += _settings_differences(theirs, ours)
    problems += _item_differences(rows, other)
    return sorted(set(problems))


def _distinct(rows: Results, settings: Mapping[str, OutputSettings]) -> list[OutputSettings]:
    """The distinct settings the rows were generated under."""
    found = {settings[h].to_json(): settings[h] for h in set(rows.spec_hash) if h in settings}
    return list(found.values())


def unknown_settings(rows: Results, other: Results, settings: Mapping[str, OutputSettings]) -> list[str]:
    """The comparable settings a side did not record (None: runs imported from a harness that
    does not write them), as "NAME of VARIANT": a comparison resting on them cannot be checked."""
    unknown = set()
    for side in (rows, other):
        names = sorted(set(side.variant.astype(str)))
        for found in _distinct(side, settings):
            unknown |= {
                f"{name} of {', '.join(names)}" for name in COMPARABLE if getattr(found, name) is None
            }
    return sorted(unknown)


def _settings_differences(baseline: OutputSettings, variant: OutputSettings) -> list[str]:
    # a setting one side did not record is unknown, not different (`unknown_settings` names it)
    known = tuple(
        n for n in COMPARABLE if getattr(baseline, n) is not None and getattr(variant, n) is not None
    )
    changed = differences(baseline, variant, known) if known else []
    served = [
        f"served {key} {baseline.served[key]!r} -> {variant.served[key]!r}"
        for key in COMPARABLE_SERVED
        if key in baseline.served and key in variant.served and baseline.served[key] != variant.served[key]
    ]
    return changed + served


def _item_differences(rows: Results, other: Results) -> list[str]:
    ours = _prompts(rows)
    theirs = _prompts(other)
    differ = sorted(item for item in ours.keys() & theirs.keys() if ours[item] != theirs[item])
    if not differ:
        return []
    shared = len(ours.keys() & theirs.keys())
    return [f"prompt or target of {len(differ)} of {shared} shared items (e.g. item {differ[0]!r})"]


def _prompts(rows: Results) -> dict[str, str]:
    """item id -> prompt fingerprint, for the rows that recorded one."""
    known = np.array([sha is not None for sha in rows.prompt_sha], dtype=bool)
    return dict(zip(rows.item_id[known].astype(str), rows.prompt_sha[known], strict=True))


def same_model(rows: Results, other: Results, settings: Mapping[str, OutputSettings]) -> bool:
    """Whether both sides were generated from the same model (a settings study needs that)."""
    models = {settings[h].model for h in set(rows.spec_hash) | set(other.spec_hash) if h in settings}
    return len(models) <= 1
