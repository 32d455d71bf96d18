"""Equal-budget tuning: one Optuna study per loss (TPE, seeded), the same number of trials for each, every trial
scored on validation only (the mean over folds when several splits are given).

Trials are asked in rounds (`batch` per loss), and every (loss, trial, fold) training run of a round is an
independent job (wsi_ncmi.batch.jobs), so the search gives the same trials whatever --jobs is. A trial's runs are kept
under OUT/trials/, which makes a stopped search resumable: the seeded sampler proposes the same settings again,
and runs that finished are read back instead of trained (a run whose recorded settings differ is refused).
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsi_ncmi.batch.jobs import Job, Outcome, Workers
from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.core.folders import FolderError, make_parents
from wsi_ncmi.mil.space import SpaceError, TuneSettings

FORMAT_VERSION = 1
OUTPUTS = ("tune.yaml", "trials.csv", "trials")


class TuneError(WsiNcmiError):
    """A tuning folder or input that cannot be used; the message says what to do."""


@dataclass
class Trial:
    """One trial of one loss: its settings, each fold's metric, and the mean (None when a fold failed)."""

    loss: str
    number: int
    params: dict[str, Any]
    folds: list[float | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.loss}/trial_{self.number:03d}"

    @property
    def value(self) -> float | None:
        if not self.folds or any(v is None for v in self.folds):
            return None
        return float(sum(self.folds) / len(self.folds))  # type: ignore[arg-type]

    @property
    def failed(self) -> bool:
        return self.value is None


FoldJobs = Callable[[str, int, dict[str, Any]], list[Job]]
"""(loss, trial number, params) -> one job per fold; each job returns a mapping holding the metric."""



def _with_parents(out: Path | str) -> Path:
    """OUT with the folders above it created, as every command that writes a folder does."""
    try:
        return make_parents(out)
    except FolderError as exc:
        raise TuneError(str(exc)) from exc

def _sampler(settings: TuneSettings) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=settings.seed, constant_liar=settings.batch > 1)


def require_optuna() -> None:
    """A TuneError with the install line when Optuna is missing."""
    try:
        import optuna  # noqa: F401
    except ImportError as exc:
        raise TuneError("tuning needs Optuna: pip install 'wsi-ncmi[tune]'") from exc


def search(
    settings: TuneSettings,
    fold_jobs: FoldJobs,
    n_jobs: int = 1,
    scheduler: str | None = None,
    on_round: Callable[[list[Trial]], None] | None = None,
    workers: Workers | None = None,
) -> list[Trial]:
    """Run `settings.trials` trials for every loss, `settings.batch` per loss per round; returns every trial in
    the order asked. `on_round` sees all trials so far after each round (to write them out). The jobs run on
    `workers` when given (kept open by the caller), else on Workers(n_jobs, scheduler)."""
    require_optuna()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = {
        loss: optuna.create_study(direction=settings.direction, sampler=_sampler(settings)) for loss in settings.losses
    }
    done: list[Trial] = []
    with nullcontext(workers) if workers is not None else Workers(n_jobs, scheduler) as running:
        while len(done) < settings.trials * len(settings.losses):
            _round(settings, studies, fold_jobs, running, done)
            if on_round is not None:
                on_round(done)
    return done


def _round(
    settings: TuneSettings, studies: dict[str, Any], fold_jobs: FoldJobs, workers: Workers, done: list[Trial]
) -> None:
    """Ask each loss's next `batch` trials, run all their folds as jobs, tell the studies, append to `done`."""
    import optuna

    asked: list[tuple[Any, Trial, list[Job]]] = []
    for loss in settings.losses:
        count = sum(t.loss == loss for t in done)
        for _ in range(min(settings.batch, settings.trials - count)):
            handle = studies[loss].ask()
            params = {p.key: p.suggest(handle) for p in settings.params_for(loss)}
            trial = Trial(loss, handle.number, params)
            asked.append((handle, trial, fold_jobs(loss, handle.number, params)))
    outcomes = iter(workers.run([job for *_, jobs in asked for job in jobs], "trials"))
    for handle, trial, jobs in asked:
        for _ in jobs:
            _score(trial, next(outcomes), settings.metric)
        if trial.failed:
            studies[trial.loss].tell(handle, state=optuna.trial.TrialState.FAIL)
        else:
            studies[trial.loss].tell(handle, trial.value)
        done.append(trial)


