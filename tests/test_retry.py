from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from eventpipe.retry import Retry, backoff_policy


class PolicyTests(SynchronousTestCase):
    def test_grows_and_caps(self) -> None:
        policy = backoff_policy(1.0, 60.0, jitter=lambda: 0.0)
        self.assertEqual([policy(a) for a in range(1, 9)], [1, 2, 4, 8, 16, 32, 60, 60])
        self.assertEqual(policy(10_000), 60.0)

    def test_jitter_bounds(self) -> None:
        policy = backoff_policy(2.0, 10.0, jitter=lambda: 1.0)
        self.assertEqual(policy(1), 1.5)
        self.assertEqual(policy(100), 7.5)

    def test_bad_policy(self) -> None:
        self.assertRaises(ValueError, backoff_policy, 0.0, 1.0)
        self.assertRaises(ValueError, backoff_policy, 2.0, 1.0)


class RetryingTests(SynchronousTestCase):
    def test_retries_until_success(self) -> None:
        clock = Clock()
        attempts: list[int] = []
        failures: list[tuple[int, float]] = []

        def operation(attempt: int) -> Deferred[str]:
            attempts.append(attempt)
            if attempt < 4:
                return fail(RuntimeError("nope"))
            return succeed("done")

        d = Retry(
            clock,
            operation,
            lambda failure, attempt: 2.0**attempt,
            lambda failure, attempt, delay: failures.append((attempt, delay)),
        ).result
        self.assertNoResult(d)
        clock.advance(2)
        clock.advance(4)
        self.assertNoResult(d)
        clock.advance(8)
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(attempts, [1, 2, 3, 4])
        self.assertEqual(failures, [(1, 2.0), (2, 4.0), (3, 8.0)])

    def test_cancel_while_waiting(self) -> None:
        clock = Clock()
        d = Retry(clock, lambda a: fail(RuntimeError()), lambda f, a: 5.0).result
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_during_attempt(self) -> None:
        clock = Clock()
        cancelled: list[object] = []
        pending: Deferred[None] = Deferred(cancelled.append)
        d = Retry(clock, lambda a: pending, lambda f, a: 5.0).result
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(cancelled, [pending])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_broken_delay(self) -> None:
        """A delay function that raises ends the retries with its error."""

        def broken(failure: Failure, attempt: int) -> float:
            raise ZeroDivisionError()

        d = Retry(Clock(), lambda a: fail(RuntimeError()), broken).result
        self.failureResultOf(d, ZeroDivisionError)


class WakeTests(SynchronousTestCase):
    def test_wake_cuts_the_wait_short(self) -> None:
        """A woken retry makes its next attempt at once; idle, wake does nothing."""
        from eventpipe.retry import Retry

        clock = Clock()
        attempts: list[int] = []

        def operation(attempt: int) -> int:
            attempts.append(attempt)
            if attempt < 3:
                raise ValueError("not yet")
            return attempt

        retry = Retry(clock, operation, lambda failure, attempt: 60.0, lambda f, a, d: None)
        self.assertEqual(attempts, [1])
        self.assertTrue(retry.waiting)
        retry.wake()
        self.assertEqual(attempts, [1, 2])
        clock.advance(59)
        self.assertEqual(attempts, [1, 2])
        retry.wake()
        self.assertEqual(self.successResultOf(retry.result), 3)
        self.assertFalse(retry.waiting)
        retry.wake()
        self.assertEqual(attempts, [1, 2, 3])
        self.assertEqual(clock.getDelayedCalls(), [])
