"""Theophylline: hyarch's mixed-effects fit against R's nlme, and individual against pooled.

    python benchmarks/theophylline.py [--json] [--no-nlme]

Data: the built-in ``theophylline`` space (R's Theoph: 12 subjects, one oral dose, 11
samples each). Model: one compartment, first-order absorption and elimination, random
effects on log ka and log Cl (Pinheiro and Bates 2000, section 8.2). It prints:

1. **Fixed effects on all 132 observations**: hyarch's FOCE fit (``hyarch.core.twin_fit``)
   and nlme's maximum-likelihood fit (``nlme(conc ~ SSfol(dose, time, lKe, lKa, lCl),
   random = pdDiag(lKa + lCl ~ 1), method = "ML")``, run here with Rscript), side by side:
   ka, ke, Cl (the population medians), the spreads and the residual sd.
2. **Held-out last observations** (the space's split: the first 9 samples of every subject
   fit, the 12 h sample validates, the 24 h sample tests), each candidate trained and
   scored through the sandbox exactly as a search does: the individual model (the space's
   prior), the pooled model (the same, no random effects), a hybrid (a closure on
   absorption, with the random effects) and a covariate model (a network of body weight
   scaling each subject's clearance, the DeepNLME pattern). MSE in (mg/L)^2 over the 24 held-out points, per
   subject, and the likelihood's AIC and BIC on the training part.

R and nlme come from Debian's packages (``apt-get install r-base-core r-cran-nlme``);
``--no-nlme`` skips them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAMES = ("ka", "ke", "Cl")

NLME = r"""
library(nlme)
d <- read.csv("{csv}")
d <- groupedData(conc ~ time | subject, data = d)
fit <- function(data) nlme(conc ~ SSfol(dose, time, lKe, lKa, lCl), data = data,
  fixed = lKe + lKa + lCl ~ 1, random = pdDiag(lKa + lCl ~ 1),
  start = c(lKe = -2.5, lKa = 0.5, lCl = -3), method = "ML")