def _score(trial: Trial, outcome: Outcome, metric: str) -> None:
    """Add one fold's outcome to its trial: the metric, or why there is none."""
    trial.seconds += outcome.seconds
    if outcome.failed:
        trial.folds.append(None)
        trial.errors.append(f"{outcome.name}: {outcome.error}")
        return
    value = outcome.value.get(metric) if isinstance(outcome.value, dict) else None
    if value is None or not math.isfinite(float(value)):
        trial.folds.append(None)
        trial.errors.append(f"{outcome.name}: {metric} is {value} at the selected epoch")
        return
    trial.folds.append(float(value))


def best_trials(trials: Sequence[Trial], settings: TuneSettings) -> dict[str, Trial]:
    """Per loss, the completed trial with the best mean metric (ties: the earlier trial); losses whose trials all
    failed are left out."""
    sign = 1.0 if settings.direction == "maximize" else -1.0
    best: dict[str, Trial] = {}
    for trial in trials:
        if trial.failed:
            continue
        current = best.get(trial.loss)
        if current is None or sign * trial.value > sign * current.value:  # type: ignore[operator]
            best[trial.loss] = trial
    return best


def trials_table(trials: Sequence[Trial], settings: TuneSettings) -> Any:
    """trials.csv: loss, trial, state, the mean metric, each fold's, every searched setting, seconds, errors."""
    import pandas as pd

    folds = max((len(t.folds) for t in trials), default=0)
    rows = []
    for t in trials:
        row: dict[str, Any] = {"loss": t.loss, "trial": t.number, "state": "failed" if t.failed else "complete"}
        row[settings.metric] = t.value
        row.update({f"fold_{k}": (t.folds[k] if k < len(t.folds) else None) for k in range(folds)})
        row.update({p.key: t.params.get(p.key) for p in settings.space})
        row.update(seconds=round(t.seconds, 2), error=" | ".join(t.errors))
        rows.append(row)
    return pd.DataFrame(rows)


# The command: runs on files, results written like a run folder.


