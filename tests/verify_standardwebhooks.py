"""Verifies one recorded webhook request with the reference `standardwebhooks` library.

Usage: verify_standardwebhooks.py <whsec_secret> <headers as a JSON object>  < body bytes
Exit 0 when the signature verifies, 1 when it does not, 2 when the library is missing.
"""

import json
import sys

try:
    import standardwebhooks
except ImportError:
    print("the `standardwebhooks` package is missing: pip install standardwebhooks", file=sys.stderr)
    sys.exit(2)


def main() -> int:
    secret, headers = sys.argv[1], json.loads(sys.argv[2])
    body = sys.stdin.buffer.read()
    try:
        standardwebhooks.Webhook(secret).verify(body, headers)
    except Exception as err:  # the library raises several kinds; any means "not valid"
        print(f"verification failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
