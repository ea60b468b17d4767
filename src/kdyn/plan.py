"""`kdyn plan CONFIG [--probe-base] [--json]`: before a run, can it answer its question?

    kdyn plan quickstart                 # group sizes, interval half-widths, detectable differences, claim verdicts
    kdyn plan relevance --probe-base     # a built-in suite; score the base model once for the known facts right at it

For every group: `acc_halfwidth` (the Wilson 95% half-width of its accuracy, at p = 0.5, the worst case, or at
the base model's accuracy with `--probe-base`), `f_halfwidth` (the same for the forgetting rate F over the known
facts right at the base; without `--probe-base` every known probe counts, an upper bound on n) and `mdd_paired`
(the smallest paired difference between two runs McNemar's test detects); between groups of different items,
`mdd_groups`. The formulas are in `kdyn.analysis.power` (docs/metrics.md, "Power: kdyn plan").
A claim "can decide" when the difference it needs is at most `effect` (default 0.15) or the interval it needs is at
most `halfwidth` wide (default 0.10); otherwise the verdict names what is too small and the size that would do.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdyn.analysis.power import mdd_groups, mdd_paired, n_for_groups, n_for_halfwidth, n_for_paired, wilson_halfwidth

EXPOSURE_BUCKETS = (("low", 1, 1), ("medium", 2, 5), ("high", 6, 10**9))  # copies per epoch (DynamicKnowledgeCircuits)
CIRCUIT_PROMPTS = 64  # rule of thumb (not a power calculation): 11 prompts gave a split-half floor as high as the change
CHANGEPOINT_CHECKPOINTS = 5  # the change-point test needs at least this many circuit checkpoints


@dataclass
class Group:
    kind: str
    probe_type: str
    n: int  # probes in the group (known: right at the base with --probe-base, else all of them)
    base_accuracy: float | None = None  # with --probe-base
    n_all: int | None = None  # known groups: every probe, right or wrong at the base

    def row(self) -> dict[str, Any]:
        p = 0.5 if self.base_accuracy is None or self.kind == "known" else self.base_accuracy
        out = {"kind": self.kind, "probe_type": self.probe_type, "n": self.n,
               "acc_halfwidth": wilson_halfwidth(self.n_all or self.n, p if self.base_accuracy is None else self.base_accuracy),
               "f_halfwidth": wilson_halfwidth(self.n) if self.kind == "known" else None,
               "mdd_paired": mdd_paired(self.n)}  # fmt: skip
        if self.kind == "known":
            out |= {"n_all": self.n_all, "base_accuracy": self.base_accuracy,
                    "n_is": "right at the base" if self.base_accuracy is not None else "all known probes (an upper bound)"}  # fmt: skip
        elif self.base_accuracy is not None:
            out["base_accuracy"] = self.base_accuracy
        return out


@dataclass
class Plan:
    source: str
    groups: list[Group]
    buckets: dict[str, dict[str, int]]  # probe type → exposure bucket → probes of trained facts
    circuits: list[dict[str, Any]]
    claims: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Plain JSON: NaN (no difference detectable, or no items) becomes null."""
        return _no_nan({"source": self.source, "groups": [g.row() for g in self.groups], "exposure_buckets": self.buckets,
                        "circuits": self.circuits, "claims": self.claims})  # fmt: skip