@dataclass(frozen=True)
class TuneInputs:
    manifest: Path
    features: Path
    splits: tuple[Path, ...]


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def provenance(settings: TuneSettings, inputs: TuneInputs) -> dict[str, Any]:
    """OUT/tune.yaml: the resolved search (space, seed, trials, losses, metric), inputs and their checksums."""
    import optuna

    import wsi_ncmi

    return {
        "format_version": FORMAT_VERSION,
        "code_version": wsi_ncmi.__version__,
        "optuna_version": optuna.__version__,
        "sampler": "TPESampler" + (" (constant liar)" if settings.batch > 1 else ""),
        "search": settings.record(),
        "direction": settings.direction,
        "inputs": {
            "manifest": str(Path(inputs.manifest).resolve()),
            "features": str(Path(inputs.features).resolve()),
            "splits": [str(Path(s).resolve()) for s in inputs.splits],
        },
        "cohort": {
            "manifest_sha256": _sha256(inputs.manifest),
            "splits_sha256": [_sha256(s) for s in inputs.splits],
        },
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The parts of two provenance records that make a search resumable only from scratch (trials may grow)."""
    out = []
    for section in ("search", "inputs", "cohort"):
        before, after = dict(old.get(section) or {}), dict(new.get(section) or {})
        before.pop("trials", None)
        after.pop("trials", None)
        out += [f"{section}.{k}" for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return out


def prepare_out(out: Path, record: dict[str, Any], overwrite: bool) -> str:
    """Make OUT ready: new, resumed (same search and inputs), or cleared with --overwrite; returns which."""
    import shutil

    import yaml

    from wsi_ncmi.core.atomic import atomic_path

    out = _with_parents(out)
    if out.exists() and not out.is_dir():
        raise TuneError(f"{out}: exists and is not a folder; choose another --out")
    state = "new"
    previous = out / "tune.yaml"
    if overwrite:
        for path in [out / name for name in OUTPUTS] + sorted(out.glob("best_*.yaml")):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    elif previous.exists():
        from wsi_ncmi.core.config import load_yaml

        differ = _differences(load_yaml(previous), yaml.safe_load(yaml.safe_dump(record)))
        if differ:
            raise TuneError(
                f"{out}: holds a search with other settings ({', '.join(differ)} differ); pass --overwrite to start "
                "again or choose another --out"
            )
        state = "resumed"
    elif out.is_dir() and any(out.iterdir()):
        raise TuneError(f"{out}: folder is not empty and holds no tune.yaml; choose another --out")
    out.mkdir(exist_ok=True)
    with atomic_path(previous) as tmp:
        Path(tmp).write_text(yaml.safe_dump(record, sort_keys=False))
    return state


def check_trial_settings(settings: TuneSettings) -> None:
    """Build every loss's training settings with each end of every range and every choice (the model on 64-d
    features), so a setting that the training loop, model or head refuses stops the search before anything is
    written; the first refused setting of each loss is named."""
    from wsi_ncmi.mil.run import check_trainable
    from wsi_ncmi.mil.runfolder import RunError
    from wsi_ncmi.mil.train import TrainConfig

    problems: list[str] = []
    for loss in settings.losses:
        params = settings.params_for(loss)
        base = {p.key: p.probes()[0] for p in params}
        probes = [base] + [{**base, p.key: value} for p in params for value in p.probes()[1:]]
        for probe in probes:
            try:
                config = TrainConfig.from_dict(settings.trial_settings(loss, probe))
                check_trainable(config, 64, config.classes or ["a", "b"])
            except (ValueError, TypeError, RunError) as exc:
                message = f"{loss} with {probe}: {' '.join(str(exc).split())}"
                if message not in problems:
                    problems.append(message)
                break
    if problems:
        raise SpaceError("settings the training refuses: " + "; ".join(problems))


def fold_run(spec: Any) -> dict[str, Any]:
    """Train (or read back) one trial's run on one fold; the selected epoch's history row. A run folder whose
    recorded settings are not this trial's is refused, so a resumed search never mixes two searches."""
    import yaml

    from wsi_ncmi.core.config import load_yaml
    from wsi_ncmi.mil.trainjobs import train_or_resume

    saved = spec.run / "config.yaml"
    if saved.exists():
        wanted = yaml.safe_load(yaml.safe_dump(asdict(spec.config)))
        if load_yaml(saved).get("training") != wanted:
            raise TuneError(
                f"{spec.run}: holds a run with other settings than this trial's (the sampler proposed other "
                "values); start the search again with --overwrite"
            )
    summary = train_or_resume(spec)
    return {**summary.selected(), "state": summary.state}


def tune(
    settings: TuneSettings,
    inputs: TuneInputs,
    out: Path,
    n_jobs: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    console: Any = None,
) -> tuple[list[Trial], dict[str, Path]]:
    """Search, then write OUT/trials.csv (after every round) and OUT/best_{loss}.yaml (a training config for
    `wsi-ncmi train --config`); returns the trials and the best-config paths."""
    from rich.console import Console

    from wsi_ncmi.core.locks import LockedError, acquire_lock, release_lock

    require_optuna()
    console = console or Console(highlight=False)
    check_trial_settings(settings)
    missing = [str(p) for p in (inputs.manifest, inputs.features, *inputs.splits) if not Path(p).exists()]
    if missing:
        raise TuneError(f"not found: {', '.join(missing)}")
    out = _with_parents(out)
    try:
        lock = acquire_lock(out.parent / f".{out.name}")
    except LockedError as exc:
        raise TuneError(
            f"{out}: another `wsi-ncmi tune` is writing this folder ({exc}); wait or use another --out"
        ) from exc
    try:
        return _tune(settings, inputs, out, n_jobs, scheduler, overwrite, console)
    finally:
        release_lock(lock)


