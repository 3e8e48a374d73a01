"""Hyperparameter search on inner folds (Optuna's ask/tell in Hydra's sweeper slot): `hparams_search=<name>`.

    python train.py experiment=speech data=ravdess data.root=DIR hparams_search=speech_optuna
    python train.py experiment=speech data=ravdess data.root=DIR hparams_search=speech_optuna hydra.sweeper.n_trials=40
    python -m cremad_lit baseline data=ravdess data.root=DIR hparams_search=linear_optuna hydra/launcher=parallel

A trial is one point of the search space (conf/hparams_search/*.yaml, `hydra.sweeper.params` in Hydra's sweep
grammar: choice, range, interval, tag(log, ...)). It is trained on each of K inner folds of the training speakers
(`split.inner_folds=K split.inner_fold=j`, the nested protocol of data/splits.py: the split's test speakers and the
lockbox are never in them), each fold a normal run folder `<sweep>/trial-NNN/fold-j`, and its value is the mean of the
folds' inner-test metric (accuracy or UAR) read back from their metrics.json, with its spread. After each fold the
running mean goes to the pruner: a trial that is clearly worse stops there, recorded as pruned. The study lives in
SQLite in the sweep folder (`optuna.db`); the same command again resumes it: finished trials are kept, a trial that
was running when the sweep died is marked failed (interrupted, not counted) and its point reruns first, and
`hydra.sweeper.n_trials` is the number the study holds in all. `hydra.sweeper.n_jobs` trials run at a time: their
folds go to the launcher together (hydra/launcher=parallel on one machine, hydra/launcher=slurm on a cluster).
The sweep folder gets search.json, search.md (best trials, fold means and spreads, which parameters mattered, the
command that trains the best point) and history.png / importance.png. `python -m cremad_lit select` accepts a search
as a candidate: the search then runs inside each outer fold, and its outer numbers estimate the search *procedure*.
"""

from __future__ import annotations

import fcntl
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from cremad_lit.io import write_json, write_text

log = logging.getLogger(__name__)
METRICS = ("accuracy", "uar")
# A trial's folds decide it: its fold scores and runs are kept on the trial (user attributes, read by search.md).
FOLD_SCORES, RUNS, ERROR, RERUN_OF = "fold_scores", "runs", "error", "rerun_of"
INTERRUPTED = "interrupted_trials"  # study attribute: trials a killed sweep left running (not counted, rerun)
ARGUMENTS = (
    "arguments"  # study attribute: the fixed overrides every trial runs with (a resumed study must match)
)


def override_text(value) -> str:
    """A value as Hydra's override grammar writes it (lists and dicts included)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(override_text(v) for v in value) + "]"
    if isinstance(value, (dict, DictConfig)):
        return "{" + ",".join(f"{k}:{override_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def distributions(params: dict, arguments: list[str]) -> tuple[dict, list[str], list[str]]:
    """The search space (key -> Optuna distribution) from `params` and any sweep on the command line; the fixed
    values among `params` (pinned: part of every point); the command line's fixed overrides."""
    import optuna.distributions as d
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    parser = OverridesParser.create()
    space, pinned, fixed = {}, [], []
    swept = [f"{key}={value}" for key, value in params.items()]
    texts = [*swept, *arguments]
    for index, (text, override) in enumerate(zip(texts, parser.parse_overrides(texts), strict=True)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            (pinned if index < len(swept) else fixed).append(text)
            continue
        sweep = override.value()
        log_scale = "log" in sweep.tags
        if isinstance(sweep, ChoiceSweep):
            # Optuna keeps primitive choices; a list or dict choice (a network's channels) is kept as its text.
            choices = [
                v if isinstance(v, (str, int, float, bool)) or v is None else override_text(v)
                for v in sweep.list
            ]
            space[key] = d.CategoricalDistribution(choices)
        elif isinstance(sweep, RangeSweep):
            values = list(override.sweep_iterator())
            if all(isinstance(v, int) for v in values):
                space[key] = d.IntDistribution(
                    int(sweep.start), int(values[-1]), step=int(sweep.step), log=log_scale
                )
            else:
                space[key] = d.CategoricalDistribution(values)
        elif isinstance(sweep, IntervalSweep):
            if isinstance(sweep.start, int) and isinstance(sweep.end, int) and "float" not in sweep.tags:
                space[key] = d.IntDistribution(sweep.start, sweep.end, log=log_scale)
            else:
                space[key] = d.FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale)
        else:
            raise ValueError(f"{text}: not a search dimension the search knows (choice, range, interval)")
    clash = {o.split("=", 1)[0].lstrip("+~") for o in fixed} & {*space, *(o.split("=", 1)[0] for o in pinned)}
    if clash:
        raise ValueError(
            f"{sorted(clash)} set by the search (hydra.sweeper.params) and also fixed on the command line: "
            "give hydra.sweeper.params.KEY=VALUE instead"
        )
    for owned in ("split.inner_folds", "split.inner_fold"):
        if any(o.split("=", 1)[0].lstrip("+~") == owned for o in fixed):
            raise ValueError(
                f"{owned} is set by the search itself (hydra.sweeper.inner_folds), not on the command line"
            )
    return space, pinned, fixed


