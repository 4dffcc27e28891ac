"""A toy bank on detray: transfers run as tasks against a ledger actor.

`main()` is the correct program: each transfer is applied by one idempotent
actor call keyed by its transfer id, so a transfer retried after its worker
died is applied once. `main_with_retry_bug()` is the same bank with a bug
that only shows under faults: the transfer task debits, does some work, then
credits in a second call. If its worker dies between the two, Ray (and
detray) retry the task, and the debit happens twice: money disappears.

Run it plainly (`python bank.py`, or `DETRAY_MODE=sim python bank.py`) or
test it under faults: see test_bank.py and docs/testing.md.
"""

from __future__ import annotations

import time

import detray as ray

ACCOUNTS = {f"acct-{i}": 1_000 for i in range(8)}
TRANSFERS_COUNT = 24


@ray.remote(max_restarts=0)
class Ledger:
    def __init__(self, accounts: dict[str, int]) -> None:
        self.balances = dict(accounts)
        self.applied: set[int] = set()

    def apply(self, transfer_id: int, src: str, dst: str, amount: int) -> int:
        """Idempotent: a transfer id is applied at most once, and the answer (the
        transfer's receipt) is the same every time it is asked."""
        if transfer_id not in self.applied:
            self.applied.add(transfer_id)
            self.balances[src] -= amount
            self.balances[dst] += amount
        return transfer_id

    def debit(self, account: str, amount: int) -> None:
        self.balances[account] -= amount

    def credit(self, account: str, amount: int) -> None:
        self.balances[account] += amount

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.balances.items()))


@ray.remote
def transfer(ledger: "ray.actor.ActorHandle", transfer_id: int, src: str, dst: str, amount: int) -> int:
    time.sleep(0.05)  # fraud check, fees...
    return ray.get(ledger.apply.remote(transfer_id, src, dst, amount))


@ray.remote
def transfer_in_two_steps(ledger: "ray.actor.ActorHandle", transfer_id: int, src: str, dst: str, amount: int) -> int:
    ray.get(ledger.debit.remote(src, amount))
    time.sleep(0.05)  # fraud check, fees... a worker that dies here is retried: debited twice
    ray.get(ledger.credit.remote(dst, amount))
    return transfer_id


def plan() -> list[tuple[str, str, int]]:
    """A fixed list of transfers (source, destination, amount)."""
    names = sorted(ACCOUNTS)
    return [
        (names[i % len(names)], names[(i * 3 + 1) % len(names)], 10 + (i * 7) % 50)
        for i in range(TRANSFERS_COUNT)
    ]


def run_bank(task: "ray.remote_function.RemoteFunction") -> dict[str, int]:
    ledger = Ledger.options(num_cpus=0).remote(ACCOUNTS)
    done = [task.remote(ledger, i, src, dst, amount) for i, (src, dst, amount) in enumerate(plan())]
    ray.get(done)
    return ray.get(ledger.snapshot.remote())


def main() -> dict[str, int]:
    return run_bank(transfer)


def main_with_retry_bug() -> dict[str, int]:
    return run_bank(transfer_in_two_steps)


if __name__ == "__main__":
    ray.init()
    balances = main()
    print("total money:", sum(balances.values()), "(expected", sum(ACCOUNTS.values()), ")")
