#!/usr/bin/python3
"""A two-turn session against a kvspan serving node: prints each answer as it streams and a
usage line per turn (the second turn's history is reused, so its cached count is > 0).

Usage: PYTHONPATH=build/clients/python:clients/python \
         /usr/bin/python3 clients/python/examples/chat.py [HOST:PORT]   (default 127.0.0.1:7400)
"""
import sys

import kvspan


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7400"
    turns = ["The jury said that", " and then the committee"]
    with kvspan.Client(target, timeout=120) as client, client.open_session() as session:
        print(f"session {session.id} policy {session.policy}")
        for turn in turns:
            print(f"> {turn}")
            generation = session.generate(turn, max_tokens=24, temperature=0)
            for piece in generation:
                print(piece, end="", flush=True)
            r = generation.result()
            print(f"\nusage: prompt_tokens={r.prompt_tokens} cached={r.cached_prompt_tokens} "
                  f"completion_tokens={r.completion_tokens} finish={r.finish_reason} "
                  f"kv_bytes_per_token={r.kv_bytes_per_token:.0f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except kvspan.KvspanError as e:
        print(f"chat.py: {e}", file=sys.stderr)
        sys.exit(1)