def point_overrides(params: dict) -> list[str]:
    return [f"{key}={override_text(value)}" for key, value in params.items()]


class FoldSearch:
    """One sweep of a study: ask points, score each on the inner folds, tell the study; then write the reports."""

    def __init__(self, settings: dict, config: DictConfig, launcher, validate) -> None:
        self.s = {
            k: (OmegaConf.to_container(v) if isinstance(v, (DictConfig, ListConfig)) else v)
            for k, v in settings.items()
        }
        self.config, self.launcher, self.validate = config, launcher, validate
        self.dir = Path(config.hydra.sweep.dir).resolve()
        self.metric = str(self.s.get("metric", "accuracy"))
        self.folds = int(self.s.get("inner_folds", 3))
        self.job = 0
        self.pinned: list[str] = []
        if self.metric not in METRICS:
            raise ValueError(f"hydra.sweeper.metric must be one of {METRICS}, not {self.metric!r}")
        if self.folds < 2:
            raise ValueError(
                "hydra.sweeper.inner_folds must be 2 or more: the objective is a mean over inner folds"
            )
        split = config.get("split")
        if split is None or not split.get("folds") or split.get("by", "actor") != "actor":
            raise ValueError(
                "a search runs on inner folds of actor folds: give split.folds=K (and split.fold=i, the outer fold "
                "whose test speakers it never sees); conf/hparams_search/*.yaml set split.folds=5"
            )

    # -- the study --
    def study(self, fixed: list[str]):
        import optuna

        storage = self.s.get("storage") or f"sqlite:///{self.dir / 'optuna.db'}"
        study = optuna.create_study(
            study_name=str(self.s.get("study_name") or "search"),
            storage=storage,
            sampler=self.s.get("sampler"),
            pruner=self.s.get("pruner") or optuna.pruners.NopPruner(),
            direction=str(self.s.get("direction", "maximize")),
            load_if_exists=True,
        )
        task = [str(self.config.task_name), *sorted(fixed)]
        before = study.user_attrs.get(ARGUMENTS)
        if before is None:
            study.set_user_attr(ARGUMENTS, task)
            study.set_user_attr("metric", self.metric)
            study.set_user_attr("inner_folds", self.folds)
        elif (
            before != task
            or study.user_attrs.get("metric") != self.metric
            or study.user_attrs.get("inner_folds") != self.folds
        ):
            raise ValueError(
                f"study {study.study_name!r} in {self.dir} was run as {before} ({study.user_attrs.get('metric')} over "
                f"{study.user_attrs.get('inner_folds')} inner folds), not as {task} ({self.metric} over {self.folds}): "
                "its trials would not compare. Give another hydra.sweeper.study_name or hydra.sweep.dir"
            )
        return study

    @staticmethod
    def requeue_interrupted(study) -> None:
        """Trials a killed sweep left running: failed (not counted), their points asked again first."""
        from optuna.trial import TrialState

        interrupted = list(study.user_attrs.get(INTERRUPTED, []))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
            interrupted.append(trial.number)
            study.set_user_attr(INTERRUPTED, interrupted)
            study.enqueue_trial(trial.params, user_attrs={RERUN_OF: trial.number})
            log.info("trial %d was interrupted: failed, not counted; its point runs again", trial.number)

    @staticmethod
    def held(study) -> int:
        """Trials the study holds: finished, pruned or failed, not those a killed sweep interrupted."""
        from optuna.trial import TrialState

        interrupted = set(study.user_attrs.get(INTERRUPTED, []))
        done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return sum(t.state in done and t.number not in interrupted for t in study.get_trials(deepcopy=False))

    # -- one round of trials --
    def run_dir(self, trial_number: int, fold: int) -> Path:
        return self.dir / f"trial-{trial_number:03d}" / f"fold-{fold}"

    def job_overrides(self, trial, fold: int, fixed: list[str]) -> list[str]:
        return [
            *fixed,
            *self.pinned,
            *point_overrides(trial.params),
            f"split.inner_folds={self.folds}",
            f"split.inner_fold={fold}",
            f"hydra.sweep.subdir={self.run_dir(trial.number, fold).relative_to(self.dir)}",
        ]

    def score(self, trial, fold: int, result) -> float:
        import json

        result.return_value  # noqa: B018  (raises the job's own error when it failed)
        run = self.run_dir(trial.number, fold)
        metrics = json.loads((run / "metrics.json").read_text())
        nested = (metrics.get("protocol") or {}).get("nested") or {}
        if nested.get("inner_fold") != fold:
            raise RuntimeError(f"{run}: metrics.json is not inner fold {fold}'s run ({nested})")
        return float(metrics[self.metric])

    def run_trials(self, study, trials: list, fixed: list[str]) -> None:
        from optuna.trial import TrialState

        scores: dict[int, list[float]] = {t.number: [] for t in trials}
        active = list(trials)
        for fold in range(self.folds):
            if not active:  # every trial of the round pruned or failed
                break
            batch = [self.job_overrides(t, fold, fixed) for t in active]
            self.validate(batch)
            results = self.launcher.launch(batch, initial_job_idx=self.job)
            self.job += len(batch)
            still = []
            for trial, result in zip(active, results, strict=True):
                runs = [str(self.run_dir(trial.number, j)) for j in range(fold + 1)]
                trial.set_user_attr(RUNS, runs)
                # A failed fold fails its trial; max_failure_rate decides whether the search goes on.
                try:
                    scores[trial.number].append(self.score(trial, fold, result))
                except Exception as error:
                    trial.set_user_attr(ERROR, f"fold {fold}: {type(error).__name__}: {error}"[:2000])
                    study.tell(trial, state=TrialState.FAIL)
                    log.error("trial %d failed on inner fold %d: %s", trial.number, fold, error)
                    continue
                trial.set_user_attr(FOLD_SCORES, scores[trial.number])
                running = float(np.mean(scores[trial.number]))
                trial.report(running, fold)
                if fold < self.folds - 1 and trial.should_prune():
                    study.tell(trial, state=TrialState.PRUNED)
                    log.info(
                        "trial %d pruned after %d folds: running %s %.3f",
                        trial.number,
                        fold + 1,
                        self.metric,
                        running,
                    )
                    continue
                still.append(trial)
            active = still
        for trial in active:
            values = scores[trial.number]
            trial.set_user_attr("std", float(np.std(values, ddof=1)))
            study.tell(trial, float(np.mean(values)))
            log.info(
                "trial %d: %s %.3f ± %.3f over %d inner folds %s",
                trial.number,
                self.metric,
                np.mean(values),
                np.std(values, ddof=1),
                self.folds,
                trial.params,
            )

    def check_failures(self, study) -> None:
        from optuna.trial import TrialState

        interrupted = set(study.user_attrs.get(INTERRUPTED, []))
        trials = [t for t in study.get_trials(deepcopy=False) if t.number not in interrupted]
        failed = [t for t in trials if t.state == TrialState.FAIL]
        if failed and len(failed) / len(trials) > float(self.s.get("max_failure_rate", 0.0)):
            last = failed[-1]
            raise RuntimeError(
                f"trial {last.number} failed ({last.user_attrs.get(ERROR)}); {len(failed)} of {len(trials)} trials "
                f"failed, more than hydra.sweeper.max_failure_rate={self.s.get('max_failure_rate', 0.0)}: search "
                f"stopped (its study is kept in {self.dir})"
            )

    def run(self, arguments: list[str]) -> dict:
        space, self.pinned, fixed = distributions(dict(self.s.get("params") or {}), list(arguments))
        if not space:
            raise ValueError("nothing to search: hydra.sweeper.params is empty (see conf/hparams_search/)")
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "search.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(
                    f"another sweep is running this study ({self.dir}): one at a time"
                ) from None
            study = self.study([*fixed, *self.pinned])
            self.requeue_interrupted(study)
            target = int(self.s.get("n_trials", 20))
            self.check_failures(study)
            while (left := target - self.held(study)) > 0:
                trials = [study.ask(space) for _ in range(min(int(self.s.get("n_jobs", 1)), left))]
                self.run_trials(study, trials, fixed)
                self.check_failures(study)
            summary = summarise(study, self.config, fixed, self.pinned, self.dir)
        log.info("search done: %s", self.dir / "search.md")
        return summary