def _tune(
    settings: TuneSettings,
    inputs: TuneInputs,
    out: Path,
    n_jobs: int | None,
    scheduler: str | None,
    overwrite: bool,
    console: Any,
) -> tuple[list[Trial], dict[str, Path]]:
    from wsi_ncmi.batch.jobs import default_jobs
    from wsi_ncmi.core.atomic import atomic_path
    from wsi_ncmi.mil.train import TrainConfig
    from wsi_ncmi.mil.trainjobs import TrainSpec

    state = prepare_out(out, provenance(settings, inputs), overwrite)
    per_round = len(settings.losses) * min(settings.batch, settings.trials) * len(inputs.splits)
    n_jobs = n_jobs or default_jobs(per_round)
    console.print(
        f"{'resuming' if state == 'resumed' else 'tuning'} {', '.join(settings.losses)}: {settings.trials} trial(s) "
        f"each, {len(settings.space)} setting(s) searched, {len(inputs.splits)} fold(s), {settings.metric} on "
        f"validation; {n_jobs} job(s) at once{f' on {scheduler}' if scheduler else ''}"
    )

    def fold_jobs(loss: str, number: int, params: dict[str, Any]) -> list[Job]:
        config = TrainConfig.from_dict(settings.trial_settings(loss, params))
        folder = out / "trials" / loss / f"trial_{number:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        return [
            Job(
                f"{loss}/trial_{number:03d}/fold_{k}",
                fold_run,
                (TrainSpec(inputs.manifest, inputs.features, split, folder / f"fold_{k}", config),),
            )
            for k, split in enumerate(inputs.splits)
        ]

    def write(trials: list[Trial]) -> None:
        with atomic_path(out / "trials.csv") as tmp:
            trials_table(trials, settings).to_csv(tmp, index=False, float_format="%.6g")
        last = trials[-1]
        console.print(
            f"round done: {len(trials)}/{settings.trials * len(settings.losses)} trials; {last.name} "
            + ("failed" if last.failed else f"{settings.metric} {last.value:.4f}")
        )

    started = time.perf_counter()
    trials = search(settings, fold_jobs, n_jobs, scheduler, write)
    best = write_best(trials, settings, out, time.perf_counter() - started)
    return trials, best


def write_best(trials: Sequence[Trial], settings: TuneSettings, out: Path, seconds: float) -> dict[str, Path]:
    """OUT/best_{loss}.yaml for every loss with a completed trial: the resolved training settings, headed by a
    comment naming the trial and its validation figure."""
    import yaml

    from wsi_ncmi.core.atomic import atomic_path
    from wsi_ncmi.mil.train import TrainConfig

    paths = {}
    for loss, trial in best_trials(trials, settings).items():
        config = TrainConfig.from_dict(settings.trial_settings(loss, trial.params))
        completed = sum(t.loss == loss and not t.failed for t in trials)
        header = (
            f"# Chosen by wsi-ncmi tune: {trial.name}, the best of {completed} completed trial(s) of {settings.trials}"
            f" by {settings.metric} = {trial.value:.6g} on validation"
            + (f" (mean over {len(trial.folds)} folds)" if len(trial.folds) > 1 else "")
            + f"; search settings in tune.yaml; {seconds:.0f} s in all.\n"
            "# Use it as it is: wsi-ncmi train --config THIS_FILE ...\n"
        )
        path = out / f"best_{loss}.yaml"
        with atomic_path(path) as tmp:
            Path(tmp).write_text(header + yaml.safe_dump(asdict(config), sort_keys=False))
        paths[loss] = path
    return paths
