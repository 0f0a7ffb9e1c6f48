#!/usr/bin/python3
"""The kvspan Python client against a running `kvspan serve` (unittest, no pytest needed).

Usage: PYTHONPATH=build/clients/python:clients/python \
         /usr/bin/python3 clients/python/tests/test_client.py HOST:PORT
Run by tests/python_client_test.cc, which starts the server.
"""
import random
import sys
import time
import unittest

import grpc

import kvspan

TARGET = ""


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.client = kvspan.Client(TARGET, timeout=120)

    def tearDown(self):
        self.client.close()

    def test_greedy_generation_returns_text_and_usage(self):
        r = self.client.generate_full("The jury said that", max_tokens=8, temperature=0, ignore_eos=True)
        self.assertTrue(r.text)
        self.assertEqual(len(r.ids), 8)
        self.assertEqual(r.completion_tokens, 8)
        self.assertEqual(r.finish_reason, "max_tokens")
        self.assertGreater(r.prompt_tokens, 0)
        self.assertTrue(r.request_id)
        self.assertTrue(r.policy)
        self.assertGreater(r.kv_bytes_per_token, 0)
        again = self.client.generate_full("The jury said that", max_tokens=8, temperature=0, ignore_eos=True)
        self.assertEqual(again.ids, r.ids)

    def test_streamed_pieces_make_the_text(self):
        generation = self.client.generate("The jury said that", max_tokens=16, temperature=0)
        pieces = list(generation)
        self.assertEqual("".join(pieces), generation.text)
        self.assertIsNotNone(generation.started)
        self.assertIsNotNone(generation.finished)
        self.assertEqual(generation.finished.text, generation.text)

    def test_repeated_token_prompt_is_cached(self):
        rng = random.Random(11)
        ids = [rng.randrange(3, 4096) for _ in range(150)]
        tenant = f"python-{time.time_ns()}"  # a namespace no earlier run filled
        first = self.client.generate_full(ids, max_tokens=2, temperature=0, tenant=tenant)
        self.assertEqual(first.prompt_tokens, 150)
        self.assertEqual(first.cached_prompt_tokens, 0)
        second = None
        # The first call's span Puts are asynchronous: give them a moment to land.
        for _ in range(50):
            second = self.client.generate_full(ids, max_tokens=2, temperature=0, tenant=tenant)
            if second.cached_prompt_tokens >= 128:
                break
            time.sleep(0.1)
        self.assertGreaterEqual(second.cached_prompt_tokens, 128)
        self.assertEqual(second.ids, first.ids)

    def test_session_second_turn_is_cached(self):
        with self.client.open_session() as session:
            self.assertTrue(session.id)
            first = session.generate_full("The jury said that", max_tokens=8, temperature=0)
            second = session.generate_full(" and then", max_tokens=8, temperature=0)
            self.assertEqual(first.session_id, session.id)
            self.assertGreater(second.cached_prompt_tokens, 0)
            self.assertGreater(second.prompt_tokens, first.prompt_tokens)
        with self.assertRaises(kvspan.NotFound):
            self.client.close_session(session.id)

    def test_bad_policy_is_invalid_argument_naming_the_position(self):
        with self.assertRaises(kvspan.InvalidArgument) as caught:
            self.client.generate_full("The jury", max_tokens=2, policy="int4(g=32)/lru")
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("position", caught.exception.message)
        with self.assertRaises(kvspan.InvalidArgument):
            self.client.open_session(policy="int4(g=32)/lru")

    def test_unknown_session_is_not_found(self):
        unknown = "0" * 32
        with self.assertRaises(kvspan.NotFound) as caught:
            self.client.generate_full("The jury", max_tokens=2, session=unknown)
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertIsInstance(caught.exception, kvspan.KvspanError)
        with self.assertRaises(kvspan.NotFound):
            self.client.close_session(unknown)

    def test_deadline_is_deadline_exceeded(self):
        with kvspan.Client(TARGET, timeout=0.001) as hurried:
            with self.assertRaises(kvspan.DeadlineExceeded):
                hurried.generate_full("The jury said that", max_tokens=512, ignore_eos=True)

    def test_breaking_out_early_leaves_the_server_idle(self):
        # Run to its end this request takes ~2 s here (1019 tokens, to the context's end); the
        # server notices a cancelled call within 50 ms. Idle within 1.5 s means it was cancelled.
        for piece in self.client.generate("The jury said that", max_tokens=4096, temperature=0, ignore_eos=True):
            self.assertTrue(piece)
            self.assertTrue(self._wait_for(lambda info: info.running_sequences == 1, 2.0))
            break
        self.assertTrue(self._wait_for(lambda info: info.running_sequences == 0 and info.waiting_requests == 0, 1.5))

    def _wait_for(self, condition, seconds):
        """Polls server_info until condition(info) holds; whether it did within `seconds`."""
        deadline = time.monotonic() + seconds
        while not condition(self.client.server_info()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def test_server_info(self):
        info = self.client.server_info()
        self.assertTrue(info.model_name)
        self.assertGreater(info.span_tokens, 0)
        self.assertTrue(info.default_policy)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    TARGET = sys.argv.pop(1)
    unittest.main()