def summarise(study, config: DictConfig, fixed: list[str], pinned: list[str], out: Path) -> dict:
    """search.json, search.md and the plots, from the study alone (any finished or resumed sweep)."""

    interrupted = set(study.user_attrs.get(INTERRUPTED, []))
    metric, folds = study.user_attrs["metric"], study.user_attrs["inner_folds"]
    trials = []
    for t in study.get_trials(deepcopy=False):
        state = "interrupted" if t.number in interrupted else t.state.name.lower()
        trials.append(
            {
                "number": t.number,
                "state": state,
                "params": t.params,
                "value": t.value,
                "std": t.user_attrs.get("std"),
                "fold_scores": t.user_attrs.get(FOLD_SCORES, []),
                "runs": t.user_attrs.get(RUNS, []),
                "error": t.user_attrs.get(ERROR),
                "rerun_of": t.user_attrs.get(RERUN_OF),
            }
        )
    complete = [t for t in trials if t["state"] == "complete"]
    maximise = study.direction.name == "MAXIMIZE"
    best = None
    if complete:
        top = study.best_trial
        best = next(t for t in trials if t["number"] == top.number)
        best = {**best, "overrides": [*pinned, *point_overrides(top.params)]}  # all the search set
    result = {
        "study": study.study_name,
        "task": str(config.task_name),
        "metric": metric,
        "direction": "maximize" if maximise else "minimize",
        "inner_folds": folds,
        "fixed": fixed,
        "split": {
            "folds": int(config.split.folds),
            "fold": int(config.split.fold),
        },  # the outer fold searched in
        "counts": {
            s: sum(t["state"] == s for t in trials) for s in ("complete", "pruned", "fail", "interrupted")
        },
        "best": best,
        "importance": importance(study),
        "trials": trials,
    }
    plots(study, out)
    write_json(out / "search.json", result)
    write_text(out / "search.md", markdown(result))
    return result


