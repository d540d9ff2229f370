"""server/job_queue.py: what a request gets from the queue (400 for an n that can never start,
429 with Retry-After when full, 503 once closing), FIFO admission, abort/find, and the
bookkeeping the scheduler asks of it (cancelled waiting jobs freed, the head's waiting time,
the average job length behind Retry-After)."""
from __future__ import annotations

import time

import pytest

from aiwriter.server.job_queue import JobQueue
from aiwriter.server.jobs import Job, QueueFull
from aiwriter.server.replies import ApiError


def test_submit_refuses_what_could_never_start_and_a_full_queue():
    q = JobQueue(max_batch=4, max_queue=2)
    with pytest.raises(ApiError) as e:
        q.submit(Job("甲", n=5))
    assert e.value.status == 400 and e.value.param == "n" and "4" in e.value.en
    hook = lambda job: None  # noqa: E731
    a = q.submit(Job("甲", n=4), on_taken=hook)
    assert a._on_taken is hook
    q.submit(Job("乙"))
    with pytest.raises(QueueFull) as full:
        q.submit(Job("丙"))
    assert full.value.retry_after == 5  # avg_job_s 5 over one "running" (none yet)
    assert [j.prompt for j in q.waiting] == ["甲", "乙"]


def test_a_closed_queue_cancels_everything_and_refuses_more():
    q = JobQueue(max_batch=4, max_queue=8)
    a, b = q.submit(Job("甲")), q.submit(Job("乙"))
    q.admit_head()
    q.close()
    assert a.cancelled.is_set() and b.cancelled.is_set() and q.stopped
    with pytest.raises(ApiError) as e:
        q.submit(Job("丙"))
    assert e.value.status == 503


def test_admission_is_first_in_first_out_and_the_head_wait_is_timed_once():
    now = [10.0]
    q = JobQueue(max_batch=4, max_queue=8, clock=lambda: now[0])
    a, b = q.submit(Job("甲")), q.submit(Job("乙"))
    assert q.head() is a
    assert q.waited_since() == 10.0
    now[0] = 15.0
    assert q.waited_since() == 10.0      # still the same wait
    assert q.admit_head() is a and q.running == [a] and q.head() is b
    assert q.waited_since() == 15.0      # b's wait starts now
    q.unrun(a)
    assert q.running == []


def test_cancelled_waiting_jobs_free_their_place():
    q = JobQueue(max_batch=4, max_queue=8, clock=lambda: 1.0)
    a, b, c = (q.submit(Job(t)) for t in "甲乙丙")
    assert not q.any_cancelled_waiting()
    q.waited_since()
    b.cancel()
    assert q.any_cancelled_waiting()
    assert q.drop_cancelled() == [b]
    assert list(q.waiting) == [a, c] and q.blocked_since is None
    assert q.drop_cancelled() == []


def test_abort_and_find_by_origin_and_key():
    q = JobQueue(max_batch=4, max_queue=8)
    k1 = q.submit(Job("甲", origin="kobold", key="k1"))
    k2 = q.submit(Job("乙", origin="kobold", key="k2"))
    oa = q.submit(Job("丙", origin="openai"))
    q.admit_head()
    assert q.find("k1") is k1 and q.find("k2") is k2 and q.find("nope") is None
    assert q.abort(origin="kobold", key="k2") == 1 and k2.cancelled.is_set() and not k1.cancelled.is_set()
    k1.done = True  # a job that has ended is not counted
    assert q.abort(origin="kobold") == 1  # k2 again (cancelled but not done)
    assert q.abort() == 2 and oa.cancelled.is_set()


def test_retry_after_spreads_the_average_job_over_running_jobs():
    q = JobQueue(max_batch=4, max_queue=8)
    q.avg_job_s = 8.0
    assert q.retry_after() == 8
    q.running = [Job("甲") for _ in range(3)]
    assert q.retry_after() == 3   # ceil(8 / 3)
    q.running = [Job("甲") for _ in range(16)]
    assert q.retry_after() == 1
    q.avg_job_s = 1e6
    assert q.retry_after() == 60


def test_ended_jobs_leave_and_only_finished_ones_count_in_the_average():
    q = JobQueue(max_batch=4, max_queue=8)
    done, cancelled, unstarted, live = (q.submit(Job(t)) for t in "甲乙丙丁")
    for _ in range(4):
        q.admit_head()
    t0 = time.perf_counter() - 10.0
    done.info["t0"] = cancelled.info["t0"] = t0
    cancelled.cancel()
    ended = q.end_running({id(live)})
    assert ended == [done, cancelled, unstarted] and q.running == [live]
    assert q.avg_job_s == pytest.approx(0.8 * 5.0 + 0.2 * 10.0, abs=0.05)


def test_take_all():
    q = JobQueue(max_batch=4, max_queue=8)
    a, b = q.submit(Job("甲")), q.submit(Job("乙"))
    q.admit_head()
    assert q.take_all() == [a] and q.running == [] and list(q.waiting) == [b]
    q.admit_head()
    c = q.submit(Job("丙"))
    assert q.take_all(include_waiting=True) == [b, c] and not q.waiting
