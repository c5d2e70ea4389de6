"""Signs inbound webhook requests with the reference `standardwebhooks` library, as a sending
tool would.

Usage: sign_standardwebhooks.py <whsec_secret>  < JSON lines {"id": …, "timestamp": …, "body": …}
Prints one `webhook-signature` header value per input line. Exit 2 when the library is missing.
"""

import json
import sys
from datetime import datetime, timezone

try:
    import standardwebhooks
except ImportError:
    print("the `standardwebhooks` package is missing: pip install standardwebhooks", file=sys.stderr)
    sys.exit(2)


def main() -> int:
    webhook = standardwebhooks.Webhook(sys.argv[1])
    for line in sys.stdin:
        request = json.loads(line)
        when = datetime.fromtimestamp(request["timestamp"], tz=timezone.utc)
        print(webhook.sign(request["id"], when, request["body"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