def importance(study) -> dict | str:
    """Which parameters mattered (Optuna's fANOVA importances), or why that could not be said."""
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except Exception as error:  # too few finished trials, or no parameter that varied
        return f"not computed: {error}"


def plots(study, out: Path) -> None:
    """history.png (every trial's value and the best so far) and importance.png, with Optuna's matplotlib plots."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization.matplotlib as views

    from cremad_lit.plots import save_figure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the plots are marked experimental
        for name, draw in (
            ("history", views.plot_optimization_history),
            ("importance", views.plot_param_importances),
        ):
            try:
                axes = draw(study)
            except Exception as error:  # importance needs two finished trials with a varying parameter
                log.info("%s.png not drawn: %s", name, error)
                continue
            save_figure(axes.figure, out / f"{name}.png")


def markdown(result: dict, top: int = 10) -> str:
    sign = 1 if result["direction"] == "maximize" else -1
    complete = sorted(
        (t for t in result["trials"] if t["state"] == "complete"), key=lambda t: -sign * t["value"]
    )
    counts = result["counts"]
    lines = [
        f"# Search {result['study']}: {result['metric']} over {result['inner_folds']} inner folds ({result['direction']})",
        "",
        f"Every trial is scored on inner folds of the training speakers only (the split's test speakers and the lockbox "
        f"are never in them). Trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed"
        + (f", {counts['interrupted']} interrupted (rerun, not counted)" if counts["interrupted"] else "")
        + ". The best value is the maximum of many noisy means: expect less on new people "
        "(`python -m cremad_lit select` measures the search procedure itself).",
        "",
        "| trial | mean | spread (std over folds) | folds | parameters |",
        "| ---: | ---: | ---: | --- | --- |",
    ]
    for t in complete[:top]:
        folds = ", ".join(f"{s:.3f}" for s in t["fold_scores"])
        params = ", ".join(
            f"{k}={override_text(v) if not isinstance(v, float) else f'{v:.4g}'}"
            for k, v in t["params"].items()
        )
        lines.append(f"| {t['number']} | {t['value']:.3f} | {t['std']:.3f} | {folds} | {params} |")
    if isinstance(result["importance"], dict):
        lines += [
            "",
            f"Which parameters mattered (fANOVA importance over the {counts['complete']} complete trials, shares of the "
            "objective's variance; few trials make it rough):",
            "",
        ]
        lines += [f"- `{k}`: {v:.2f}" for k, v in result["importance"].items()]
    else:
        lines += ["", f"Parameter importance {result['importance']}."]
    if result["best"]:
        kept = [o for o in result["fixed"] if o.split("=", 1)[0].lstrip("+~") != "hparams_search"]
        keys = {o.split("=", 1)[0].lstrip("+~") for o in kept}
        kept += [f"split.{k}={result['split'][k]}" for k in ("folds", "fold") if f"split.{k}" not in keys]
        command = "python -m cremad_lit " + " ".join([result["task"], *kept, *result["best"]["overrides"]])
        lines += [
            "",
            "The best point, trained on all the split's training speakers and tested on its test speakers:",
            "",
            f"    {command}",
        ]
    lines += ["", "![history](history.png)", "", "![importance](importance.png)"]
    return "\n".join(lines) + "\n"


def read_search(sweep_dir: str | os.PathLike) -> dict:
    """search.json of a finished search (select reads its best point)."""
    import json

    return json.loads((Path(sweep_dir) / "search.json").read_text())