m <- fit(d)
f <- fixef(m)
sd <- as.numeric(VarCorr(m)[, "StdDev"])
cat("fixed", f[["lKa"]], f[["lKe"]], f[["lCl"]], "\n")
cat("spread", sd[1], sd[2], sd[3], "\n")
cat("loglik", as.numeric(logLik(m)), "\n")
# the held-out protocol: fit on each subject's first 9 samples, predict the last two
idx <- ave(d$time, d$subject, FUN = seq_along)
train <- d[idx <= 9, ]
held <- d[idx > 9, ]
mt <- fit(groupedData(conc ~ time | subject, data = as.data.frame(train)))
pi <- predict(mt, newdata = as.data.frame(held), level = 1)
pp <- predict(mt, newdata = as.data.frame(held), level = 0)
cat("heldout", mean((held$conc - pi)^2), mean((held$conc - pp)^2), "\n")
"""

POOLED_MARK = ", individual=True"

HYBRID = '''from hyarch import Closure, HybridModel


class Model(HybridModel):
    """The individual one-compartment model with a learned correction to absorption (what
    leaves the gut enters the serum)."""

    def setup(self):
        self.ka = self.parameter(init=1.65, bounds=(0.05, 20.0), individual=True)
        self.ke = self.parameter(init=0.082, bounds=(0.005, 2.0))
        self.Cl = self.parameter(init=0.05, bounds=(0.001, 1.0), individual=True)
        self.absorb = Closure(inputs=("gut",), hidden=(8, 8))

    def derivatives(self, t, s, u):
        volume = self.Cl / self.ke
        flow = self.ka * s.gut + self.absorb(s.gut)
        return {"gut": -flow, "conc": flow / volume - self.ke * s.conc}
'''


COVARIATE = '''from hyarch import Closure, HybridModel


class Model(HybridModel):
    """The individual one-compartment model with clearance predicted from body weight by a
    network (the DeepNLME pattern: covariates explain part of the individual deviation)."""

    def setup(self):
        self.ka = self.parameter(init=1.65, bounds=(0.05, 20.0), individual=True)
        self.ke = self.parameter(init=0.082, bounds=(0.005, 2.0))
        self.Cl = self.parameter(init=0.05, bounds=(0.001, 1.0), individual=True)
        self.weight_effect = Closure(inputs=("weight",), hidden=(4,), kind="multiplicative")

    def derivatives(self, t, s, u):
        volume = self.Cl * self.weight_effect(u.weight) / self.ke
        return {"gut": -self.ka * s.gut, "conc": self.ka * s.gut / volume - self.ke * s.conc}
'''


def run_nlme(csv_path: Path) -> dict | None:
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "theoph.R"
        script.write_text(NLME.replace("{csv}", str(csv_path)))
        out = subprocess.run(["Rscript", str(script)], capture_output=True, text=True,
                             timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"Rscript failed: {out.stderr[-2000:]}")
    lines = {ln.split()[0]: [float(x) for x in ln.split()[1:]]
             for ln in out.stdout.splitlines() if ln.strip()}
    lka, lke, lcl = lines["fixed"]
    sd_ka, sd_cl, sigma = lines["spread"]
    return {"fixed_effects": {"ka": math.exp(lka), "ke": math.exp(lke), "Cl": math.exp(lcl)},
            "omega": {"ka": sd_ka, "Cl": sd_cl}, "sigma": sigma,
            "neg2loglik": -2 * lines["loglik"][0],
            "heldout_mse_individual": lines["heldout"][0],
            "heldout_mse_pooled": lines["heldout"][1]}


def fit_all(space) -> dict:
    """hyarch's FOCE fit on all 132 observations (the library API, no held-out part)."""
    import torch

    from hyarch.core.candidate import load_model_class, make_factory
    from hyarch.core.data import Trajectories
    from hyarch.core.twin_fit import fit_twin

    rows = list(csv.DictReader(open(space.path.parent / space.spec.data.csv.path)))
    subjects: dict[str, list] = {}
    for r in rows:
        subjects.setdefault(r["subject"], []).append(r)
    ids = list(subjects)
    T = max(len(v) for v in subjects.values())
    t = torch.zeros(len(ids), T)
    y = torch.full((len(ids), T, 1), math.nan)
    u = torch.zeros(len(ids), T, 2)
    for i, k in enumerate(ids):
        v = subjects[k]
        t[i, :len(v)] = torch.tensor([float(r["time"]) for r in v])
        y[i, :len(v), 0] = torch.tensor([float(r["conc"]) for r in v])
        u[i, :, 0] = float(v[0]["dose"])
        u[i, :, 1] = float(v[0]["weight"])
    data = Trajectories.from_arrays(t, y, u, states=("conc",), inputs=("dose", "weight"),
                                    ids=ids)
    source = space.prior_path().read_text()
    factory = make_factory(load_model_class(source, "prior.py"), space.states, space.inputs,
                           space.scales())
    res = fit_twin(factory, data, data, space.train_config(), initial=space.initial_rules())
    f = res.model.twin_.fit_
    return {"fixed_effects": res.model.physical_values(), "omega": f.omega,
            "sigma": f.sigma["conc"], "neg2loglik": f.neg2loglik,
            "seconds": round(res.seconds, 1)}


