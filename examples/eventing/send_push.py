"""Send one signed GitHub `push` delivery to the example's GitHubSource, as GitHub would:
`python3 send_push.py [http://webhook.localhost:8080/default/hello-repo] [SECRET]`."""

import hashlib
import hmac
import json
import sys
import urllib.request
import uuid
from urllib.parse import urlsplit

url = sys.argv[1] if len(sys.argv) > 1 else "http://webhook.localhost:8080/default/hello-repo"
secret = (sys.argv[2] if len(sys.argv) > 2 else "change-me-to-a-long-random-string").encode()
body = json.dumps(
    {
        "ref": "refs/heads/main",
        "compare": "https://github.com/example/hello/compare/1111111...2222222",
        "repository": {"full_name": "example/hello", "html_url": "https://github.com/example/hello"},
        "pusher": {"name": "ada"},
        "head_commit": {"id": "2222222", "message": "Say hello"},
    }
).encode()
parts = urlsplit(url)
# *.localhost is loopback (curl and browsers know it; Python's resolver may not): connect to 127.0.0.1 and
# name the host in the Host header.
target = (
    url.replace(parts.hostname or "", "127.0.0.1", 1) if (parts.hostname or "").endswith("localhost") else url
)
request = urllib.request.Request(
    target,
    data=body,
    headers={
        "Host": parts.netloc,
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
    },
)
with urllib.request.urlopen(request, timeout=60) as response:
    print(response.status, response.read().decode().strip() or "accepted")
