"""A race: seeds spent where they decide.

Every loss starts with the suite's seeds (at least :data:`~lossbench.report.stats.SEED_LEVEL_MIN`);
each later round of the schedule (:func:`lossbench.plan.race_schedule`: the seeds per loss double up
to ``race.max_seeds``) trains more seeds only for the losses still in the best set, and rules out
those another loss beats beyond chance at that round's share of ``α``
(:func:`~lossbench.report.stats.race_alphas`). A loss ruled out stays out, with the seeds it had;
it still counts as a comparator for the others. The race ends when one loss is left, the schedule is
done, the next round would pass ``race.max_runs``, or — at the pace of the rounds so far, read from the
runs' records — it would end past ``race.max_minutes``.

:func:`run_race` decides from scores alone — it is the same function for the report (scores from the
runs' evidence, :func:`lossbench.report.analyse.race_of`), for ``compare`` (which trains what
``Race.next`` asks for), and for the tests' simulated suites — so what ``compare`` trained and
what the report shows can never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from lossbench.progress import fmt_time, plural
from lossbench.report.stats import SEED, LossScores, RuledOut, best_set, race_alphas


@dataclass
class Round:
    """One round: the seeds per loss of the losses racing in it, its level, and who it ruled out."""

    seeds: int
    alpha: float
    racing: list[str]  # in the race when the round was judged
    ruled_out: dict[str, RuledOut]
    runs: int  # runs the round added (for the first round: every loss's seeds)
    seconds: float = 0.0  # the time its runs trained: while at least one of them was running (0: not recorded)


@dataclass
class Race:
    """The rounds judged so far, who is still in, and what to train next."""

    schedule: list[int]
    rounds: list[Round] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # still in the best set
    next: tuple[list[str], int] | None = None  # (losses, seeds per loss) the next round trains
    ended: str = ""  # why the race stopped ("" while a round waits for its runs)
    stopped_by_budget: bool = False  # ended by max_runs or max_minutes with more than one loss left

    @property
    def ruled_out(self) -> dict[str, RuledOut]:
        """Every loss ruled out, in any round."""
        return {k: v for r in self.rounds for k, v in r.ruled_out.items()}

    @property
    def runs(self) -> int:
        return sum(r.runs for r in self.rounds)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rounds)

    def round_of(self, loss: str) -> int | None:
        """The round (1-based) that ruled ``loss`` out."""
        return next((i for i, r in enumerate(self.rounds, 1) if loss in r.ruled_out), None)


def run_race(losses: Sequence[str], schedule: Sequence[int], attempted: Mapping[str, int],
             scores: Callable[[str, int], LossScores], alpha: float = 0.05, max_runs: int | None = None,
             level: str = SEED, max_minutes: float | None = None,
             seconds: Callable[[Mapping[str, tuple[int, int]]], float] | None = None) -> Race:  # fmt: skip
    """Judge the race's rounds whose runs exist, and say what the next round trains.

    ``attempted[loss]``: how many of the race's seeds of ``loss`` have ended (succeeded or failed), in the
    order the race adds them; ``scores(loss, n)``: the loss's scores from its first ``n`` seeds (the failed
    ones leave NaN, as everywhere in the report). A round is judged once every loss racing in it has its
    seeds; the levels are fixed by the whole ``schedule`` in advance, so an unfinished race spends no more
    than a finished one (and one stopped by its budget, less). ``seconds({loss: (first, end)})``: the wall time
    of those runs (seed indices ``first`` to ``end - 1`` of each loss), from their records — with ``max_minutes``,
    the next round is trained only when the rounds so far, at their pace in seconds per run, leave room for it;
    the records decide, so a rerun decides the same."""
    schedule = list(schedule)
    alphas = race_alphas(schedule, alpha)
    race = Race(schedule, left=list(losses))
    have = dict.fromkeys(losses, 0)
    spent = 0
    for r, (n, a) in enumerate(zip(schedule, alphas)):
        racing = list(race.left)
        added = sum(n - have[k] for k in racing)
        lacking = [k for k in racing if attempted.get(k, 0) < n]
        if lacking:  # a budget only stops a round that still has runs to train: runs that exist are always judged
            what = f"the next round ({plural(added, 'run')}: {n} seeds for each of the {plural(len(racing), 'loss', 'losses')} left)"
            if r and max_runs is not None and spent + added > max_runs:
                race.ended = f"{what} would pass race.max_runs ({max_runs}; {spent} trained)"
                race.stopped_by_budget = True
                return race
            took = race.seconds
            more = added * took / spent if spent else 0.0  # the next round at the pace of the rounds so far
            if r and max_minutes is not None and took > 0 and took + more > 60 * max_minutes:
                need = math.ceil((took + more) / 60)
                race.ended = (f"{what} would take about {fmt_time(more)} at the pace of the rounds so far ({fmt_time(took)} "
                              f"of training for {plural(spent, 'run')}), past race.max_minutes ({max_minutes:g}); "
                              f"race.max_minutes: {need} gives it the time")  # fmt: skip
                race.stopped_by_budget = True
                return race
            race.next = (lacking, n)
            return race
        took = seconds({k: (have[k], n) for k in racing}) if seconds is not None else 0.0
        for k in racing:
            have[k] = n
        spent += added
        now = {k: scores(k, have[k]) for k in losses}
        out = best_set(now, level, a, candidates=racing, comparators=racing)
        race.rounds.append(Round(n, a, racing, out, added, took))
        race.left = [k for k in racing if k not in out]
        if len(race.left) <= 1:
            race.ended = "one loss left" if race.left else "no loss left"
            return race
    race.ended = f"the schedule's last round ({schedule[-1]} seeds per loss) is done"
    return race
