"""Runs a history against a `System` and holds every answer to the `Model`.

`Runner(system, seed, steps).run()` plays the steps in order (each after its `dt` of the
history's time), sends the requests through chalice's test client against app.py (so the answers
are the real HTTP answers), turns every 202 into model commands (their op_ids from what the
stream took), injects the faults, checks each answer at once, and at the end heals every fault,
loads everything, and checks the final state: every row against last-writer-wins, the ledger
against what was delivered, and a last read of everything. `Outcome.message()` names the seed,
the step and the check of the first problem, and how to replay it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from random import Random
from typing import Any

from tests.histories.model import Cmd, Key, Model, Problem, View
from tests.histories.steps import CALLERS, Step
from tests.histories.system import CACHE_TTL_SECONDS, CONCURRENT_TIMEOUT, PENDING_TTL_SECONDS, Obj, System, seeded_ids
from tests.integration.faults import Workload

OWNERS = ("hist-ann", "hist-bo", "hist-cy-\u00fc")[:CALLERS]
MIN_VERSION_LEAD_US = 5_000_000  # the contract's bound on how far ahead a min_version may be


@dataclass(frozen=True)
class Violation:
    step_no: int  # 0: the final checks
    step: str
    check: str
    message: str


@dataclass
class Outcome:
    seed: int
    tier: str
    steps: list[Step]
    ran: int = 0
    violations: list[Violation] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    replay: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations

    def checks(self) -> list[str]:
        return list(dict.fromkeys(v.check for v in self.violations))

    def message(self, context: int = 12) -> str:
        """The seed; the first problem with its step, check and the steps before it; the first
        problem of every other check that failed; how to replay it."""
        head = f"history seed={self.seed} tier={self.tier}: "
        if self.ok:
            return head + f"no problem in {self.ran} steps; {counts_line(self.counts)}"
        first = self.violations[0]
        lines = [
            head + f"{len(self.violations)} problem(s), checks failing: {', '.join(self.checks())}",
            f"first, at {_where(first, len(self.steps))}: [{first.check}] {first.message}",
        ]
        others: dict[str, Violation] = {}
        for violation in self.violations[1:]:
            if violation.check != first.check:
                others.setdefault(violation.check, violation)
        for check, violation in others.items():
            lines.append(f"first [{check}] at {_where(violation, len(self.steps))}: {violation.message[:600]}")
        if first.step_no and context:
            start = max(0, first.step_no - context)
            lines.append(f"the steps up to the first problem ({start + 1} to {first.step_no}):")
            lines += [f"  {n}. {s}" for n, s in enumerate(self.steps[start : first.step_no], start + 1)]
        if self.replay:
            lines.append(f"replay: {self.replay}")
        lines.append(counts_line(self.counts))
        return "\n".join(lines)


def _where(violation: Violation, steps: int) -> str:
    return f"step {violation.step_no} of {steps}, {violation.step}" if violation.step_no else "the final checks"


def counts_line(counts: Counter[str]) -> str:
    return "counts: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items()))


@dataclass
class Walk:
    owner: str
    limit: int
    state: str | None
    mv: bool
    started: int
    last_id: str | None = None
    cursor: str | None = None
    pages: int = 0


class Runner:
    def __init__(
        self,
        system: System,
        seed: int,
        steps: list[Step],
        tier: str,
        stop_at_first: bool = True,
        replay: str = "",
        announce: bool = True,
    ) -> None:
        from chalicelib.cli import make_token

        self.system = system
        self.seed = seed
        self.steps = steps
        self.stop_at_first = stop_at_first
        self.announce = announce
        self.outcome = Outcome(seed, tier, steps, replay=replay)
        self.counts = self.outcome.counts
        self.model = Model(PENDING_TTL_SECONDS)
        self.owners = list(OWNERS)
        self.rng = Random(seed ^ 0xA11CE)
        self.workload = Workload(Random(seed ^ 0xC0DE), tuple(self.owners))
        self.pool = {
            owner: sorted(str(uuid.UUID(int=self.rng.getrandbits(128), version=4)) for _ in range(8))
            for owner in self.owners
        }
        self.recent: dict[str, list[str]] = {owner: [] for owner in self.owners}
        self.last_version: dict[str, int] = {}
        self.key_versions: dict[Key, list[int]] = {}
        self.walks: list[Walk] = []
        self.stale: set[Key] = set()  # keys whose cache entry may be stale by the cache's own terms
        self.tokens = {owner: make_token(owner, None, None, [], 3600) for owner in self.owners}
        self.writes = 0
        self.step_no = 0
        self.step_text = ""
        self.reported_poison: set[str] = set()
        self.bad_entries: dict[str, list[str]] = {owner: [] for owner in self.owners}
        self.client: Any = None

    # -- running -----------------------------------------------------------------------------------
    def run(self) -> Outcome:
        from chalice.test import Client

        import app as app_module

        if self.announce:  # the seed first: whatever happens next, the run can be replayed
            print(f"history: seed={self.seed} tier={self.outcome.tier} steps={len(self.steps)}", flush=True)
        with quiet_logs(), seeded_ids(Random(self.seed ^ 0x1D5), self.system.time), Client(app_module.app) as client:
            self.client = client
            for number, step in enumerate(self.steps, 1):
                self.step_no, self.step_text = number, str(step)
                self.system.time.advance_us(step.dt)
                try:
                    getattr(self, f"do_{step.kind}")(step)
                except Exception as exc:
                    raise RuntimeError(f"history seed={self.seed}: step {number} ({step}) broke the checker") from exc
                self.outcome.ran = number
                if self.stop_at_first and self.outcome.violations:
                    return self.outcome
            self.step_no, self.step_text = 0, "settle"
            self.settle()
        return self.outcome

    def problem(self, problems: list[Problem]) -> None:
        for check, message in problems:
            violation = Violation(self.step_no, self.step_text, check, message)
            if violation in self.outcome.violations[-20:]:
                continue  # the same problem met again in this step (concurrent loads)
            self.outcome.violations.append(violation)
            self.counts[f"problem:{check}"] += 1

    # -- requests ----------------------------------------------------------------------------------
    def call(self, instance: int, method: str, path: str, owner: str, body: Any = None, **headers: str) -> Any:
        from chalicelib import bootstrap

        bootstrap.use(self.system.instances[instance].services)
        sent = {"Authorization": self.tokens[owner], **headers}
        http = getattr(self.client.http, method.lower())
        self.counts["requests"] += 1
        if body is None:
            return http(path, headers=sent)
        sent["Content-Type"] = "application/json"
        return http(path, headers=sent, body=json.dumps(body))

    def view(self, instance: int) -> tuple[View, tuple[int, int]]:
        inst = self.system.instances[instance]
        pending = self.system.redis_is_up and inst.redis_breaker.allows()
        # Pending entries expire by each reader's clock: by the latest of them, an entry another
        # instance may have dropped as expired is no longer counted on.
        latest = max(clock.now_us() for clock in self.system.clocks)
        db = "master"
        replica = inst.replica_breaker
        if replica is not None and self.system.replica_is_up and replica.allows():  # type: ignore[attr-defined]
            db = "replica"
        failures = (inst.redis_breaker.failures, replica.failures if replica is not None else 0)
        return View(latest, pending, db), failures

    def seen(self, instance: int, view: View, before: tuple[int, int]) -> View:
        """The read's view, corrected by what happened during it: a Redis failure the history did
        not inject (a timeout on a loaded machine) means its pending writes were not read; a
        replica failure means the master answered."""
        inst = self.system.instances[instance]
        pending, db = view.pending, view.db
        if inst.redis_breaker.failures != before[0] and pending:
            self.counts["redis_flakes"] += 1
            pending = False
        replica = inst.replica_breaker
        if replica is not None and replica.failures != before[1]:
            db = "master"
        return View(view.now_us, pending, db, view.real_now)

    @staticmethod
    def answer(response: Any, route: str, allowed: tuple[int, ...], min_version: int | None) -> list[Problem]:
        """No 5xx but the contract's 503 (with Retry-After, error "unavailable"); a 503 only for a
        min_version no read can show yet; otherwise only `allowed`."""
        status = int(response.status_code)
        if status == 503:
            body = response.json_body if isinstance(response.json_body, dict) else {}
            if response.headers.get("Retry-After") is None or body.get("error") != "unavailable":
                return [("answer", f"{route} answered 503 without Retry-After or error=unavailable: {body}")]
            if min_version is None:
                return [("answer", f"{route} answered 503 while the database answered: {body}")]
            return []
        if status not in allowed:
            return [("answer", f"{route} answered {status}: {response.body[:300]!r}")]
        return []

    def noted(self, owner: str, view: View, problems: list[Problem]) -> list[Problem]:
        """A wrong answer, with what the caller's pending hash held: the bad entries the history
        wrote into it, and how many real entries Redis kept."""
        if not problems:
            return problems
        kept = sum(1 for key in self.model.owner_keys(owner) if self.model.entry(key, view) is not None)
        bad = ", ".join(self.bad_entries[owner]) or "none"
        note = f" (the caller's pending hash: {kept} kept todo entries; bad entries written into it: {bad})"
        return [(check, message + note) for check, message in problems]

    # -- what the callers write --------------------------------------------------------------------
    def todo(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(body to send, the fields as they must be stored and read), from the fault-injection
        suites' workload; every title made unique, so that a read tells tied versions apart."""
        self.writes += 1
        body, stored = self.workload.todo()
        body["title"] = stored["title"] = f"w{self.writes} {body['title']}"
        return body, stored

    def profile(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.writes += 1
        body, stored = self.workload.profile()
        body["display_name"] = stored["display_name"] = f"p{self.writes} {body['display_name']}"
        return body, stored

    def known_ids(self, owner: str) -> list[str]:
        return sorted(set(self.pool[owner]) | {k[2] for k in self.model.owner_keys(owner)})

    def key_of(self, owner: str, step: Step) -> str:
        recent = self.recent[owner]
        if step["key"] == "recent" and recent:
            return recent[-1 - int(step["pick"] * min(3, len(recent)))]
        ids = self.known_ids(owner)
        return ids[int(step["pick"] * len(ids))]

    def write_mv(self, owner: str, mode: str, instance: int) -> int | None:
        if mode == "last":
            return self.last_version.get(owner)
        if mode == "ahead":
            return self.system.instances[instance].clock.now_us() + self.rng.randint(1, 4_900_000)
        return None

    def read_mv(self, key: Key, mode: str, instance: int) -> int | None:
        versions = self.key_versions.get(key, [])
        if mode == "last" and versions:
            return versions[-1]
        if mode == "old" and versions:
            return self.rng.choice(versions)
        if mode == "ahead":
            return self.system.instances[instance].clock.now_us() + self.rng.randint(1, 4_900_000)
        return None

    def too_far(self, min_version: int | None, instance: int) -> bool:
        """A min_version beyond the instance's clock by more than the bound: 400 is the answer."""
        now = self.system.instances[instance].clock.now_us()
        return min_version is not None and min_version > now + MIN_VERSION_LEAD_US

    # -- writes -------------------------------------------------------------------------------------
    def write(
        self,
        instance: int,
        method: str,
        path: str,
        route: str,
        owner: str,
        body: Any,
        expected: list[tuple[str, str | None, str, dict[str, Any] | None]],
        min_version: int | None,
        batch: bool = False,
        **headers: str,
    ) -> list[Cmd]:
        """One write request; every command the stream took becomes a model command. `expected`:
        per command (resource, id or None when the service names it, op, stored fields)."""
        inst = self.system.instances[instance]
        stream = self.system.stream
        mark, failures = stream.mark(), inst.pending.failures
        if min_version is not None:
            path += ("&" if "?" in path else "?") + f"min_version={min_version}"
            route += "?min_version"
        route = f"{route} (instance {instance})"
        too_far = self.too_far(min_version, instance)
        response = self.call(instance, method, path, owner, body, **headers)
        taken = stream.taken_since(mark, instance)
        commands = [c for r in taken for c in r.commands]
        status = int(response.status_code)
        problems: list[Problem] = []
        answered: list[dict[str, Any]] = []
        if too_far:
            if status != 400:
                problems.append(("answer", f"{route}: min_version {min_version} is more than 5 s ahead, got {status}"))
        elif status != 202:
            problems.append(("answer", f"{route} answered {status}: {response.body[:300]!r}"))
        else:
            answer = response.json_body
            answered = list(answer.get("accepted") or []) if batch else [answer]
            if not batch and (answer.get("status") != "accepted" or not response.headers.get("Location")):
                problems.append(("answer", f"{route}: 202 body {answer} or no Location"))
            if len(answered) != len(expected) or len(commands) != len(expected):
                problems.append(
                    (
                        "answer",
                        f"{route}: {len(expected)} sent, {len(answered)} answered, {len(commands)} on the stream",
                    )
                )
        recorded = status == 202 and inst.pending.failures == failures
        cmds: list[Cmd] = []
        for number, command in enumerate(commands):
            resource, id_, op, data = expected[min(number, len(expected) - 1)]
            cmd = Cmd(
                seq=len(self.model.cmds) + 1,
                owner=owner,
                resource=resource,
                id=str(command.get("id")),
                op=op,
                version=int(command.get("version", 0)),
                op_id=str(command.get("op_id")),
                data=data,
                instance=instance,
                step=self.step_no,
                recorded=recorded,
                epoch=self.model.epoch[owner],
                recorded_real=time.monotonic(),
            )
            sent = (command.get("resource"), command.get("owner"), command.get("op"), command.get("data"))
            if sent != (resource, owner, op, data) or (id_ is not None and cmd.id != id_):
                problems.append(("content", f"{route}: the stream took {command}, not {op} {resource} {id_} {data}"))
            if number < len(answered):
                said = answered[number]
                if (said.get("id"), said.get("version")) != (cmd.id, cmd.version):
                    problems.append(("answer", f"{route}: answered {said}, the stream took {cmd.id} v{cmd.version}"))
            if min_version is not None and cmd.version <= min_version:
                problems.append(("min_version", f"{route}: min_version {min_version} gave version {cmd.version}"))
            self.model.accept(cmd)
            cmds.append(cmd)
            if resource == "todos":
                self.recent[owner] = [i for i in self.recent[owner] if i != cmd.id][-5:] + [cmd.id]
            self.key_versions.setdefault(cmd.key, []).append(cmd.version)
        position = 0
        for record in taken:
            record.cmds = cmds[position : position + len(record.commands)]
            position += len(record.commands)
        if status == 202 and cmds:
            self.last_version[owner] = max(c.version for c in cmds)
        self.counts["writes"] += 1
        self.counts["commands"] += len(cmds)
        self.counts["records_failed"] += 0 if recorded or not cmds else 1
        self.problem(problems)
        return cmds

    def do_put(self, step: Step) -> None:
        owner = self.owners[step["caller"]]
        id_ = self.key_of(owner, step)
        body, stored = self.todo()
        mv = self.write_mv(owner, step["mv"], step["instance"])
        expected = [("todos", id_, "put", stored)]
        self.write(step["instance"], "PUT", f"/todos/{id_}", "PUT /todos/{id}", owner, body, expected, mv)

    def do_delete(self, step: Step, id_: str | None = None) -> None:
        owner = self.owners[step["caller"]]
        id_ = id_ or self.key_of(owner, step)
        mv = self.write_mv(owner, step["mv"], step["instance"])
        expected = [("todos", id_, "delete", None)]
        self.write(step["instance"], "DELETE", f"/todos/{id_}", "DELETE /todos/{id}", owner, None, expected, mv)

    def do_post(self, step: Step) -> None:
        owner = self.owners[step["caller"]]
        body, stored = self.todo()
        mv = self.write_mv(owner, step["mv"], step["instance"])
        headers = {} if step["idem"] is None else {"Idempotency-Key": f"key-{step['idem']}"}
        expected = [("todos", None, "put", stored)]
        self.write(step["instance"], "POST", "/todos", "POST /todos", owner, body, expected, mv, **headers)

    def do_batch(self, step: Step) -> None:
        owner = self.owners[step["caller"]]
        items = [self.todo() for _ in range(step["size"])]
        mv = self.write_mv(owner, step["mv"], step["instance"])
        headers = {} if step["idem"] is None else {"Idempotency-Key": f"batch-{step['idem']}"}
        expected = [("todos", None, "put", stored) for _, stored in items]
        body = {"todos": [b for b, _ in items]}
        route = "POST /todos/batch"
        self.write(step["instance"], "POST", "/todos/batch", route, owner, body, expected, mv, batch=True, **headers)

    def do_put_me(self, step: Step) -> None:
        owner = self.owners[step["caller"]]
        body, stored = self.profile()
        mv = self.write_mv(owner, step["mv"], step["instance"])
        expected = [("profiles", owner, "put", stored)]
        self.write(step["instance"], "PUT", "/me", "PUT /me", owner, body, expected, mv)

    def do_tie(self, step: Step) -> None:
        """Two writes of one todo through both instances with one min_version M ahead of both
        clocks (and within 5 s of each): both get version M + 1, and op_id decides."""
        owner = self.owners[step["caller"]]
        id_ = self.key_of(owner, step)
        now = [c.now_us() for c in self.system.clocks]
        low, high = max(now) + 1, min(now) + MIN_VERSION_LEAD_US - 1
        if high <= low:
            return
        m = low + int(step["m"] * (high - low))
        versions = []
        for turn, op in enumerate(step["ops"]):
            instance = step["first"] if turn == 0 else 1 - step["first"]
            if turn == 1 and step["cut_between"]:
                self.system.stream.cut(1.0, False, False, False, False)
            if op == "put":
                body, stored = self.todo()
                route = "PUT /todos/{id}"
                made = self.write(
                    instance, "PUT", f"/todos/{id_}", route, owner, body, [("todos", id_, "put", stored)], m
                )
            else:
                route = "DELETE /todos/{id}"
                made = self.write(
                    instance, "DELETE", f"/todos/{id_}", route, owner, None, [("todos", id_, "delete", None)], m
                )
            versions += [c.version for c in made]
        if len(versions) == 2 and versions[0] == versions[1]:
            self.counts["ties"] += 1

    # -- reads --------------------------------------------------------------------------------------
    def read(self, instance: int, key: Key, path: str, route: str, mode: str) -> None:
        mv = self.read_mv(key, mode, instance)
        if mv is not None:
            path += f"?min_version={mv}"
            route += "?min_version"
        route = f"{route} (instance {instance})"
        view, before = self.view(instance)
        too_far = self.too_far(mv, instance)
        response = self.call(instance, "GET", path, key[1])
        view = self.seen(instance, view, before)
        status = int(response.status_code)
        self.counts[f"read {status}"] += 1
        if too_far:
            if status != 400:
                self.problem([("answer", f"{route}: min_version {mv} is more than 5 s ahead, got {status}")])
            return
        problems = self.noted(key[1], view, self.answer(response, route, (200, 404), mv))
        stale = key in self.stale
        if view.db == "replica" and any(
            c.loaded is not None and not self.model.visible(c, view) for c in self.model.by_key.get(key, ())
        ):
            self.stale.add(key)  # a fill from the lagging replica may outlive the loader's fence
        if status == 200:
            row = response.json_body
            cmd, found = self.model.check_row(key, row, view, route, stale)
            problems += found
            if response.headers.get("ETag") != f'"{row.get("version")}"':
                problems.append(("answer", f"{route}: ETag {response.headers.get('ETag')} for v{row.get('version')}"))
            if mv is not None:
                if cmd is None and isinstance(row.get("version"), int) and row["version"] < mv:
                    problems.append(("min_version", f"{route}?min_version={mv} showed version {row['version']}"))
                problems += self.model.check_min_version(key, status, cmd, mv, view, route)
        elif status == 404:
            problems += self.model.check_session(key, None, view, route)
            if mv is not None:
                problems += self.model.check_min_version(key, status, None, mv, view, route)
        elif status == 503 and mv is not None:
            problems += self.model.check_min_version(key, status, None, mv, view, route)
        self.problem(problems)

    def do_get(self, step: Step) -> None:
        owner = self.owners[step["caller"]]
        id_ = self.key_of(owner, step)
        self.read(step["instance"], ("todos", owner, id_), f"/todos/{id_}", "GET /todos/{id}", step["mv"])

    def do_get_me(self, step: Step) -> None:
        owner = self.owners[step["caller"]]
        self.read(step["instance"], ("profiles", owner, owner), "/me", "GET /me", step["mv"])

    def do_walk(self, step: Step) -> None:
        walk = Walk(self.owners[step["caller"]], step["limit"], step["state"], step["mv"], self.step_no)
        self.walks.append(walk)
        self.counts["walks"] += 1
        self.page(walk, step["instance"])

    def do_page(self, step: Step) -> None:
        if self.walks:
            self.page(self.walks[int(step["walk"] * len(self.walks))], step["instance"])

    def page(self, walk: Walk, instance: int) -> None:
        query = [f"limit={walk.limit}"]
        if walk.state:
            query.append(f"state={walk.state}")
        if walk.cursor:
            query.append(f"cursor={walk.cursor}")
        if walk.mv and walk.owner in self.last_version and not self.too_far(self.last_version[walk.owner], instance):
            query.append(f"min_version={self.last_version[walk.owner]}")
        route = (
            f"GET /todos?limit={walk.limit}"
            + (f"&state={walk.state}" if walk.state else "")
            + f" page {walk.pages + 1} of the walk begun at step {walk.started} (instance {instance})"
        )
        view, before = self.view(instance)
        response = self.call(instance, "GET", "/todos?" + "&".join(query), walk.owner)
        view = self.seen(instance, view, before)
        self.counts["pages"] += 1
        problems = self.noted(walk.owner, view, self.answer(response, route, (200,), None))
        if response.status_code != 200:
            self.walks.remove(walk)
            self.problem(problems)
            return
        body = response.json_body
        rows, cursor = body.get("todos"), body.get("next_cursor")
        if not isinstance(rows, list) or not (cursor is None or isinstance(cursor, str)):
            self.walks.remove(walk)
            self.problem([*problems, ("answer", f"{route}: body {str(body)[:300]}")])
            return
        ids = [r.get("id") if isinstance(r, dict) else None for r in rows]
        previous = walk.last_id
        for id_ in ids:
            if not isinstance(id_, str) or (previous is not None and id_ <= previous):
                problems.append(("paging", f"{route} showed id {id_!r} after {previous!r}: repeated or out of order"))
                break
            previous = id_
        if len(rows) > walk.limit:
            problems.append(("paging", f"{route} showed {len(rows)} rows, more than the limit"))
        if cursor is not None and not rows:
            problems.append(("paging", f"{route} showed no row and named a next cursor"))
        end = ids[-1] if cursor is not None and ids and isinstance(ids[-1], str) else None
        if cursor is None or end is not None:
            _, found = self.model.check_page(walk.owner, rows, walk.last_id, end, walk.state, view, route)
            problems += found
        self.problem(problems)
        walk.pages += 1
        walk.cursor = cursor
        if ids and isinstance(ids[-1], str):
            walk.last_id = ids[-1]
        if cursor is None:
            self.walks.remove(walk)

    # -- delivery -----------------------------------------------------------------------------------
    def do_cut(self, step: Step) -> None:
        made = self.system.stream.cut(step["share"], step["gzip"], step["junk"], step["trailing"], step["twice"])
        self.counts["objects"] += len(made)

    def pick(self, step: Step, again: bool = False, worst: str = "", kill: bool = False) -> Obj | None:
        """An object: one not loaded yet (or, `again`, one loaded); `worst`: among those that met
        the most faults of that kind ("kills" or "outages") already."""
        objects = self.system.stream.objects
        pool = [o for o in objects if o.loaded == again and (not kill or o.kills < 2)]
        if not pool:
            return None
        if worst:
            most = max(getattr(o, worst) for o in pool)
            pool = [o for o in pool if getattr(o, worst) == most]
        return pool[int(step["obj"] * len(pool))]

    def load_once(self, obj: Obj) -> Any:
        """One load of `obj` by the loader: its LoadResult, or the exception it raised."""
        obj.loads += 1
        self.counts["loads"] += 1
        return self.system.load(obj)

    def judge_load(self, obj: Obj, result: Any, outage: bool = False) -> None:
        if isinstance(result, BaseException):
            if outage and unavailable(result):
                self.counts["loads_failed_in_outage"] += 1
                return
            why = "during an outage, not as the database being unavailable" if outage else "while the database answered"
            self.problem([("delivery", f"{obj.label()}: a load failed {why}: {type(result).__name__}: {result}")])
        elif getattr(result, "poisoned", 0):
            self.problem([("delivery", f"{obj.label()}: a load was told this good object is poisoned and left it")])

    def after_loads(self, redis_failures: int, redis_was_up: bool) -> None:
        """Which objects committed (the ledger is the truth), the replica caught up, and no good
        object poisoned."""
        ledger = self.system.ledger()
        stale = not redis_was_up or self.system.invalidator_failures() != redis_failures
        for obj in self.system.stream.objects:
            if not obj.loaded and (obj.key, obj.etag) in ledger:
                obj.loaded = True
                cmds = obj.cmds()
                self.model.committed(cmds)
                if stale:  # the loader could not update the cache: entries may be stale (cache.py)
                    self.stale.update(c.key for c in cmds)
        if self.system.sync_replica():
            self.model.replica_caught_up()
        for key, attempts, error in self.system.poisoned():
            if key in self.reported_poison:
                continue
            self.reported_poison.add(key)
            obj = next((o for o in self.system.stream.objects if o.key == key), None)
            label = obj.label() if obj else key
            self.problem([("delivery", f"good {label} is poisoned after {attempts} attempts: {error[:200]}")])

    @contextlib.contextmanager
    def loading(self) -> Iterator[None]:
        failures, up = self.system.invalidator_failures(), self.system.redis_is_up
        try:
            yield
        finally:
            self.after_loads(failures, up)

    def do_load(self, step: Step) -> None:
        obj = self.pick(step, again=step["again"])
        if obj is None:
            return
        with self.loading():
            self.judge_load(obj, self.load_once(obj))

    def do_concurrent(self, step: Step) -> None:
        """Loads at once (S3 events arriving together): of one object, or of several sharing
        keys. Each records its attempt before any begins its transaction."""
        if step["same"]:
            obj = self.pick(step)
            objs = [obj] * step["n"] if obj else []
        else:
            pool = [o for o in self.system.stream.objects if not o.loaded]
            start = int(step["obj"] * len(pool)) if pool else 0
            objs = (pool[start:] + pool[:start])[: step["n"]]
        if len(objs) < 2:
            return
        with self.loading():
            results = self.system.load_together(objs)
            self.counts["concurrent_rounds"] += 1
            self.counts["loads"] += len(objs)
            for obj in set(objs):
                obj.concurrent += objs.count(obj)
                obj.loads += objs.count(obj)
            if results is None:
                self.problem([("delivery", f"{len(objs)} concurrent loads did not end in {CONCURRENT_TIMEOUT:.0f} s")])
                return
            for obj, result in zip(objs, results, strict=True):
                self.judge_load(obj, result)

    def do_kill(self, step: Step) -> None:
        """A load whose process dies (fewer than 3 per object: 3 poison it, as the contract says)."""
        obj = self.pick(step, worst="kills" if step["worst"] else "", kill=True)
        if obj is None:
            return
        with self.loading():
            obj.loads += 1
            killed, result = self.system.load_killed(obj, step["at"])
            if killed:
                obj.kills += 1
                self.counts["kills"] += 1
            if result is not None:
                self.judge_load(obj, result)

    def do_outage(self, step: Step) -> None:
        """A load during which the database goes away, and comes back a moment later."""
        obj = self.pick(step, worst="outages" if step["worst"] else "")
        if obj is None:
            return
        with self.loading():
            obj.loads += 1
            result, happened = self.system.load_cut_off(obj, step["at"])
            if happened:
                obj.outages += 1
                self.counts["outages"] += 1
            self.judge_load(obj, result, outage=happened)

    # -- faults -------------------------------------------------------------------------------------
    def do_flush(self, step: Step) -> None:
        self.system.flush_redis()
        self.model.flushed(self.owners)
        for bad in self.bad_entries.values():
            bad.clear()
        self.stale.clear()
        self.counts["flushes"] += 1

    def do_redis_down(self, step: Step) -> None:
        self.system.redis_down()
        self.model.changed(self.owners)
        self.counts["redis_outages"] += 1

    def do_redis_up(self, step: Step) -> None:
        self.system.redis_up()
        self.model.changed(self.owners)

    def do_advance(self, step: Step) -> None:
        self.system.time.advance_us(int(step["seconds"] * 1_000_000))
        self.model.changed(self.owners)

    def expire(self, seconds: int) -> None:
        self.system.time.advance_us(seconds * 1_000_000)
        self.system.expire_cache()
        self.stale.clear()
        self.model.changed(self.owners)

    def do_expire_cache(self, step: Step) -> None:
        self.expire(CACHE_TTL_SECONDS + 1)
        self.counts["cache_expiries"] += 1

    def do_expire_pending(self, step: Step) -> None:
        self.expire(PENDING_TTL_SECONDS + 1)
        self.counts["pending_expiries"] += 1

    def do_corrupt(self, step: Step) -> None:
        owner = self.owners[step["caller"]]
        self.system.corrupt_pending(owner, step["how"], self.rng)
        self.bad_entries[owner].append(step["how"])
        self.model.changed([owner])
        self.counts[f"corrupt_{step['how']}"] += 1

    def do_lag_start(self, step: Step) -> None:
        if self.system.replica_faults and not self.system.lagging:  # type: ignore[attr-defined]
            self.system.lag_start()  # type: ignore[attr-defined]
            self.counts["replica_lags"] += 1

    def do_lag_end(self, step: Step) -> None:
        if self.system.replica_faults and self.system.lagging:  # type: ignore[attr-defined]
            self.system.lag_end()  # type: ignore[attr-defined]
            if self.system.sync_replica():
                self.model.replica_caught_up()

    def do_replica_down(self, step: Step) -> None:
        if self.system.replica_faults:
            self.system.replica_down()  # type: ignore[attr-defined]
            self.model.changed(self.owners)
            self.counts["replica_outages"] += 1

    def do_replica_up(self, step: Step) -> None:
        if self.system.replica_faults:
            self.system.replica_up()  # type: ignore[attr-defined]
            self.model.changed(self.owners)
            if self.system.sync_replica():
                self.model.replica_caught_up()

    # -- the end ------------------------------------------------------------------------------------
    def settle(self) -> None:
        """Every fault healed, everything delivered and loaded, then the final checks."""
        system = self.system
        system.heal()
        system.stream.cut(1.0, False, False, False, False)
        with self.loading():
            for obj in [o for o in system.stream.objects if not o.loaded]:
                self.judge_load(obj, self.load_once(obj))
        missing = [o for o in system.stream.objects if not o.loaded]
        if missing:
            with self.loading():
                for obj in missing:  # what an operator's replay --force does
                    self.judge_load(obj, system.load(obj, force=True))
        for obj in system.stream.objects:
            if not obj.loaded:
                self.problem([("delivery", f"{obj.label()} never reached the ledger, even forced")])
        self.check_ledger()
        self.check_rows()
        self.final_reads()

    def check_ledger(self) -> None:
        """One ledger row per object delivered, each with its commands applied or stale, its
        foreign lines (and bytes after GZIP) rejected once, loaded once."""
        ledger = self.system.ledger()
        objects = {(o.key, o.etag): o for o in self.system.stream.objects}
        problems: list[Problem] = []
        for where in sorted(set(ledger) - set(objects)):
            problems.append(("ledger", f"the ledger holds {where}, which was never delivered"))
        for where, obj in objects.items():
            if where not in ledger:
                continue
            applied, stale, rejected, loads = ledger[where]
            if applied + stale != obj.commands or rejected != obj.rejects or loads != 1:
                problems.append(
                    (
                        "ledger",
                        f"{obj.label()}: ledger applied={applied} stale={stale} rejected={rejected} loads={loads}; "
                        f"delivered {obj.commands} commands and {obj.rejects} bad line(s)"
                        + (" (bytes after its GZIP member)" if obj.trailing else ""),
                    )
                )
        self.problem(problems)

    def check_rows(self) -> None:
        """Every row is the last-writer-wins winner of its key's accepted commands (a tombstone
        for a delete), created_at the earliest `at`, updated_at the winner's."""
        from tests.integration.faults import master_rows, version_text

        rows = master_rows(self.system.admin)
        problems: list[Problem] = []
        for key in sorted(set(rows) - set(self.model.by_key)):
            problems.append(("final", f"row {key} v{rows[key]['version']} is no accepted write"))
        for key, cmds in self.model.by_key.items():
            winner = self.model.winner(key)
            assert winner is not None
            row = rows.get(key)
            if row is None:
                problems.append(("final", f"{key}: no row; the winner is {winner.label()}"))
                continue
            wrong = []
            if (row["version"], row["op_id"]) != winner.order:
                wrong.append(f"holds v{row['version']} op_id {row['op_id']}")
            if row["deleted"] != int(not winner.live) or (winner.live and row["data"] != winner.data):
                wrong.append(f"holds {row['data']} deleted={row['deleted']}")
            if row["updated_at"] != version_text(winner.version):
                wrong.append(f"updated_at {row['updated_at']}")
            first = min(c.version for c in cmds)
            if row["created_at"] != version_text(first):
                wrong.append(f"created_at {row['created_at']}, not the earliest {version_text(first)}")
            if wrong:
                problems.append(("final", f"{key}: " + "; ".join(wrong) + f"; the winner is {winner.label()}"))
        self.problem(problems)

    def final_reads(self) -> None:
        """With everything loaded and the cache past its TTL, every read shows the winners."""
        self.system.expire_cache()
        self.stale.clear()
        for owner in self.owners:
            for key in self.model.owner_keys(owner):
                self.read(0, key, f"/todos/{key[2]}", "final GET /todos/{id}", "none")
            if ("profiles", owner, owner) in self.model.by_key:
                self.read(1, ("profiles", owner, owner), "/me", "final GET /me", "none")
            walk = Walk(owner, 100, None, False, 0)
            self.walks.append(walk)
            while walk in self.walks:
                self.page(walk, 1)
            for key in self.model.owner_keys(owner):
                winner = self.model.winner(key)
                view = View(self.system.instances[0].clock.now_us(), False, "master")
                if winner is not None and self.model.determinate(key, view) is not winner:
                    self.problem([("final", f"{key}: the winner {winner.label()} is not loaded after settling")])


def unavailable(error: BaseException) -> bool:
    """The database being unreachable: DatabaseUnavailable, in process or as a loader process
    reported it."""
    from chalicelib.errors import DatabaseUnavailable

    return isinstance(error, DatabaseUnavailable) or getattr(error, "kind", "") == "DatabaseUnavailable"


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """The service logs every fault it meets (thousands of expected warnings), and every 500 (the
    checks report those): not here."""
    loggers = [logging.getLogger(name) for name in ("chalicelib", "sluice")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