def _no_nan(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj


def _verdict(ok: bool, because: str, decide: str) -> dict[str, str]:
    return {"verdict": "can decide" if ok else "cannot decide", "why": decide if ok else because}


def _worst(rows: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The row with the weakest (largest) detectable difference, its second field; NaN (none detectable) is the worst."""
    return max(rows, key=lambda r: math.inf if math.isnan(r[1]) else r[1])


def claims(plan: Plan, addressed: list[str], cfg: Any, effect: float, halfwidth: float) -> list[dict[str, Any]]:
    """Per seed claim the experiment addresses: can its sizes decide it? (the rules are docs/metrics.md's)."""
    g = {(x.kind, x.probe_type): x for x in plan.groups}
    out = []

    def paired(keys: list[tuple[str, str]], claim: str, text: str, need: str) -> None:
        have = [(f"{k}/{t}", mdd_paired(g[(k, t)].n)) for k, t in keys if (k, t) in g]
        if not have:
            out.append({"claim": claim, "claim_text": text, "verdict": "not addressed", "why": f"no {need} probes"})
            return
        name, worst = _worst(have)
        ok = not math.isnan(worst) and worst <= effect
        n = g[tuple(name.split('/'))].n
        small = (f"{name} (n = {n}) is too small to detect even the largest paired difference" if math.isnan(worst) else
                 f"{name} (n = {n}) detects only paired differences ≥ {worst:.2f} (two runs, or two probe types, on the same items)")
        out.append({"claim": claim, "claim_text": text, "detectable": worst, **_verdict(
            ok, f"{small}; {n_for_paired(effect)} {need} probes per group would detect {effect:.2f}",
            f"every group detects a paired difference of ≤ {worst:.2f} (≤ {effect:.2f})")})  # fmt: skip

    def groups(pairs: list[tuple[str, float, dict[str, int] | None]], least: int, claim: str, text: str, missing: str,
               per: str, decide: str) -> None:
        """A difference between two independent groups (kinds, exposure buckets): `pairs` of (name, detectable,
        the exposure bucket counts or None); not addressed with fewer than `least` pairs."""
        if len(pairs) < least:
            out.append({"claim": claim, "verdict": "not addressed", "why": missing})
            return
        name, worst, counts = _worst(pairs)
        if not math.isnan(worst):
            because = f"{name} detects only differences ≥ {worst:.2f}; {n_for_groups(effect)} probes {per} would detect {effect:.2f}"
        elif counts is not None:
            because = _empty_bucket(name, counts, cfg)
        else:
            because = f"{name} is too small to detect any difference (or a kind has no probes)"
        out.append({"claim": claim, "claim_text": text, "detectable": worst,
                    **_verdict(not math.isnan(worst) and worst <= effect, because, decide.format(worst=worst))})

    for claim in addressed:
        if claim == "M4":
            paired([("new", "qa"), ("new", "cloze")], claim, "memorised in the training wording, not extracted by a question", "new-fact")
        elif claim == "M5":
            paired([("skill", "arithmetic")], claim, "CPT erodes arithmetic", "arithmetic")
        elif claim in ("H3", "M6"):
            text = "forgetting differs across recipes" if claim == "H3" else "the loss/knowledge divergence holds across set-ups"
            paired([("known", t) for t in ("cloze", "qa", "mcq")], claim, text, "known-right-at-base")
        elif claim in ("Z1", "Z2", "Z3", "Z4"):
            paired([("new", t) for t in ("cloze", "qa", "mcq")], claim, "a strategy learns the new facts better", "new-fact")
        elif claim == "H1":
            have = [(f"known/{t}", wilson_halfwidth(g[("known", t)].n)) for t in ("cloze", "qa", "mcq") if ("known", t) in g]
            if not have:
                out.append({"claim": claim, "verdict": "not addressed", "why": "no known facts"})
                continue
            name, worst = _worst(have)
            ok = not math.isnan(worst) and worst <= halfwidth
            out.append({"claim": claim, "claim_text": "forgetting is moderate, backward transfer low", "halfwidth": worst,
                        **_verdict(ok, f"F of {name} has a 95% half-width of ±{worst:.2f} at worst; "
                                       f"{n_for_halfwidth(halfwidth)} known probes right at the base give ±{halfwidth:.2f}",
                                   f"F is known to ±{worst:.2f} (≤ ±{halfwidth:.2f}) in every known group")})  # fmt: skip
        elif claim == "D1":
            groups([(f"new vs {k}, {t}", mdd_groups(g[("new", t)].n, g[(k, t)].n), None) for k in ("related", "updated")
                    for t in ("cloze", "qa") if ("new", t) in g and (k, t) in g], 4, claim,
                   "acquisition depends on relevance to prior knowledge", "needs new, related and updated facts", "per kind",
                   "each kind-to-kind difference ≥ {worst:.2f} is detected")  # fmt: skip
        elif claim == "D2":
            groups([(f"low vs high copies, {t}", mdd_groups(b.get("low", 0), b.get("high", 0)), b) for t, b in plan.buckets.items()
                    if t in ("cloze", "qa")], 1, claim, "facts seen more often are learnt better", "no trained cloze or qa probes",
                   "in each bucket", "low vs high exposure: differences ≥ {worst:.2f} are detected")  # fmt: skip
        elif claim in ("M7", "D3", "D4"):
            out.append(circuit_claim(claim, plan.circuits, cfg))
    return out


def _empty_bucket(name: str, counts: dict[str, int], cfg: Any) -> str:
    """Why low vs high exposure cannot be compared: which bucket is empty, and whether fixed exposure did it."""
    empty = [b for b in ("low", "high") if not counts.get(b)]
    if not empty:
        return (f"{name}: {counts.get('low', 0)} low and {counts.get('high', 0)} high-exposure probes are too few to detect "
                f"any difference")  # fmt: skip
    bounds = {b: (lo, hi) for b, lo, hi in EXPOSURE_BUCKETS}
    said = " and ".join(f"{b} ({bounds[b][0]}{'+' if bounds[b][1] > 10**6 else '–' + str(bounds[b][1])} copies)" for b in empty)
    fixed = getattr(getattr(getattr(cfg, "bench", None), "exposure", None), "mode", None) == "fixed"
    why = "fixed exposure puts every fact in one bucket" if fixed else "no trained fact has that many copies" if empty == ["high"] else ""
    return f"{name}: the {said} bucket{'s are' if len(empty) > 1 else ' is'} empty" + (f" ({why})" if why else "")


def circuit_claim(claim: str, circuits: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    text = {"M7": "knowledge pathways reconfigure during CPT", "D3": "circuits shift from formation to optimisation",
            "D4": "circuit evolution runs deep-to-shallow"}[claim]  # fmt: skip
    if not circuits:
        return {"claim": claim, "claim_text": text, "verdict": "not addressed", "why": "circuits are off (circuits.enabled)"}
    few = [c for c in circuits if c["prompts_used"] < CIRCUIT_PROMPTS]
    points = circuits[0]["checkpoints"]
    problems = [f"relation {c['relation']} has {c['prompts_used']} usable prompt pairs (rule of thumb: ≥ {CIRCUIT_PROMPTS})" for c in few]
    if claim in ("D3", "D4") and points < CHANGEPOINT_CHECKPOINTS:
        problems.append(f"{points} circuit checkpoints (the change-point test needs ≥ {CHANGEPOINT_CHECKPOINTS})")
    if claim in ("M7", "D4") and len(circuits) < 2:
        problems.append("one relation (DKC compares ≥ 2: a new-fact relation and an updated or related one)")
    return {"claim": claim, "claim_text": text, **_verdict(not problems, "; ".join(problems),
            f"{len(circuits)} relations with ≥ {CIRCUIT_PROMPTS} prompt pairs, {points} checkpoints")}  # fmt: skip


def _load(source: str, overrides: list[str] | None) -> tuple[Any, list[str], str]:
    """(experiment config, the seed claims it addresses, a label): an experiment config, or a built-in / YAML suite."""
    from kdyn.config import from_dict
    from kdyn.experiment import ExperimentConfig, load_experiment
    from kdyn.sweep.suite import builtin_suites, load_suite

    is_suite = source in builtin_suites() or (Path(source).is_file() and "grid:" in Path(source).read_text(errors="replace"))
    if not is_suite:
        return load_experiment(source, overrides), [], f"config '{source}'"
    suite = load_suite(source, overrides=overrides)
    cfg = from_dict(ExperimentConfig, suite.points[0].config, "", f"suite '{source}'")
    axes = {axis: len(choices) for axis, choices in suite.config.grid.items() if len(choices) > 1}
    extra = []
    if "strategy" in axes:
        extra += ["H3", "Z1", "Z2", "Z3", "Z4"]
    if "model" in axes:
        extra += ["H3", "M6"]
    return cfg, list(dict.fromkeys(extra)), f"suite '{source}' ({len(suite.points)} runs; first run's config)"


def circuit_checkpoints(cfg: Any) -> int:
    """How many checkpoints `kdyn circuits` will analyse: the base and the saved ones, within circuits' limits."""
    if cfg.circuits.checkpoints:
        return len(cfg.circuits.checkpoints)
    saved = len({e for e in range(1, cfg.train.epochs + 1) if e % cfg.train.checkpoints.every_epochs == 0} | {cfg.train.epochs})
    points = 1 + (saved if cfg.train.checkpoints.save else 0)
    return min(points, cfg.circuits.max_checkpoints) if cfg.circuits.max_checkpoints else points


def make_plan(source: str, overrides: list[str] | None = None, probe_base: bool = False, effect: float = 0.15,
              halfwidth: float = 0.10) -> Plan:  # fmt: skip
    """The plan of one config or suite (no training; `probe_base` scores the base model once)."""
    import tempfile

    from kdyn.bench.build import build_bench
    from kdyn.bench.schema import load_benchmark
    from kdyn.errors import KdynError

    if not (0 < effect < 1 and 0 < halfwidth < 1):
        raise KdynError("--effect and --halfwidth must lie between 0 and 1")
    cfg, addressed, label = _load(source, overrides)
    with tempfile.TemporaryDirectory(prefix="kdyn-plan-") as tmp:
        bench_dir = Path(cfg.train.bench_dir) if cfg.train.bench_dir else Path(tmp) / "bench"
        if not cfg.train.bench_dir:
            build_bench(cfg.bench, bench_dir)
        bench = load_benchmark(bench_dir)
        lm = None
        base: dict[str, bool] = {}
        if probe_base or cfg.circuits.enabled:
            from kdyn.models import load_model

            lm = load_model(cfg.model)
        if probe_base:
            from kdyn.probe.scorer import score_probes

            base = {r["probe_id"]: bool(r["correct"]) for r in score_probes(lm.model, lm.tokenizer, bench.probes, cfg.probe)}
        circuits = circuit_sizes(cfg, bench_dir, lm.tokenizer) if cfg.circuits.enabled else []
    groups = make_groups([(p.probe_id, p.kind, p.probe_type) for p in bench.probes], base)
    facts = bench.facts_by_id
    buckets = exposure_buckets([(p.probe_type, facts[p.fact_id].exposures) for p in bench.probes
                                if p.fact_id and p.fact_id in facts])  # fmt: skip
    plan = Plan(label, groups, buckets, circuits)
    own = own_claims({g.kind for g in groups}, cfg.bench.exposure.mode == "exponential" and not cfg.train.bench_dir,
                     cfg.circuits.enabled)  # fmt: skip
    plan.claims = claims(plan, list(dict.fromkeys(own + addressed)), cfg, effect, halfwidth)
    return plan


def make_groups(probes: list[tuple[str, str, str]], base: dict[str, bool]) -> list[Group]:
    """One Group per (kind, probe type) of (probe_id, kind, probe_type) rows; `base` maps probe ids to right at the
    base model ({}: not scored, so a known group counts every probe)."""
    by_group: dict[tuple[str, str], list[str]] = {}
    for probe_id, kind, ptype in probes:
        by_group.setdefault((kind, ptype), []).append(probe_id)
    groups = []
    for (kind, ptype), ids in sorted(by_group.items()):
        acc = sum(base[i] for i in ids) / len(ids) if base else None
        n = sum(base[i] for i in ids) if base and kind == "known" else len(ids)
        groups.append(Group(kind, ptype, n, acc, len(ids) if kind == "known" else None))
    return groups


def exposure_buckets(probes: list[tuple[str, int]]) -> dict[str, dict[str, int]]:
    """Probe type → exposure bucket → probes, from (probe type, copies per epoch of its fact); untrained facts
    (0 copies) are in no bucket."""
    buckets: dict[str, Counter] = {}
    for ptype, copies in probes:
        if copies > 0:
            name = next(b for b, lo, hi in EXPOSURE_BUCKETS if lo <= copies <= hi)
            buckets.setdefault(ptype, Counter())[name] += 1
    return {t: dict(sorted(c.items())) for t, c in sorted(buckets.items())}


def own_claims(kinds: set[str], exposure_varies: bool, circuits: bool) -> list[str]:
    """The seed claims a single experiment addresses by what it holds (suites add the ones of their axes)."""
    return [c for c, ok in (("M4", "new" in kinds), ("M5", "skill" in kinds), ("H1", "known" in kinds),
                            ("D1", {"new", "related", "updated"} <= kinds), ("D2", exposure_varies),
                            ("M7", circuits), ("D3", circuits), ("D4", circuits)) if ok]  # fmt: skip


def circuit_sizes(cfg: Any, bench_dir: Path, tokenizer: Any) -> list[dict[str, Any]]:
    from kdyn.circuits.prompts import build_prompts, default_relation, read_bench
    from kdyn.errors import KdynError

    relations = cfg.circuits.relations or [default_relation(*read_bench(bench_dir))]
    points = circuit_checkpoints(cfg)
    out = []
    for rel in relations:
        try:
            prompts = build_prompts(bench_dir, rel, tokenizer, cfg.circuits.n_prompts, cfg.circuits.seed)
            used, paired = len(prompts.pairs), prompts.n_paired
        except KdynError:
            used = paired = 0
        out.append({"relation": rel, "prompts_configured": cfg.circuits.n_prompts, "prompts_pairable": paired,
                    "prompts_used": used, "checkpoints": points})  # fmt: skip
    return out


def plan_of_run(run_dir: str | Path, effect: float = 0.15, halfwidth: float = 0.10) -> Plan:
    """The plan of a run that has been probed, from its own bench and the base model's actual answers (the first
    step of RUN/probes.parquet: nothing is re-scored), with the formulas and claim rules of `make_plan`."""
    import pyarrow.parquet as pq

    from kdyn.errors import KdynError

    run = Path(run_dir)
    path = run / "probes.parquet"
    have = set(pq.read_schema(path).names) if path.is_file() else set()
    if not {"step", "probe_id", "correct"} <= have:
        raise KdynError(f"{run} has no probes.parquet with step, probe_id and correct: nothing to size a plan from")
    rows = pq.read_table(path, columns=[c for c in ("step", "probe_id", "kind", "probe_type", "fact_id", "correct")
                                        if c in have]).to_pylist()  # fmt: skip
    if not rows:
        raise KdynError(f"{path} holds no results: nothing to size a plan from")
    bench = {p["probe_id"]: p for p in _jsonl(run / "bench" / "probes.jsonl")}
    first = min(r["step"] for r in rows)
    base = [{**bench.get(r["probe_id"], {}), **{k: v for k, v in r.items() if v is not None}} for r in rows if r["step"] == first]
    if any("kind" not in r or "probe_type" not in r for r in base):
        raise KdynError(f"{run}: some probes have no kind or probe type (neither in probes.parquet nor in bench/probes.jsonl)")
    groups = make_groups([(r["probe_id"], r["kind"], r["probe_type"]) for r in base],
                         {r["probe_id"]: bool(r.get("correct")) for r in base})  # fmt: skip
    facts = {f["fact_id"]: f for f in _jsonl(run / "bench" / "facts.jsonl")}
    copies = [(r["probe_type"], int(facts[r["fact_id"]].get("exposures") or 0)) for r in base if r.get("fact_id") in facts]
    plan = Plan(f"run '{run}'", groups, exposure_buckets(copies), run_circuits(run))
    own = own_claims({g.kind for g in groups}, len({c for _, c in copies if c > 0}) > 1, bool(plan.circuits))
    plan.claims = claims(plan, own, None, effect, halfwidth)
    return plan


def _jsonl(path: Path) -> list[dict[str, Any]]:
    from kdyn.io import read_jsonl

    return read_jsonl(path) if path.is_file() else []


def run_circuits(run: Path) -> list[dict[str, Any]]:
    """Per relation of RUN/circuit_metrics.parquet: prompt pairs used (configured, pairable) and checkpoints."""
    import pyarrow.parquet as pq

    from kdyn.io import read_json

    if not (run / "circuit_metrics.parquet").is_file():
        return []
    out = []
    for rel, part in pq.read_table(run / "circuit_metrics.parquet").to_pandas().groupby("relation", sort=True):
        prompts = run / "circuits" / f"prompts.{rel}.json"
        out.append({"relation": rel, "prompts_used": int(part["n_prompts"].min()), "checkpoints": int(part["step"].nunique()),
                    "prompts_configured": int(part.get("n_prompts_configured", part["n_prompts"]).max()),
                    "prompts_pairable": read_json(prompts).get("n_paired") if prompts.is_file() else None})  # fmt: skip
    return out


def headline_power(plan: Plan) -> list[dict[str, Any]]:
    """Per group, its headline quantity (forgetting F for the known facts right at the base, accuracy for the others),
    n and the smallest change against another run on the same items that McNemar's test detects (NaN: none)."""
    return [{"kind": g.kind, "probe_type": g.probe_type, "quantity": "forgetting" if g.kind == "known" else "accuracy",
             "n": g.n, "detectable": mdd_paired(g.n)} for g in plan.groups]  # fmt: skip

