"""engine.kernels.atomics: threads that share a counter take every number exactly once."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

from engine.kernels.atomics import fetch_add_nb


@numba.njit(nogil=True, cache=False)
def _take_all(counter, owner, me):  # type: ignore[no-untyped-def]
    """Take numbers until they run out, marking each with ``me``; a little work each."""
    n = owner.shape[0]
    got = 0
    while True:
        k = fetch_add_nb(counter, 0, 1)
        if k >= n:
            return got
        x = 0.0
        for j in range(200):
            x += np.sqrt(j + k)
        owner[k] = me if x > 0 else -2
        got += 1


def test_two_threads_take_each_number_once() -> None:
    n = 200_000
    counter = np.zeros(1, dtype=np.int64)
    owner = np.full(n, -1, dtype=np.int64)
    _take_all(np.zeros(1, dtype=np.int64), np.full(1, -1, dtype=np.int64), 0)  # compile
    counts = [0, 0]

    def run(me: int) -> None:
        counts[me] = _take_all(counter, owner, me)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (owner >= 0).all()  # every number taken
    assert counts[0] + counts[1] == n  # and none twice
    assert counter[0] == n + 2  # each thread's last fetch found the end
    assert min(counts) > 0  # both threads took some


def test_fetch_add_returns_the_old_value_at_any_stride() -> None:
    @numba.njit(cache=False)
    def add(a, i, v):  # type: ignore[no-untyped-def]
        return fetch_add_nb(a, i, v)

    a = np.arange(10, dtype=np.int64)
    view = a[::3]  # 0, 3, 6, 9
    assert add(view, 2, 5) == 6
    assert a.tolist() == [0, 1, 2, 3, 4, 5, 11, 7, 8, 9]
    assert add(a, 0, -1) == 0 and a[0] == -1
    with pytest.raises(numba.TypingError):
        add(np.zeros(3), 0, 1)