def heldout(space, label: str, source: str) -> dict:
    """Train and score one candidate through the sandbox; MSE on the 24 held-out points."""
    from hyarch.core.data import state_scales
    from hyarch.evaluate import evaluate_source
    from hyarch.record import Evaluation

    t0 = time.perf_counter()
    ev = Evaluation.from_dict(evaluate_source(space, source, filename=f"{label}.py").result)
    if not ev.ok:
        return {"label": label, "status": "failed", "reason": ev.reason}
    scale2 = float(state_scales(space.train)[0]) ** 2
    # per subject: the mean of its 12 h and 24 h errors
    val, test = (ev.split(s).per_trajectory_nmse for s in ("val", "test"))
    per = [(a + b) / 2 * scale2 for a, b in zip(val, test, strict=True)]
    twin = dict(ev.extra).get("twin") or {}
    return {"label": label, "status": "ok", "heldout_mse": sum(per) / len(per),
            "per_subject": per, "parameters": dict(ev.parameters),
            "aic": twin.get("aic"), "bic": twin.get("bic"),
            "n_estimated": twin.get("n_estimated"), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-nlme", action="store_true")
    args = ap.parse_args(argv)
    from hyarch.spaces.loader import load_space

    start = time.perf_counter()
    space = load_space("theophylline")
    nlme = None if args.no_nlme else run_nlme(space.path.parent / space.spec.data.csv.path)
    ours = fit_all(space)
    prior = space.prior_path().read_text()
    runs = {"individual": heldout(space, "individual", prior),
            "pooled": heldout(space, "pooled", prior.replace(POOLED_MARK, "")),
            "hybrid": heldout(space, "hybrid", HYBRID),
            "covariate": heldout(space, "covariate", COVARIATE)}
    diff = None
    if nlme is not None:
        diff = max(abs(ours["fixed_effects"][n] / nlme["fixed_effects"][n] - 1) for n in NAMES)
    ind, pool = runs["individual"], runs["pooled"]
    wins = None
    if ind["status"] == pool["status"] == "ok":
        pairs = list(zip(ind["per_subject"], pool["per_subject"]))
        wins = sum(a < b for a, b in pairs)
    summary = {
        "fixed_effects": {"hyarch": ours["fixed_effects"],
                          "nlme": None if nlme is None else nlme["fixed_effects"]},
        "max_rel_diff_fixed_effects": diff,
        "omega": {"hyarch": ours["omega"], "nlme": None if nlme is None else nlme["omega"]},
        "sigma": {"hyarch": ours["sigma"], "nlme": None if nlme is None else nlme["sigma"]},
        "neg2loglik": {"hyarch": ours["neg2loglik"],
                       "nlme": None if nlme is None else nlme["neg2loglik"]},
        "heldout_mse_individual": ind.get("heldout_mse"),
        "heldout_mse_pooled": pool.get("heldout_mse"),
        "heldout_mse_hybrid": runs["hybrid"].get("heldout_mse"),
        "heldout_mse_covariate": runs["covariate"].get("heldout_mse"),
        "heldout_subjects_individual_better": wins,
        "heldout_nlme": None if nlme is None else {
            "individual": nlme["heldout_mse_individual"], "pooled": nlme["heldout_mse_pooled"]},
        "candidates": runs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print("fixed effects on all 132 observations (population medians)")
    print(f"{'':>10} {'hyarch':>10} {'nlme':>10} {'rel diff':>9}")
    for n in NAMES:
        a = ours["fixed_effects"][n]
        b = None if nlme is None else nlme["fixed_effects"][n]
        print(f"{n:>10} {a:>10.4f} {b if b is not None else float('nan'):>10.4f}"
              f" {abs(a / b - 1) if b else float('nan'):>9.2%}")
    for n in ("ka", "Cl"):
        b = None if nlme is None else nlme["omega"][n]
        print(f"{'omega ' + n:>10} {ours['omega'][n]:>10.4f}"
              f" {b if b is not None else float('nan'):>10.4f}")
    print(f"{'sigma':>10} {ours['sigma']:>10.4f}"
          f" {nlme['sigma'] if nlme else float('nan'):>10.4f}")
    print(f"{'-2 log L':>10} {ours['neg2loglik']:>10.3f}"
          f" {nlme['neg2loglik'] if nlme else float('nan'):>10.3f}")
    print("\nheld-out last observations (12 h and 24 h of every subject), MSE (mg/L)^2")
    print(f"{'candidate':>11} {'MSE':>8} {'AIC':>8} {'BIC':>8} {'estimated':>9} {'s':>6}")
    for label, r in runs.items():
        if r["status"] != "ok":
            print(f"{label:>11} failed: {r['reason']}")
            continue
        print(f"{label:>11} {r['heldout_mse']:>8.3f} {r['aic'] or float('nan'):>8.1f}"
              f" {r['bic'] or float('nan'):>8.1f} {r['n_estimated'] or 0:>9}"
              f" {r['seconds']:>6.0f}")
    if nlme is not None:
        print(f"{'nlme indiv.':>11} {nlme['heldout_mse_individual']:>8.3f}")
        print(f"{'nlme pooled':>11} {nlme['heldout_mse_pooled']:>8.3f}"
              "  (population prediction of the same fit)")
    if wins is not None:
        print(f"individual better than pooled on {wins} of {len(ind['per_subject'])} subjects'"
              " held-out observations")
    print(f"\n{summary['seconds']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
